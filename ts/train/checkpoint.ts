// Training checkpoints: output_dir/checkpoint-N/ holding
//   adapter_model.safetensors (+ adapter_config.json when the adapter config is given: a PEFT adapter)
//   optimizer.safetensors    optimizer state tensors (F32 from Float32Array, U8 bytes otherwise)
//   trainer_state.json       transformers' TrainerState (log history up to step N)
//   training_state.json      step, scheduler, rng / seed, data position, skipped steps, extra
//   manifest.json            written LAST: every file's size and sha256
// A save goes to checkpoint-N.tmp-<random> first (every file fsynced), the manifest is written,
// the folder is fsynced and renamed to checkpoint-N, then the parent is fsynced: a kill at any
// moment leaves the previous checkpoints intact, and a folder without a valid manifest is never
// taken for a checkpoint. save_total_limit rotation deletes the oldest complete checkpoints (never
// the one just written, nor the best model's), each renamed away before it is removed. A
// checkpoint-N entry that is not one of ours (no manifest.json) is never replaced.
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../config/atomic-write.js";
import { QloraError } from "../errors.js";
import { SafetensorsFile, syncDir, writeSafetensors, type StDType } from "../io/safetensors.js";
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, normalizeLoraKey, readAdapter, writeAdapter, type AdapterConfigInput, type LoraWeight, type LoraWeights, type PeftAdapterConfig } from "./adapter.js";
import { buildTrainerState, loadTrainerState, stringifySorted, TRAINER_STATE_FILE, type LogHistoryEntry, type TrainerStateInput, type TrainerStateJson } from "./trainer-state.js";

export const MANIFEST_FILE = "manifest.json";
export const OPTIMIZER_FILE = "optimizer.safetensors";
export const TRAINING_STATE_FILE = "training_state.json";
const MANIFEST_FORMAT = "qlora-native-checkpoint";
const CHECKPOINT_RE = /^checkpoint-(\d+)$/;
const TEMP_RE = /^checkpoint-\d+\.(tmp|old|del)-[0-9a-f]+$/;

export type OptimizerTensor = Uint8Array | Float32Array;

export interface CheckpointData {
  /** LoRA weights under PEFT keys */
  adapter: LoraWeights;
  /** when given, the adapter is written as a PEFT adapter (adapter_config.json too) */
  adapterConfig?: AdapterConfigInput;
  /** optimizer state: the model's blob ({ step, tensors }) ... */
  optimizer?: { step: number; tensors: Record<string, OptimizerTensor> };
  /** ... or the tensors alone */
  optimizerState?: Record<string, OptimizerTensor>;
  /** JSON-serializable states */
  scheduler?: unknown;
  rng?: unknown;
  seed?: number;
  dataPosition?: unknown;
  skippedSteps?: number;
  /** trainer_state.json: a full state, or the input to build one (its globalStep is the step) */
  trainerState?: TrainerStateJson | Omit<TrainerStateInput, "globalStep">;
  /** shorthand for trainerState: { logHistory } */
  logHistory?: readonly LogHistoryEntry[];
  /** keep at most this many checkpoints (null / 0 / undefined: keep all) */
  saveTotalLimit?: number | null;
  /** a checkpoint folder rotation keeps (the best model's, as transformers keeps it) */
  keepCheckpoint?: string | null;
  extra?: Record<string, unknown>;
}

export interface LoadedCheckpoint {
  path: string;
  step: number;
  adapter: Record<string, LoraWeight>;
  adapterConfig: PeftAdapterConfig | null;
  optimizer: { step: number; tensors: Record<string, Uint8Array> };
  /** the same tensors with the types they were saved with (F32 -> Float32Array) */
  optimizerState: Record<string, OptimizerTensor>;
  scheduler: unknown;
  rng: unknown;
  seed: number | undefined;
  dataPosition: unknown;
  skippedSteps: number;
  logHistory: LogHistoryEntry[];
  trainerState: TrainerStateJson | null;
  extra: Record<string, unknown>;
}

interface Manifest {
  format: string;
  version: number;
  step: number;
  files: Record<string, { bytes: number; sha256: string }>;
}

export function checkpointDirName(step: number): string {
  return `checkpoint-${step}`;
}

async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

function bytesOf(t: OptimizerTensor): Uint8Array {
  return new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
}

function isFullTrainerState(t: unknown): t is TrainerStateJson {
  return !!t && typeof t === "object" && Array.isArray((t as TrainerStateJson).log_history) && "global_step" in (t as object);
}

const OLD_RE = /^checkpoint-(\d+)\.old-[0-9a-f]+$/;

/** Cleans up after interrupted saves: a checkpoint moved aside (".old-") while its replacement
 * was being published is moved back when the replacement never arrived; temp and half-deleted
 * folders are removed. */
