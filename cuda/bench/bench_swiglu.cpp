// SwiGLU benchmarks (qn_bench --filter swiglu): bf16 [N, 11008] (Qwen2.5-3B FFN), N = 16384 tokens
// on CUDA, 1024 on the CPU (--n sets N). Bytes: forward gate, up read + h written; backward gate,
// up, dh read + dgate, dup written; as GB/s and a fraction of the copy bandwidth.
// Check (full shape, before timing): on CUDA against the CPU backend on the same inputs; on the CPU
// against a float64 loop over the first 8 rows.
#include <cmath>
#include <cstdio>
#include "bench.h"
#include "qn/ops/elementwise.h"
#include "qn/ops/swiglu.h"
#include "qn/parallel.h"

QN_BENCH(swiglu) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t n = opt.n > 0 ? opt.n : cuda ? 16384 : 1024, f = 11008;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 50 : 5;
  const int reps = cuda ? 5 : 3;
  std::printf("swiglu bench on %s: [%lld, %lld] bf16, %d CPU threads, median of %d x %d calls\n", ctx->device().str().c_str(),
              (long long)n, (long long)f, qn::num_threads(), reps, iters);
  const qn::DType bf = qn::DType::BF16;
  qn::Tensor t[5];
  for (int i = 0; i < 5; ++i) t[i] = qnbench::random(ctx, bf, {n, f}, 4.f, 10 + i);
  // ---- check ----
  qn::swiglu_forward(*ctx, qn::SwigluForwardArgs{t[0], t[1], t[2]});
  qn::Tensor dh = qnbench::random(ctx, bf, {n, f}, 1.f, 20);
  qn::swiglu_backward(*ctx, qn::SwigluBackwardArgs{t[0], t[1], dh, t[3], t[4]});
  qnbench::Err ef, eb;
  if (cuda) {
    auto rc = qnbench::cpu_context();
    qn::Tensor G = qnbench::convert(rc, t[0], bf), U = qnbench::convert(rc, t[1], bf), DH = qnbench::convert(rc, dh, bf);
    qn::Tensor H = qn::Tensor::empty(rc, bf, {n, f}), DG = qn::Tensor::empty(rc, bf, {n, f}), DU = qn::Tensor::empty(rc, bf, {n, f});
    qn::swiglu_forward(*rc, qn::SwigluForwardArgs{G, U, H});
    qn::swiglu_backward(*rc, qn::SwigluBackwardArgs{G, U, DH, DG, DU});
    ef = qnbench::compare(t[2], H);
    eb = qnbench::compare(t[3], DG);
    eb.merge(qnbench::compare(t[4], DU));
  } else {
    const size_t m = static_cast<size_t>(std::min<int64_t>(n, 8) * f);
    auto head = [&](const qn::Tensor& x) {
      auto v = qnbench::to_floats(x);
      v.resize(m);
      return v;
    };
    const auto g = head(t[0]), u = head(t[1]), d = head(dh), h = head(t[2]), dg = head(t[3]), du = head(t[4]);
    std::vector<double> hr(m), dgr(m), dur(m);
    for (size_t i = 0; i < m; ++i) {
      const double s = 1.0 / (1.0 + std::exp(-double(g[i]))), silu = g[i] * s;
      hr[i] = silu * u[i];
      dgr[i] = double(d[i]) * u[i] * s * (1.0 + g[i] * (1.0 - s));
      dur[i] = double(d[i]) * silu;
    }
    ef = qnbench::compare(h, hr);
    eb = qnbench::compare(dg, dgr);
    eb.merge(qnbench::compare(du, dur));
  }
  // ---- timing ----
  const double e = static_cast<double>(n * f);
  const double copy_bps = qnbench::copy_bandwidth(ctx, static_cast<size_t>(e * 2), iters, 3);
  const double fs = qnbench::time_median(*ctx, reps, iters, [&] { qn::swiglu_forward(*ctx, qn::SwigluForwardArgs{t[0], t[1], t[2]}); });
  const double bs = qnbench::time_median(*ctx, reps, iters, [&] {
    qn::swiglu_backward(*ctx, qn::SwigluBackwardArgs{t[0], t[1], t[2], t[3], t[4]});
  });
  const char* ref = cuda ? "vs CPU backend" : "vs float64, 8 rows";
  qnbench::print_rows("swiglu", {{"copy", 4 * e, 4 * e / copy_bps, ""}, qnbench::row("forward bf16", 6 * e, fs, ef, ref),
                                  qnbench::row("backward bf16", 10 * e, bs, eb, ref)}, copy_bps);
  return 0;
}
