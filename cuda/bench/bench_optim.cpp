// Optimizer benchmarks: AdamW 32-bit / 8-bit steps and the gradient sum of squares over one flat
// parameter buffer, reported as GB/s over the bytes each op must move (read + written) and as a
// fraction of the copy bandwidth measured in the same run (Context::copy: memcpy on the CPU
// thread pool, cudaMemcpyAsync device-to-device on CUDA).
//   qn_bench [--device cpu|cuda[:N]] [--n PARAMS] [--iters K] [--filter optim]
// Default n: 120M parameters on CUDA (about Qwen2.5-3B with r = 64), 30M on the CPU.
// Bytes per parameter: adamw_32bit 28 (p r+w, g r, m r+w, v r+w), adamw_8bit 16 (+ 8 per 256 for
// the absmax), grad_norm_sq 4.
// main() is weak: if a shared bench runner with its own main() joins cuda/bench, it wins and these
// cases can move behind its registration (run_optim_bench is the entry point).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>
#include "qn/ops/elementwise.h"
#include "qn/ops/optim.h"
#include "qn/parallel.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Row {
  std::string name;
  double bytes, seconds;
};

// Median-free simple timing: one warm-up call, then `iters` calls, synchronized at both ends.
double time_op(qn::Context& ctx, int iters, const std::function<void()>& fn) {
  fn();
  ctx.synchronize();
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) fn();
  ctx.synchronize();
  return std::chrono::duration<double>(Clock::now() - t0).count() / iters;
}

qn::Tensor filled(const std::shared_ptr<qn::Context>& ctx, int64_t n, double v) {
  qn::Tensor t = qn::Tensor::empty(ctx, qn::DType::F32, {n});
  qn::fill(*ctx, qn::FillArgs{t, v});
  return t;
}

}  // namespace

int run_optim_bench(const std::string& device, int64_t n, int iters) {
  auto ctx = qn::open_context(qn::parse_device(device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  if (n <= 0) n = cuda ? 120'000'000 : 30'000'000;
  if (iters <= 0) iters = cuda ? 20 : 3;
  std::printf("optimizer bench on %s: n = %lld parameters, %d iterations, %d CPU threads\n", ctx->device().str().c_str(),
              (long long)n, iters, qn::num_threads());
  std::vector<Row> rows;
  qn::Tensor p = filled(ctx, n, 0.01), g = filled(ctx, n, 1e-3);

  // Copy bandwidth: bytes read + written.
  {
    qn::Tensor dst = qn::Tensor::empty(ctx, qn::DType::F32, {n});
    const size_t bytes = p.nbytes();
    std::function<void()> copy = [&] { ctx->copy(dst.raw(), p.raw(), bytes); };
    if (!cuda) {
      // The CPU context copies on one thread; split it over the pool like the ops are.
      copy = [&] {
        char* d = static_cast<char*>(dst.raw());
        const char* s = static_cast<const char*>(p.raw());
        qn::parallel_for(static_cast<int64_t>(bytes), 1 << 22,
                         [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, static_cast<size_t>(e - b)); });
      };
    }
    rows.push_back({"copy (memcpy)", 2.0 * bytes, time_op(*ctx, iters, copy)});
  }
  for (qn::OptimKind kind : {qn::OptimKind::AdamW32, qn::OptimKind::AdamW8}) {
    for (bool paged : {false, true}) {
      if (paged && !cuda) continue;
      qn::AdamWArgs a;
      a.param = p;
      a.grad = g;
      a.state = qn::optim_state_create(ctx, n, kind, paged);
      a.lr = 1e-4;
      a.weight_decay = 0.01;
      const double per = kind == qn::OptimKind::AdamW32 ? 28.0 : 16.0 + 16.0 / qn::kOptim8BlockSize;
      const double s = time_op(*ctx, iters, [&] {
        qn::adamw_step(*ctx, a);
        ++a.step;
      });
      rows.push_back({std::string(qn::optim_kind_name(kind)) + (paged ? " paged" : ""), per * n, s});
    }
  }
  {
    qn::Tensor out = qn::Tensor::empty(ctx, qn::DType::F32, {1});
    qn::Tensor flag = qn::Tensor::empty(ctx, qn::DType::I32, {1});
    rows.push_back({"grad_norm_sq (+flag)", 4.0 * n, time_op(*ctx, iters, [&] {
                      qn::grad_norm_sq(*ctx, qn::GradNormSqArgs{g, out, flag});
                    })});
    rows.push_back({"nonfinite", 4.0 * n, time_op(*ctx, iters, [&] { qn::nonfinite(*ctx, qn::NonfiniteArgs{g, flag}); })});
  }
  const double copy_gbs = rows[0].bytes / rows[0].seconds / 1e9;
  std::printf("%-24s %12s %12s %10s\n", "op", "ms/call", "GB/s", "of copy");
  for (const Row& r : rows) {
    const double gbs = r.bytes / r.seconds / 1e9;
    std::printf("%-24s %12.3f %12.1f %9.0f%%\n", r.name.c_str(), r.seconds * 1e3, gbs, 100.0 * gbs / copy_gbs);
  }
  return 0;
}

__attribute__((weak)) int main(int argc, char** argv) {
  std::string device = "cpu", filter;
  int64_t n = 0;
  int iters = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
    else if (!std::strcmp(argv[i], "--n") && i + 1 < argc) n = std::strtoll(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
    else {
      std::fprintf(stderr, "usage: qn_bench [--device cpu|cuda[:N]] [--n PARAMS] [--iters K] [--filter optim]\n");
      return 2;
    }
  }
  if (!filter.empty() && std::string("optim").find(filter) == std::string::npos) return 0;
  try {
    return run_optim_bench(device, n, iters);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qn_bench: %s\n", e.what());
    return 1;
  }
}