async function cleanTemp(outputDir: string): Promise<void> {
  let names: string[] = [];
  try {
    names = readdirSync(outputDir);
  } catch {
    return;
  }
  for (const n of names) {
    const old = OLD_RE.exec(n);
    const final = old ? path.join(outputDir, checkpointDirName(Number(old[1]))) : "";
    if (old && !existsSync(final) && checkManifestSync(path.join(outputDir, n), Number(old[1])) === null) {
      await rename(path.join(outputDir, n), final);
    } else if (TEMP_RE.test(n)) {
      await rm(path.join(outputDir, n), { recursive: true, force: true });
    }
  }
}

/** Complete checkpoints (valid manifest, every file present with its size), newest first. A
 * checkpoint that an interrupted re-save of the same step had moved aside counts too. */
export function listCheckpoints(outputDir: string): { path: string; step: number }[] {
  let names: string[];
  try {
    names = readdirSync(outputDir);
  } catch {
    return [];
  }
  const found = new Map<number, string>();
  for (const n of names) {
    const m = CHECKPOINT_RE.exec(n) ?? OLD_RE.exec(n);
    if (!m) continue;
    const step = Number(m[1]);
    const isOld = !CHECKPOINT_RE.test(n);
    if (isOld && names.includes(checkpointDirName(step))) continue;
    const dir = path.join(outputDir, n);
    if ((!found.has(step) || !isOld) && checkManifestSync(dir, step) === null) found.set(step, dir);
  }
  return [...found].map(([step, p]) => ({ path: p, step })).sort((a, b) => b.step - a.step);
}

/** checkpoint-N folders that are not complete checkpoints, with the reason, newest first. */
export function damagedCheckpoints(outputDir: string): { path: string; step: number; problem: string }[] {
  let names: string[];
  try {
    names = readdirSync(outputDir);
  } catch {
    return [];
  }
  const out: { path: string; step: number; problem: string }[] = [];
  for (const n of names) {
    const m = CHECKPOINT_RE.exec(n);
    if (!m) continue;
    const dir = path.join(outputDir, n);
    const problem = checkManifestSync(dir, Number(m[1]));
    if (problem) out.push({ path: dir, step: Number(m[1]), problem });
  }
  return out.sort((a, b) => b.step - a.step);
}

/** null when the folder holds a valid manifest whose files all exist with the listed sizes. */
function checkManifestSync(dir: string, step?: number): string | null {
  let man: Manifest;
  try {
    man = JSON.parse(readFileSync(path.join(dir, MANIFEST_FILE), "utf8"));
  } catch {
    if (existsSync(path.join(dir, ADAPTER_CONFIG_FILE)) && !existsSync(path.join(dir, OPTIMIZER_FILE)) && !existsSync(path.join(dir, TRAINING_STATE_FILE)))
      return "it is an adapter folder, not a training checkpoint (no manifest.json); to continue training from its weights use train --adapter " + dir;
    return "no readable manifest.json (an interrupted save?)";
  }
  if (man?.format !== MANIFEST_FORMAT || typeof man.files !== "object" || !man.files) return "manifest.json is not a qlora-native checkpoint manifest";
  if (step !== undefined && man.step !== step) return `manifest.json says step ${man.step}, the folder name ${step}`;
  for (const [name, f] of Object.entries(man.files)) {
    try {
      const st = statSync(path.join(dir, name));
      if (st.size !== f.bytes) return `${name} has ${st.size} bytes, the manifest says ${f.bytes}`;
    } catch {
      return `${name} is missing`;
    }
  }
  return null;
}

/** The newest complete checkpoint folder in outputDir, or null. Temp folders of interrupted saves
 * and folders without a valid manifest are ignored. */
export function findLatestCheckpoint(outputDir: string): string | null {
  return listCheckpoints(outputDir)[0]?.path ?? null;
}

/** Entries of outputDir named like a checkpoint (checkpoint-N) that are not one of ours (a file,
 * or a folder without our manifest): saving over them would delete someone's data. */
export function foreignCheckpointEntries(outputDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(outputDir);
  } catch {
    return [];
  }
  return names.filter((n) => CHECKPOINT_RE.test(n) && !existsSync(path.join(outputDir, n, MANIFEST_FILE))).map((n) => path.join(outputDir, n));
}

function refuseForeign(outputDir: string, found: string[]): void {
  if (found.length === 0) return;
  throw new QloraError("E_IO", `${found.join(", ")} ${found.length === 1 ? "is" : "are"} named like a checkpoint but ${found.length === 1 ? "is" : "are"} not a qlora-native checkpoint (no ${MANIFEST_FILE}); move ${found.length === 1 ? "it" : "them"} out of ${outputDir} or choose another output.dir (nothing was overwritten)`);
}

