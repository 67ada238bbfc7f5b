// Optimizer benchmarks (qn_bench --filter optim): AdamW 32-bit / 8-bit steps (plain and paged on
// CUDA), the gradient sum of squares and the non-finite check over one flat parameter buffer,
// as GB/s over the bytes each op must move (read + written) and as a fraction of the copy
// bandwidth measured in the same run.
// Default n: 120M parameters on CUDA (about Qwen2.5-3B with r = 64 on all 7 modules), 30M on the
// CPU (r = 16). Bytes per parameter: adamw_32bit 28 (p r+w, g r, m r+w, v r+w), adamw_8bit 16
// (+ 16 per 256 for the absmax), grad_norm_sq and nonfinite 4.
// Check (once, before timing, 1M random parameters and gradients, 3 steps): the parameters on CUDA
// against the CPU backend (same kind), on the CPU against a float64 loop of torch's AdamW; the
// sum of squares against a float64 sum; the non-finite flag on a buffer with one NaN.
#include <algorithm>
#include <cmath>
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

// Runs 3 AdamW steps of `kind` on p, g (f32, random) in `c` and returns the parameters.
std::vector<float> adamw_run(const std::shared_ptr<qn::Context>& c, const qn::Tensor& p0, const qn::Tensor& g0, qn::OptimKind kind) {
  qn::AdamWArgs a;
  a.param = qnbench::convert(c, p0, qn::DType::F32);
  a.grad = qnbench::convert(c, g0, qn::DType::F32);
  a.state = qn::optim_state_create(c, p0.numel(), kind, false);
  a.lr = 1e-2;
  a.weight_decay = 0.01;
  a.grad_scale = 0.5f;
  for (a.step = 1; a.step <= 3; ++a.step) qn::adamw_step(*c, a);
  return qnbench::to_floats(a.param);
}

qnbench::Err optim_check(const std::shared_ptr<qn::Context>& ctx, qn::OptimKind kind) {
  const int64_t n = 1 << 20;
  qn::Tensor p0 = qnbench::random(ctx, qn::DType::F32, {n}, 1.f, 1), g0 = qnbench::random(ctx, qn::DType::F32, {n}, 0.1f, 2);
  const auto got = adamw_run(ctx, p0, g0, kind);
  if (ctx->device().type == qn::DeviceType::CUDA) return qnbench::compare(got, adamw_run(qnbench::cpu_context(), p0, g0, kind));
  const auto p = qnbench::to_floats(p0), g = qnbench::to_floats(g0);
  std::vector<double> ref(p.begin(), p.end());
  std::vector<double> m(ref.size()), v(ref.size());
  const double lr = 1e-2, wd = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  for (int t = 1; t <= 3; ++t) {
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < ref.size(); ++i) {
      const double gi = 0.5 * g[i];
      ref[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      ref[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
    }
  }
  return qnbench::compare(got, ref);
}

}  // namespace

QN_BENCH(optim) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t n = opt.n > 0 ? opt.n : cuda ? 120'000'000 : 30'000'000;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 20 : 3;
  const int reps = cuda ? 5 : 3;  // median of reps (the CPU figures come from a shared machine)
  std::printf("optimizer bench on %s: n = %lld parameters, %d CPU threads, median of %d x %d calls\n",
              ctx->device().str().c_str(), (long long)n, qn::num_threads(), reps, iters);
  qn::Tensor p = filled(ctx, n, 0.01), g = filled(ctx, n, 1e-3);
  const double copy_bps = qnbench::copy_bandwidth(ctx, static_cast<size_t>(n) * 4, iters, reps);
  const char* ref = cuda ? "vs CPU backend, 1M params, 3 steps" : "vs float64 AdamW, 1M params, 3 steps";
  const qnbench::Err e32 = optim_check(ctx, qn::OptimKind::AdamW32), e8 = optim_check(ctx, qn::OptimKind::AdamW8);
  qnbench::Err enorm, eflag;
  {
    const int64_t cn = 1 << 20;
    qn::Tensor cg = qnbench::random(ctx, qn::DType::F32, {cn}, 1.f, 3);
    qn::Tensor o = qn::Tensor::empty(ctx, qn::DType::F32, {1}), fl = qn::Tensor::empty(ctx, qn::DType::I32, {1});
    qn::fill(*ctx, qn::FillArgs{o, 0});
    qn::grad_norm_sq(*ctx, qn::GradNormSqArgs{cg, o, fl});
    double ss = 0;
    for (float x : qnbench::to_floats(cg)) ss += double(x) * x;
    enorm = qnbench::compare(qnbench::to_floats(o), std::vector<double>{ss});
    const float nan = NAN;
    ctx->copy_from_host(static_cast<float*>(cg.raw()) + cn / 3, &nan, 4);
    int32_t f0 = -1, f1 = -1;
    qn::nonfinite(*ctx, qn::NonfiniteArgs{cg, fl});
    ctx->copy_to_host(&f1, fl.raw(), 4);
    qn::nonfinite(*ctx, qn::NonfiniteArgs{g, fl});
    ctx->copy_to_host(&f0, fl.raw(), 4);
    eflag.abs = eflag.rel = (f1 == 1 ? 0 : 1) + (f0 == 0 ? 0 : 1);
  }
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
      const double s = qnbench::time_median(*ctx, reps, iters, [&] {
        qn::adamw_step(*ctx, a);
        ++a.step;
      });
      rows.push_back(qnbench::row(std::string(qn::optim_kind_name(kind)) + (paged ? " paged" : ""), per * n, s,
                                  kind == qn::OptimKind::AdamW32 ? e32 : e8, paged ? "check: unpaged" : ref));
    }
  }
  qn::Tensor out = qn::Tensor::empty(ctx, qn::DType::F32, {1});
  qn::Tensor flag = qn::Tensor::empty(ctx, qn::DType::I32, {1});
  rows.push_back(qnbench::row("grad_norm_sq (+ flag)", 4.0 * n,
                  qnbench::time_median(*ctx, reps, iters, [&] { qn::grad_norm_sq(*ctx, qn::GradNormSqArgs{g, out, flag}); }),
                  enorm, "vs float64 sum, 1M values"));
  rows.push_back(qnbench::row("nonfinite", 4.0 * n,
                  qnbench::time_median(*ctx, reps, iters, [&] { qn::nonfinite(*ctx, qn::NonfiniteArgs{g, flag}); }), eflag,
                  "err = wrong flags (one NaN / none)"));
  qnbench::print_rows("optimizer (" + ctx->device().str() + ")", rows, copy_bps);
  return 0;
}
