// Shared runner of the native kernel benchmarks (qn_bench). A bench file registers its cases with
// QN_BENCH(name) and reports rows through the helpers below; bench_main.cpp holds main():
//   qn_bench [--device cpu|cuda[:N]] [--filter SUBSTRING] [--iters K] [--n N]
// Every case gets the options and one session; it measures the copy bandwidth of its device in the
// same run (copy_gbs) and reports each kernel as GB/s and as a fraction of that.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include "qn/context.h"

namespace qnbench {

struct Options {
  std::string device = "cpu";
  std::string filter;  // run the cases whose name contains it
  int iters = 0;       // 0: the case's default
  int64_t n = 0;       // 0: the case's default problem size
};

struct Case {
  std::string name;
  std::function<int(const Options&)> fn;
};
std::vector<Case>& registry();
struct Registrar {
  Registrar(const char* name, std::function<int(const Options&)> fn) { registry().push_back({name, std::move(fn)}); }
};

// Seconds per call: one warm-up call, then `iters` calls between two synchronizations. On CUDA the
// interval is measured with cudaEvents on the session stream (host wall clock on the CPU).
double time_op(qn::Context& ctx, int iters, const std::function<void()>& fn);
// The fastest of `reps` time_op measurements (robust on a shared, noisy machine).
double time_best(qn::Context& ctx, int reps, int iters, const std::function<void()>& fn);
// Copy bandwidth of the device in bytes (read + written) per second, over a `bytes`-sized buffer:
// memcpy split over the thread pool on the CPU, cudaMemcpyAsync device-to-device on CUDA.
double copy_bandwidth(const std::shared_ptr<qn::Context>& ctx, size_t bytes, int iters, int reps = 1);

struct Row {
  std::string name;
  double bytes;    // bytes the kernel must move (read + written)
  double seconds;  // per call
  std::string note;
};
// Prints the rows as a table: ms/call, GB/s and % of `copy_bytes_per_s`.
void print_rows(const std::string& title, const std::vector<Row>& rows, double copy_bytes_per_s);

}  // namespace qnbench

#define QN_BENCH(name)                                                          \
  static int qn_bench_##name(const ::qnbench::Options& opt);                    \
  static ::qnbench::Registrar qn_bench_registrar_##name(#name, qn_bench_##name); \
  static int qn_bench_##name(const ::qnbench::Options& opt)