/** Throws E_IO when outputDir holds checkpoint-N entries that are not our checkpoints. */
export function assertNoForeignCheckpoints(outputDir: string): void {
  refuseForeign(outputDir, foreignCheckpointEntries(outputDir));
}

/** Writes outputDir/checkpoint-<step> atomically, then applies save_total_limit. Returns its path. */
export async function saveCheckpoint(outputDir: string, step: number, data: CheckpointData): Promise<string> {
  if (!Number.isInteger(step) || step < 0) throw new QloraError("E_ARG", `saveCheckpoint: step must be an integer >= 0, got ${step}`);
  await mkdir(outputDir, { recursive: true });
  const finalDir = path.join(outputDir, checkpointDirName(step));
  if (existsSync(finalDir) && !existsSync(path.join(finalDir, MANIFEST_FILE))) refuseForeign(outputDir, [finalDir]);
  const tmpName = `${checkpointDirName(step)}.tmp-${randomBytes(6).toString("hex")}`;
  const tmp = path.join(outputDir, tmpName);
  await cleanTemp(outputDir);
  await mkdir(tmp);
  try {
    // adapter
    if (data.adapterConfig) {
      await writeAdapter(tmp, { loraWeights: data.adapter, config: data.adapterConfig });
    } else {
      const entries = data.adapter instanceof Map ? [...data.adapter.entries()] : Object.entries(data.adapter);
      const tensors: Record<string, { dtype: StDType; shape: number[]; data: Uint8Array }> = {};
      for (const [k, w] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        tensors[normalizeLoraKey(k)] = { dtype: "F32", shape: [...w.shape], data: bytesOf(w.data) };
      }
      await writeSafetensors(path.join(tmp, ADAPTER_WEIGHTS_FILE), tensors, { format: "pt" });
    }
    // optimizer
    const optTensors = { ...(data.optimizerState ?? {}), ...(data.optimizer?.tensors ?? {}) };
    const opt: Record<string, { dtype: StDType; shape: number[]; data: Uint8Array }> = {};
    for (const k of Object.keys(optTensors).sort()) {
      const t = optTensors[k];
      opt[k] = t instanceof Float32Array ? { dtype: "F32", shape: [t.length], data: bytesOf(t) } : { dtype: "U8", shape: [t.byteLength], data: bytesOf(t) };
    }
    await writeSafetensors(path.join(tmp, OPTIMIZER_FILE), opt, { step: String(data.optimizer?.step ?? step) });
    // trainer_state.json
    const ts = data.trainerState;
    const trainerState = isFullTrainerState(ts)
      ? { ...ts, global_step: step }
      : buildTrainerState({ ...(ts ?? {}), logHistory: ts?.logHistory ?? data.logHistory ?? [], globalStep: step }, outputDir);
    await writeFileAtomic(path.join(tmp, TRAINER_STATE_FILE), stringifySorted(trainerState));
    // training_state.json
    const training = {
      step,
      optimizer_step: data.optimizer?.step ?? step,
      scheduler: data.scheduler ?? null,
      rng: data.rng ?? null,
      seed: data.seed ?? null,
      data_position: data.dataPosition ?? null,
      skipped_steps: data.skippedSteps ?? 0,
      extra: data.extra ?? {},
    };
    await writeFileAtomic(path.join(tmp, TRAINING_STATE_FILE), JSON.stringify(training, null, 2) + "\n");
    // manifest, last
    const files: Manifest["files"] = {};
    for (const name of readdirSync(tmp).sort()) {
      const p = path.join(tmp, name);
      files[name] = { bytes: statSync(p).size, sha256: await sha256File(p) };
    }
    const manifest: Manifest = { format: MANIFEST_FORMAT, version: 1, step, files };
    await writeFileAtomic(path.join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + "\n");
    await syncDir(tmp);
    // publish: a checkpoint of the same step is moved aside first, then removed
    let old: string | null = null;
    if (existsSync(finalDir)) {
      old = path.join(outputDir, `${checkpointDirName(step)}.old-${randomBytes(6).toString("hex")}`);
      await rename(finalDir, old);
    }
    await rename(tmp, finalDir);
    await syncDir(outputDir);
    if (old) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    if (e instanceof QloraError) throw e;
    throw new QloraError("E_IO", `cannot save checkpoint ${finalDir}: ${(e as Error).message}`, { cause: e });
  }
  await rotateCheckpoints(outputDir, data.saveTotalLimit, finalDir, data.keepCheckpoint ?? undefined);
  return finalDir;
}

/** Removes a checkpoint folder: renamed away first, so it is gone from findLatestCheckpoint at once. */
async function removeCheckpoint(dir: string): Promise<void> {
  const doomed = `${dir}.del-${randomBytes(6).toString("hex")}`;
  await rename(dir, doomed);
  await rm(doomed, { recursive: true, force: true });
}

