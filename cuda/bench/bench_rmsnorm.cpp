// RMSNorm benchmarks (qn_bench --filter rmsnorm): bf16 [N, 2048] (Qwen2.5-3B hidden), N = 16384
// tokens on CUDA, 4096 on the CPU (--n sets N). Bytes: forward x read + y written (+ rstd),
// backward x, dy read + dx written (+ rstd), as GB/s and a fraction of the copy bandwidth.
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
  std::printf("rmsnorm bench on %s: [%lld, %lld] bf16, %d CPU threads\n", ctx->device().str().c_str(), (long long)n,
              (long long)h, qn::num_threads());
  qn::Tensor x = qn::Tensor::empty(ctx, qn::DType::BF16, {n, h}), y = qn::Tensor::empty(ctx, qn::DType::BF16, {n, h});
  qn::Tensor w = qn::Tensor::empty(ctx, qn::DType::BF16, {h}), r = qn::Tensor::empty(ctx, qn::DType::F32, {n});
  for (auto* t : {&x, &y, &w}) qn::fill(*ctx, qn::FillArgs{*t, 0.7});
  const double e = static_cast<double>(n * h);
  const double copy_bps = qnbench::copy_bandwidth(ctx, static_cast<size_t>(e * 2), iters, 3);
  const double fs = qnbench::time_best(*ctx, 3, iters, [&] { qn::rmsnorm_forward(*ctx, qn::RmsNormForwardArgs{x, w, y, r}); });
  const double bs = qnbench::time_best(*ctx, 3, iters, [&] {
    qn::rmsnorm_backward(*ctx, qn::RmsNormBackwardArgs{x, w, r, y, y, false, qn::Tensor()});
  });
  qnbench::print_rows("rmsnorm", {{"copy", 4 * e, 4 * e / copy_bps, ""}, {"forward bf16", 4 * e + 4.0 * n, fs, ""},
                                   {"backward bf16 (dx over dy)", 6 * e + 4.0 * n, bs, ""}}, copy_bps);
  return 0;
}
