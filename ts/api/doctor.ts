// doctor(): what this installation can do, as data. Backends built and usable, CPU features and
// threads, GPUs (name, memory, compute capability), driver/runtime versions, cuBLASLt.
import os from "node:os";
import { QloraError } from "../errors.js";
import { addonInfo, native, type SystemInfo } from "../native.js";
import { version } from "../version.js";

export interface DoctorReport {
  version: string;
  node: string;
  platform: string;
  addon: { loaded: boolean; path?: string; napiVersion?: number; error?: string };
  backends: {
    cpu: { built: boolean; usable: boolean; threads: number };
    cuda: { built: boolean; usable: boolean; reason?: string; archs?: string };
  };
  cpu?: SystemInfo["cpu"];
  cuda?: SystemInfo["cuda"];
}

function cudaVersion(v: number): string {
  return v ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : "none";
}

export function doctor(): DoctorReport {
  const report: DoctorReport = {
    version,
    node: process.version,
    platform: `${process.platform}-${process.arch} (${os.cpus().length} logical CPUs)`,
    addon: { loaded: false },
    backends: { cpu: { built: false, usable: false, threads: 0 }, cuda: { built: false, usable: false } },
  };
  try {
    const info = addonInfo();
    report.addon = { loaded: true, path: info.path, napiVersion: info.napiVersion };
  } catch (e) {
    report.addon = { loaded: false, error: e instanceof QloraError ? e.message : String(e) };
    return report;
  }
  const sys = native.systemInfo(true);
  report.cpu = sys.cpu;
  report.cuda = sys.cuda;
  let cpuUsable = false;
  try {
    const s = new native.Session("cpu");
    const t = s.fromHost(new Float32Array([1, 2]), "f32", [2]);
    t.dispose();
    s.dispose();
    cpuUsable = true;
  } catch {
    cpuUsable = false;
  }
  report.backends.cpu = { built: true, usable: cpuUsable, threads: sys.cpu.threads };
  report.backends.cuda = {
    built: sys.cuda.compiled,
    usable: sys.cuda.available,
    ...(sys.cuda.available ? {} : { reason: sys.cuda.reason }),
    ...(sys.cuda.compiled ? { archs: sys.cuda.compiledArchs } : {}),
  };
  return report;
}

/** Human-readable lines for `qlora-native doctor`. */
export function formatDoctor(r: DoctorReport): string {
  const yes = (b: boolean) => (b ? "yes" : "no");
  const lines: string[] = [];
  lines.push(`qlora-native ${r.version} on Node ${r.node}, ${r.platform}`);
  if (!r.addon.loaded) {
    lines.push(`native addon: NOT LOADED (${r.addon.error})`);
    return lines.join("\n");
  }
  lines.push(`native addon: ${r.addon.path} (N-API ${r.addon.napiVersion})`);
  const cpu = r.cpu!;
  const feats = Object.entries(cpu.features)
    .filter(([, v]) => v)
    .map(([k]) => k)
    .join(" ");
  lines.push(`CPU backend:  built ${yes(r.backends.cpu.built)}, usable ${yes(r.backends.cpu.usable)}`);
  lines.push(`  ${cpu.brand || "unknown CPU"}: ${cpu.hardwareThreads} hardware threads, using ${cpu.threads}`);
  lines.push(`  SIMD: ${feats || "none"}`);
  const cuda = r.cuda!;
  lines.push(
    `CUDA backend: built ${yes(cuda.compiled)}${cuda.compiled ? ` (${cuda.compiledArchs})` : ""}, usable ${yes(cuda.available)}` +
      (cuda.available ? "" : ` (${cuda.reason})`),
  );
  if (cuda.compiled) {
    lines.push(`  driver ${cudaVersion(cuda.driverVersion)}, runtime ${cudaVersion(cuda.runtimeVersion)} (static)`);
    for (const d of cuda.devices) {
      lines.push(
        `  cuda:${d.index} ${d.name}, compute capability ${d.computeCapability}, ${d.multiprocessors} SMs, ` +
          `${(d.totalMemory / 2 ** 30).toFixed(1)} GiB (${(d.freeMemory / 2 ** 30).toFixed(1)} GiB free)`,
      );
    }
    const lt = cuda.cublasLt;
    const ltState = !lt.built
      ? "not built in (headers missing at build time)"
      : !lt.probed
        ? "not probed (no GPU)"
        : lt.found
          ? `found ${lt.path} (version ${lt.version})`
          : `NOT found: ${lt.error}`;
    lines.push(`  cuBLASLt: ${ltState}`);
  }
  return lines.join("\n");
}
