// Cross-entropy benchmarks (qn_bench --filter cross_entropy): one chunk of bf16 logits [N, 151936]
// (Qwen2 vocabulary) with dlogits written in place, N = 4096 on CUDA, 64 on the CPU (--n sets N).
// Bytes counted: logits read once and written once (the kernel reads them twice; the second read
// mostly hits cache on the GPU), as GB/s and a fraction of the copy bandwidth.
#include <cstdio>
#include <vector>
#include "bench.h"
#include "qn/ops/cross_entropy.h"
#include "qn/ops/elementwise.h"
#include "qn/parallel.h"

QN_BENCH(cross_entropy) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t n = opt.n > 0 ? opt.n : cuda ? 4096 : 64, v = 151936;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 20 : 3;
  std::printf("cross_entropy bench on %s: [%lld, %lld] bf16, %d CPU threads\n", ctx->device().str().c_str(),
              (long long)n, (long long)v, qn::num_threads());
  qn::Tensor z = qn::Tensor::empty(ctx, qn::DType::BF16, {n, v});
  qn::fill(*ctx, qn::FillArgs{z, 0.1});  // rewritten with dlogits every call: timing does not depend on values
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<int32_t>((i * 7919) % v);
  qn::Tensor labels = qn::Tensor::empty(ctx, qn::DType::I32, {n});
  ctx->copy_from_host(labels.raw(), y.data(), y.size() * 4);
  qn::Tensor ls = qn::Tensor::empty(ctx, qn::DType::F32, {1}), cnt = qn::Tensor::empty(ctx, qn::DType::I32, {1});
  qn::fill(*ctx, qn::FillArgs{ls, 0});
  qn::fill(*ctx, qn::FillArgs{cnt, 0});
  const double bytes = 2.0 * static_cast<double>(z.nbytes());
  const double copy_bps = qnbench::copy_bandwidth(ctx, z.nbytes(), iters, 3);
  const double s = qnbench::time_best(*ctx, 3, iters, [&] {
    qn::cross_entropy(*ctx, qn::CrossEntropyArgs{z, labels, ls, cnt, qn::Tensor(), 1.f / n});
  });
  qnbench::print_rows("cross_entropy", {{"copy", bytes, bytes / copy_bps, ""}, {"loss + dlogits in place bf16", bytes, s, ""}},
                      copy_bps);
  return 0;
}
