// qn_bench main() and the shared timing helpers (see bench.h).
#include "bench.h"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "qn/device.h"
#include "qn/error.h"
#include "qn/parallel.h"
#include "qn/tensor.h"
#ifdef QN_WITH_CUDA
#include <cuda_runtime.h>
#endif

// Benches written before this runner existed keep their own entry point; they run as the case
// "optim" until they register with QN_BENCH.
int run_optim_bench(const std::string& device, int64_t n, int iters) __attribute__((weak));

namespace qnbench {

std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}

double time_op(qn::Context& ctx, int iters, const std::function<void()>& fn) {
  if (iters < 1) iters = 1;
  fn();
  ctx.synchronize();
#ifdef QN_WITH_CUDA
  if (ctx.device().type == qn::DeviceType::CUDA) {
    cudaStream_t st = static_cast<cudaStream_t>(ctx.stream());
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, st);
    for (int i = 0; i < iters; ++i) fn();
    cudaEventRecord(b, st);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    ctx.synchronize();
    return ms / 1e3 / iters;
  }
#endif
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  ctx.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}

double time_best(qn::Context& ctx, int reps, int iters, const std::function<void()>& fn) {
  double best = time_op(ctx, iters, fn);
  for (int r = 1; r < reps; ++r) best = std::min(best, time_op(ctx, iters, fn));
  return best;
}

double copy_bandwidth(const std::shared_ptr<qn::Context>& ctx, size_t bytes, int iters, int reps) {
  qn::Tensor src = qn::Tensor::empty(ctx, qn::DType::U8, {static_cast<int64_t>(bytes)});
  qn::Tensor dst = qn::Tensor::empty(ctx, qn::DType::U8, {static_cast<int64_t>(bytes)});
  ctx->memset(src.raw(), 1, bytes);
  ctx->memset(dst.raw(), 0, bytes);
  std::function<void()> copy = [&] { ctx->copy(dst.raw(), src.raw(), bytes); };
  if (ctx->device().type == qn::DeviceType::CPU) {
    copy = [&] {
      char* d = static_cast<char*>(dst.raw());
      const char* s = static_cast<const char*>(src.raw());
      qn::parallel_for(static_cast<int64_t>(bytes), 1 << 22,
                       [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, static_cast<size_t>(e - b)); });
    };
  }
  return 2.0 * static_cast<double>(bytes) / time_best(*ctx, reps, iters, copy);
}

void print_rows(const std::string& title, const std::vector<Row>& rows, double copy_bytes_per_s) {
  std::printf("\n%s\n", title.c_str());
  std::printf("  %-40s %10s %10s %9s  %s\n", "case", "ms/call", "GB/s", "of copy", "");
  for (const Row& r : rows) {
    const double bps = r.bytes / r.seconds;
    std::printf("  %-40s %10.3f %10.1f %8.0f%%  %s\n", r.name.c_str(), r.seconds * 1e3, bps / 1e9,
                copy_bytes_per_s > 0 ? 100.0 * bps / copy_bytes_per_s : 0.0, r.note.c_str());
  }
  std::fflush(stdout);
}

}  // namespace qnbench

int main(int argc, char** argv) {
  qnbench::Options opt;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) opt.device = argv[++i];
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) opt.filter = argv[++i];
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) opt.iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--n") && i + 1 < argc) opt.n = std::strtoll(argv[++i], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: qn_bench [--device cpu|cuda[:N]] [--filter SUBSTRING] [--iters K] [--n N]\ncases:");
      for (const auto& c : qnbench::registry()) std::fprintf(stderr, " %s", c.name.c_str());
      std::fprintf(stderr, "%s\n", run_optim_bench ? " optim" : "");
      return 2;
    }
  }
  std::vector<qnbench::Case> cases = qnbench::registry();
  bool has_optim = false;
  for (const auto& c : cases) has_optim = has_optim || c.name == "optim";
  if (run_optim_bench && !has_optim)
    cases.push_back({"optim", [](const qnbench::Options& o) { return run_optim_bench(o.device, o.n, o.iters); }});
  int rc = 0, ran = 0;
  for (const auto& c : cases) {
    if (!opt.filter.empty() && c.name.find(opt.filter) == std::string::npos) continue;
    ++ran;
    try {
      const int r = c.fn(opt);
      if (r) rc = r;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qn_bench %s: %s\n", c.name.c_str(), e.what());
      rc = 1;
    }
  }
  if (!ran) std::fprintf(stderr, "qn_bench: no case matches '%s'\n", opt.filter.c_str());
  return rc;
}
