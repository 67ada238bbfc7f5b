// Shared runner of the native kernel benchmarks (qn_bench). A bench file registers its cases with
// QN_BENCH(name) and reports rows through the helpers below; bench_main.cpp holds main():
//   qn_bench [--device cpu|cuda[:N]] [--filter SUBSTRING] [--iters K] [--n N]
// Every case gets the options and one session. Each kernel is first checked once against a reference
// (on CUDA the CPU backend on the same inputs; on the CPU the f32 path or a float64 loop) and the
// error printed as "max abs err X (rel Y)" (rel: X over the largest |reference| value); then timed:
// one warm-up call, `reps` measurements of `iters` calls each, the MEDIAN reported (best kept too).
// Memory-bound kernels are reported as GB/s and a fraction of the copy bandwidth measured in the
// same run; GEMM-like kernels as TFLOP/s and a fraction of a bf16 GEMM rate measured in the same run.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "qn/context.h"
#include "qn/tensor.h"

namespace qnbench {

struct Options {
  std::string device = "cpu";
  std::string filter;  // run the cases whose name contains it
  int iters = 0;       // 0: the case's default
  int64_t n = 0;       // 0: the case's default problem size
  // Case-specific settings given as `--key value` (keys listed in kCaseKeys, bench_main.cpp).
  std::map<std::string, std::string> params;
  std::string get(const std::string& key, const std::string& dflt) const {
    auto it = params.find(key);
    return it == params.end() ? dflt : it->second;
  }
};

struct Case {
  std::string name;
  std::function<int(const Options&)> fn;
  bool explicit_only = false;  // runs only when --filter names it (heavy cases such as `model`)
};
std::vector<Case>& registry();
struct Registrar {
  Registrar(const char* name, std::function<int(const Options&)> fn, bool explicit_only = false) {
    registry().push_back({name, std::move(fn), explicit_only});
  }
};

// Seconds per call: one warm-up call, then `iters` calls between two synchronizations. On CUDA the
// interval is measured with cudaEvents on the session stream (host wall clock on the CPU).
double time_op(qn::Context& ctx, int iters, const std::function<void()>& fn);
// The fastest of `reps` time_op measurements.
double time_best(qn::Context& ctx, int reps, int iters, const std::function<void()>& fn);
// Median and best of `reps` time_op measurements (the median is what the tables report).
struct Timing {
  double median = 0, best = 0;
};
Timing time_stats(qn::Context& ctx, int reps, int iters, const std::function<void()>& fn);
inline double time_median(qn::Context& ctx, int reps, int iters, const std::function<void()>& fn) {
  return time_stats(ctx, reps, iters, fn).median;
}
// FLOP/s of a bf16 GEMM y = x W^T through our own gemm op, median of 3: 8192^3 on CUDA,
// 1024 x 2048 x 2048 on the CPU. The "of gemm" reference of the GEMM-rate tables.
double gemm_rate_bf16(const std::shared_ptr<qn::Context>& ctx);
// FLOP/s of an in-register vdpbf16ps loop on every pool thread (the f32 FMA loop where the CPU has
// no avx512_bf16; 0 off x86-64): the CPU's bf16 peak (bench_gemm.cpp).
double cpu_peak_bf16();
// The GPU's name ("" on the CPU) and its datasheet dense bf16 tensor-core rate in FLOP/s (0 when
// the name is not in the table in bench_main.cpp, and on the CPU): the peak of a GPU's MFU.
std::string device_name(const qn::Context& ctx);
double datasheet_bf16_flops(const qn::Context& ctx);

// ---- reference checks ------------------------------------------------------------------------
// The CPU session the checks run their reference on (one per process).
std::shared_ptr<qn::Context> cpu_context();
// Element values of a float tensor (f32 | bf16 | f16) as float, via the host.
std::vector<float> to_floats(const qn::Tensor& t);
// A tensor on `ctx` of dtype `dt` holding `v` (rounded to nearest even for bf16).
qn::Tensor from_floats(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s, const std::vector<float>& v);
// `t` on `ctx` in dtype `dt` (a byte copy when the dtype is unchanged; float conversion otherwise).
qn::Tensor convert(const std::shared_ptr<qn::Context>& ctx, const qn::Tensor& t, qn::DType dt);
// Uniform random values in [-scale, scale], deterministic in `seed`.
qn::Tensor random(const std::shared_ptr<qn::Context>& ctx, qn::DType dt, const qn::Shape& s, float scale, uint64_t seed);
struct Err {
  double abs = 0;  // max |got - ref|
  double rel = 0;  // abs / max |ref|
  void merge(const Err& o) {
    abs = std::max(abs, o.abs);
    rel = std::max(rel, o.rel);
  }
};
Err compare(const std::vector<float>& got, const std::vector<double>& ref);
Err compare(const std::vector<float>& got, const std::vector<float>& ref);
Err compare(const qn::Tensor& got, const qn::Tensor& ref);  // any contexts, float dtypes
// "max abs err 1.2e-03 (rel 4.5e-04)", the form ts/cli/bench.ts parses.
std::string err_note(const Err& e);
// Copy bandwidth of the device in bytes (read + written) per second, over a `bytes`-sized buffer:
// memcpy split over the thread pool on the CPU, cudaMemcpyAsync device-to-device on CUDA.
double copy_bandwidth(const std::shared_ptr<qn::Context>& ctx, size_t bytes, int iters, int reps = 1);

struct Row {
  std::string name;
  double bytes;    // bytes the kernel must move (read + written)
  double seconds;  // per call (median)
  std::string note;
  double flops = 0;  // for print_flop_rows
  bool checked = false;
  Err err;  // printed in the note when `checked`
};
// Prints the rows as a table: ms/call, GB/s and % of `copy_bytes_per_s`.
void print_rows(const std::string& title, const std::vector<Row>& rows, double copy_bytes_per_s);
// Prints the rows as a table: ms/call, TFLOP/s and % of `peak_flops_per_s` (column `label`: "of gemm"
// for a GEMM rate measured in the same run, "of peak" for an in-register loop's rate).
void print_flop_rows(const std::string& title, const std::vector<Row>& rows, double peak_flops_per_s,
                     const char* label = "of gemm");
inline Row row(std::string name, double bytes, double seconds, const Err& e, std::string note = "") {
  Row r{std::move(name), bytes, seconds, std::move(note)};
  r.checked = true;
  r.err = e;
  return r;
}

}  // namespace qnbench

// A case that runs only when --filter names it (not in a plain `qn_bench` run).
#define QN_BENCH_EXPLICIT(name)                                                       \
  static int qn_bench_##name(const ::qnbench::Options& opt);                          \
  static ::qnbench::Registrar qn_bench_registrar_##name(#name, qn_bench_##name, true); \
  static int qn_bench_##name(const ::qnbench::Options& opt)

#define QN_BENCH(name)                                                          \
  static int qn_bench_##name(const ::qnbench::Options& opt);                    \
  static ::qnbench::Registrar qn_bench_registrar_##name(#name, qn_bench_##name); \
  static int qn_bench_##name(const ::qnbench::Options& opt)
