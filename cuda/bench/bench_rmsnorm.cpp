// RMSNorm benchmarks (qn_bench --filter rmsnorm): bf16 [N, 2048] (Qwen2.5-3B hidden), N = 16384
// tokens on CUDA, 4096 on the CPU (--n sets N). Bytes: forward x read + y written (+ rstd),
// backward x, dy read + dx written (+ rstd), as GB/s and a fraction of the copy bandwidth.
// Check (full shape, before timing): on CUDA against the CPU backend on the same inputs; on the CPU
// against a float64 loop over the first 16 rows (forward y and backward dx).
#include <cmath>
#include <cstdio>
#include "bench.h"
#include "qn/ops/elementwise.h"
#include "qn/ops/rmsnorm.h"
#include "qn/parallel.h"

QN_BENCH(rmsnorm) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t n = opt.n > 0 ? opt.n : cuda ? 16384 : 4096, h = 2048;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 50 : 5;
  const int reps = cuda ? 5 : 3;
  std::printf("rmsnorm bench on %s: [%lld, %lld] bf16, %d CPU threads, median of %d x %d calls\n",
              ctx->device().str().c_str(), (long long)n, (long long)h, qn::num_threads(), reps, iters);
  const qn::DType bf = qn::DType::BF16;
  qn::Tensor x = qnbench::random(ctx, bf, {n, h}, 2.f, 1), w = qnbench::random(ctx, bf, {h}, 1.5f, 2);
  qn::Tensor dy = qnbench::random(ctx, bf, {n, h}, 1.f, 3);
  qn::Tensor y = qn::Tensor::empty(ctx, bf, {n, h}), dx = qn::Tensor::empty(ctx, bf, {n, h});
  qn::Tensor r = qn::Tensor::empty(ctx, qn::DType::F32, {n});
  // ---- check ----
  qn::rmsnorm_forward(*ctx, qn::RmsNormForwardArgs{x, w, y, r});
  qn::rmsnorm_backward(*ctx, qn::RmsNormBackwardArgs{x, w, r, dy, dx, false, qn::Tensor()});
  qnbench::Err ef, eb;
  if (cuda) {
    auto rc = qnbench::cpu_context();
    qn::Tensor X = qnbench::convert(rc, x, bf), W = qnbench::convert(rc, w, bf), DY = qnbench::convert(rc, dy, bf);
    qn::Tensor Y = qn::Tensor::empty(rc, bf, {n, h}), DX = qn::Tensor::empty(rc, bf, {n, h});
    qn::Tensor R = qn::Tensor::empty(rc, qn::DType::F32, {n});
    qn::rmsnorm_forward(*rc, qn::RmsNormForwardArgs{X, W, Y, R});
    qn::rmsnorm_backward(*rc, qn::RmsNormBackwardArgs{X, W, R, DY, DX, false, qn::Tensor()});
    ef = qnbench::compare(y, Y);
    eb = qnbench::compare(dx, DX);
  } else {
    const int64_t rows = std::min<int64_t>(n, 16);
    const auto xs = qnbench::to_floats(x), ws = qnbench::to_floats(w), gs = qnbench::to_floats(dy);
    const auto ys = qnbench::to_floats(y), dxs = qnbench::to_floats(dx);
    std::vector<double> yr, dxr;
    for (int64_t i = 0; i < rows; ++i) {
      const float* xi = &xs[i * h];
      const float* gi = &gs[i * h];
      double ss = 0, dot = 0;
      for (int64_t j = 0; j < h; ++j) ss += double(xi[j]) * xi[j];
      const double rs = 1.0 / std::sqrt(ss / h + 1e-6);
      for (int64_t j = 0; j < h; ++j) dot += double(gi[j]) * ws[j] * xi[j];
      for (int64_t j = 0; j < h; ++j) {
        yr.push_back(xi[j] * rs * ws[j]);
        dxr.push_back(rs * (double(gi[j]) * ws[j] - xi[j] * rs * rs * dot / h));
      }
    }
    ef = qnbench::compare(std::vector<float>(ys.begin(), ys.begin() + rows * h), yr);
    eb = qnbench::compare(std::vector<float>(dxs.begin(), dxs.begin() + rows * h), dxr);
  }
  // ---- timing ----
  const double e = static_cast<double>(n * h);
  const double copy_bps = qnbench::copy_bandwidth(ctx, static_cast<size_t>(e * 2), iters, 3);
  const double fs = qnbench::time_median(*ctx, reps, iters, [&] { qn::rmsnorm_forward(*ctx, qn::RmsNormForwardArgs{x, w, y, r}); });
  const double bs = qnbench::time_median(*ctx, reps, iters, [&] {
    qn::rmsnorm_backward(*ctx, qn::RmsNormBackwardArgs{x, w, r, dy, dx, false, qn::Tensor()});
  });
  const char* ref = cuda ? "vs CPU backend" : "vs float64, 16 rows";
  qnbench::print_rows("rmsnorm", {{"copy", 4 * e, 4 * e / copy_bps, ""}, qnbench::row("forward bf16", 4 * e + 4.0 * n, fs, ef, ref),
                                   qnbench::row("backward bf16", 6 * e + 4.0 * n, bs, eb, ref)}, copy_bps);
  return 0;
}
