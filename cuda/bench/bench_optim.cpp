// Optimizer benchmarks (qn_bench --filter optim): AdamW 32-bit / 8-bit steps (plain and paged on
// CUDA), the gradient sum of squares and the non-finite check over one flat parameter buffer,
// as GB/s over the bytes each op must move (read + written) and as a fraction of the copy
// bandwidth measured in the same run.
// Default n: 120M parameters on CUDA (about Qwen2.5-3B with r = 64 on all 7 modules), 30M on the
// CPU (r = 16). Bytes per parameter: adamw_32bit 28 (p r+w, g r, m r+w, v r+w), adamw_8bit 16
// (+ 16 per 256 for the absmax), grad_norm_sq and nonfinite 4.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>
#include "bench.h"
#include "qn/ops/elementwise.h"
#include "qn/ops/optim.h"
#include "qn/parallel.h"

namespace {

qn::Tensor filled(const std::shared_ptr<qn::Context>& ctx, int64_t n, double v) {
  qn::Tensor t = qn::Tensor::empty(ctx, qn::DType::F32, {n});
  qn::fill(*ctx, qn::FillArgs{t, v});
  return t;
}

}  // namespace

QN_BENCH(optim) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t n = opt.n > 0 ? opt.n : cuda ? 120'000'000 : 30'000'000;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 20 : 3;
  const int reps = 3;  // best of 3: the CPU figures come from a shared machine
  std::printf("optimizer bench on %s: n = %lld parameters, %d iterations, %d CPU threads\n",
              ctx->device().str().c_str(), (long long)n, iters, qn::num_threads());
  qn::Tensor p = filled(ctx, n, 0.01), g = filled(ctx, n, 1e-3);
  const double copy_bps = qnbench::copy_bandwidth(ctx, static_cast<size_t>(n) * 4, iters, reps);
  std::vector<qnbench::Row> rows;
  rows.push_back({"copy (" + std::to_string(n * 4 / 1000000) + " MB)", 8.0 * n, 8.0 * n / copy_bps, ""});
  for (qn::OptimKind kind : {qn::OptimKind::AdamW32, qn::OptimKind::AdamW8}) {
    for (bool paged : {false, true}) {
      if (paged && !cuda) continue;
      qn::AdamWArgs a;
      a.param = p;
      a.grad = g;
      a.state = qn::optim_state_create(ctx, n, kind, paged);
      a.lr = 1e-4;
      a.weight_decay = 0.01;
      a.grad_scale = 0.5f;
      const double per = kind == qn::OptimKind::AdamW32 ? 28.0 : 16.0 + 16.0 / qn::kOptim8BlockSize;
      const double s = qnbench::time_best(*ctx, reps, iters, [&] {
        qn::adamw_step(*ctx, a);
        ++a.step;
      });
      rows.push_back({std::string(qn::optim_kind_name(kind)) + (paged ? " paged" : ""), per * n, s, ""});
    }
  }
  qn::Tensor out = qn::Tensor::empty(ctx, qn::DType::F32, {1});
  qn::Tensor flag = qn::Tensor::empty(ctx, qn::DType::I32, {1});
  rows.push_back({"grad_norm_sq (+ flag)", 4.0 * n,
                  qnbench::time_best(*ctx, reps, iters, [&] { qn::grad_norm_sq(*ctx, qn::GradNormSqArgs{g, out, flag}); }), ""});
  rows.push_back({"nonfinite", 4.0 * n,
                  qnbench::time_best(*ctx, reps, iters, [&] { qn::nonfinite(*ctx, qn::NonfiniteArgs{g, flag}); }), ""});
  qnbench::print_rows("optimizer (" + ctx->device().str() + ")", rows, copy_bps);
  return 0;
}
