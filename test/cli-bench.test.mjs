// `qlora-native bench` runs the native benchmarks and its --json output parses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cli = path.join(root, "bin", "qlora-native.js");

test("bench rmsnorm --json gives rows with the copy-bandwidth fraction", { timeout: 300_000 }, () => {
  const r = spawnSync(process.execPath, [cli, "bench", "rmsnorm", "--iters", "3", "--json"], { encoding: "utf8", timeout: 280_000 });
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout.trim().split("\n").pop());
  assert.ok(rows.length >= 2);
  assert.ok(rows.some((x) => x.case === "copy" && x.fractionOfCopy === 1));
  for (const x of rows) assert.ok(x.ms > 0 && x.gbs > 0, JSON.stringify(x));
  // every kernel row was checked against a float64 loop first: bf16 output, so errors of a few
  // bf16 ulps of the largest value (rel ~ 2^-8)
  const checked = rows.filter((x) => x.case !== "copy");
  assert.ok(checked.length >= 2);
  for (const x of checked) {
    assert.equal(typeof x.maxError, "number", JSON.stringify(x));
    assert.ok(x.maxError >= 0 && x.maxError < 0.05 && x.relError < 0.01, JSON.stringify(x));
  }
});

test("bench e2e --json trains the tiny shape and reports tokens/s and MFU", { timeout: 120_000 }, () => {
  const r = spawnSync(process.execPath, [cli, "bench", "e2e", "--model-shape", "tiny", "--steps", "3", "--json"], { encoding: "utf8", timeout: 110_000 });
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout.trim().split("\n").pop());
  assert.equal(rows.length, 1);
  const [e] = rows;
  assert.equal(e.kernel, "e2e");
  assert.ok(e.tokens_per_second > 0, JSON.stringify(e));
  assert.ok(e.mfu > 0 && e.mfu < 1, JSON.stringify(e));
  assert.ok(e.model_flops_per_token > 0 && e.peak_flops > 0);
  assert.match(e.flop_method, /2 x non-embedding/);
});

test("the bench parser reads GB/s, TFLOP/s and error columns", async () => {
  const { parseBenchOutput, parsePeak } = await import("../dist/cli/bench.js");
  const text = [
    "attention (causal model FLOPs; of gemm: bf16 GEMM 1024x2048x2048 at 0.376 TFLOP/s, same run)",
    "  case                                        ms/call    TFLOP/s   of gemm  (ms/call: median)",
    "  forward                                       8.441     0.1272       34%  max abs err 1.95e-03 (rel 1.95e-03); vs CPU f32 path, T 256",
    "",
    "gemm f32 (C in the input dtype; MxKxN; of peak: in-register loop; check vs float64, 4 rows)",
    "  case                                        ms/call    TFLOP/s   of peak  (ms/call: median)",
    "  3B down y=xW^T 256x11008x2048               58.844     0.1962       84%  max abs err 2.53e-06 (rel 3.45e-07)",
    "",
    "rmsnorm",
    "  case                                        ms/call       GB/s   of copy  (ms/call: median)",
    "  copy                                          0.801       41.9      100%  ",
  ].join("\n");
  const rows = parseBenchOutput("k", text);
  assert.equal(rows.length, 3);
  assert.deepEqual([rows[0].tflops, rows[0].fractionOfGemm, rows[0].maxError, rows[0].relError], [0.1272, 0.34, 1.95e-3, 1.95e-3]);
  assert.equal(rows[1].case, "3B down y=xW^T 256x11008x2048");
  assert.deepEqual([rows[1].ms, rows[1].fractionOfPeak, rows[1].maxError], [58.844, 0.84, 2.53e-6]);
  assert.deepEqual([rows[2].gbs, rows[2].fractionOfCopy, rows[2].maxError], [41.9, 1, undefined]);
  const p = parsePeak("peak on cpu, 2 CPU threads: f32 107.0 GFLOP/s, bf16 156.5 GFLOP/s (in-register loop), gemm bf16 128.2 GFLOP/s (1024x2048x2048)");
  assert.deepEqual([p.f32, p.bf16, Math.round(p.gemm / 1e8)], [107e9, 156.5e9, 1282]);
  assert.equal(p.datasheet, undefined);
  // A GPU qn_bench knows: its datasheet rate is the MFU peak of `bench e2e`.
  const g = parsePeak("peak on cuda:0, 16 CPU threads: f32 0.0 GFLOP/s, bf16 0.0 GFLOP/s (in-register loop), gemm bf16 701234.5 GFLOP/s (8192^3); datasheet bf16 989400.0 GFLOP/s (NVIDIA H200)");
  assert.deepEqual([g.gemm, g.datasheet, g.gpu], [701234.5e9, 989400e9, "NVIDIA H200"]);
});

test("bench rejects unknown kernels", () => {
  const r = spawnSync(process.execPath, [cli, "bench", "warp-drive"], { encoding: "utf8" });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /unknown kernel 'warp-drive'/);
});