/** Deletes the oldest complete checkpoints beyond `limit`, never `keep` nor `keepBest` (so with
 * limit 1 and a best checkpoint that is not the newest, two stay, as in transformers). */
export async function rotateCheckpoints(outputDir: string, limit: number | null | undefined, keep?: string, keepBest?: string): Promise<string[]> {
  if (!limit || limit <= 0) return [];
  const all = listCheckpoints(outputDir); // newest first
  if (all.length <= limit) return [];
  const removed: string[] = [];
  const victims = all.slice().reverse().filter((c) => c.path !== keep && c.path !== keepBest);
  let excess = all.length - limit;
  for (const c of victims) {
    if (excess <= 0) break;
    await removeCheckpoint(c.path);
    removed.push(c.path);
    excess--;
  }
  await syncDir(outputDir);
  return removed;
}

/** Deletes every complete checkpoint but `keep` (transformers' end of training with
 * save_total_limit 1 and a best model: only the best checkpoint stays). */
export async function deleteCheckpointsExcept(outputDir: string, keep: string): Promise<string[]> {
  const removed: string[] = [];
  // a `keep` outside this folder would leave nothing: refuse to delete anything then
  if (path.resolve(path.dirname(keep)) !== path.resolve(outputDir)) return removed;
  for (const c of listCheckpoints(outputDir)) {
    if (path.resolve(c.path) === path.resolve(keep)) continue;
    await removeCheckpoint(c.path);
    removed.push(c.path);
  }
  if (removed.length) await syncDir(outputDir);
  return removed;
}

/** Verifies every file against the manifest (sizes and sha256); throws E_FORMAT naming the problem. */
export async function verifyCheckpoint(dir: string): Promise<void> {
  const problem = checkManifestSync(dir);
  if (problem) throw new QloraError("E_FORMAT", `${dir} is not a complete checkpoint: ${problem}`);
  const man: Manifest = JSON.parse(readFileSync(path.join(dir, MANIFEST_FILE), "utf8"));
  for (const [name, f] of Object.entries(man.files)) {
    const h = await sha256File(path.join(dir, name));
    if (h !== f.sha256) throw new QloraError("E_FORMAT", `${dir}: ${name} does not match its sha256 in manifest.json (corrupt)`);
  }
}

/** Loads a checkpoint folder (verified against its manifest first). */
export async function loadCheckpoint(dir: string, opts: { verifyHashes?: boolean } = {}): Promise<LoadedCheckpoint> {
  if (opts.verifyHashes === false) {
    const problem = checkManifestSync(dir);
    if (problem) throw new QloraError("E_FORMAT", `${dir} is not a complete checkpoint: ${problem}`);
  } else {
    await verifyCheckpoint(dir);
  }
  const man: Manifest = JSON.parse(readFileSync(path.join(dir, MANIFEST_FILE), "utf8"));
  // adapter
  const adapter: Record<string, LoraWeight> = {};
  let adapterConfig: PeftAdapterConfig | null = null;
  if (man.files[ADAPTER_CONFIG_FILE]) {
    const a = await readAdapter(dir);
    adapterConfig = a.config;
    for (const [k, w] of a.loraWeights) adapter[k] = { shape: w.shape, data: w.data };
  } else {
    const st = await SafetensorsFile.open(path.join(dir, ADAPTER_WEIGHTS_FILE));
    try {
      for (const [name, info] of st.tensors) {
        const buf = await st.read(name);
        adapter[name] = { shape: [...info.shape], data: new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4) };
      }
    } finally {
      await st.close();
    }
  }
  // optimizer
  const tensors: Record<string, Uint8Array> = {};
  const optimizerState: Record<string, OptimizerTensor> = {};
  let optStep = man.step;
  const st = await SafetensorsFile.open(path.join(dir, OPTIMIZER_FILE));
  try {
    if (st.metadata.step !== undefined) optStep = Number(st.metadata.step);
    for (const [name, info] of st.tensors) {
      const buf = await st.read(name); // fresh, aligned
      const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      tensors[name] = bytes;
      optimizerState[name] = info.dtype === "F32" ? new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4) : bytes;
    }
  } finally {
    await st.close();
  }
  const training = JSON.parse(await readFile(path.join(dir, TRAINING_STATE_FILE), "utf8"));
  const trainerState = man.files[TRAINER_STATE_FILE] ? await loadTrainerState(path.join(dir, TRAINER_STATE_FILE)) : null;
  return {
    path: dir,
    step: man.step,
    adapter,
    adapterConfig,
    optimizer: { step: optStep, tensors },
    optimizerState,
    scheduler: training.scheduler,
    rng: training.rng,
    seed: training.seed ?? undefined,
    dataPosition: training.data_position,
    skippedSteps: training.skipped_steps ?? 0,
    logHistory: trainerState?.log_history ?? [],
    trainerState,
    extra: training.extra ?? {},
  };
}
