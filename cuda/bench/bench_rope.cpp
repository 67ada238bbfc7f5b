// RoPE benchmarks (qn_bench --filter rope): in-place forward on bf16 q [N, 16, 128] and k
// [N, 2, 128] (Qwen2.5-3B), N = 16384 tokens on CUDA, 4096 on the CPU (--n sets N). Bytes: q and
// k read and written, as GB/s and a fraction of the copy bandwidth.
#include <cstdio>
#include <vector>
#include "bench.h"
#include "qn/ops/elementwise.h"
#include "qn/ops/rope.h"
#include "qn/parallel.h"

QN_BENCH(rope) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t n = opt.n > 0 ? opt.n : cuda ? 16384 : 4096, d = 128;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 50 : 5;
  std::printf("rope bench on %s: %lld tokens, q 16 x %lld, k 2 x %lld heads, bf16, %d CPU threads\n",
              ctx->device().str().c_str(), (long long)n, (long long)d, (long long)d, qn::num_threads());
  qn::Tensor q = qn::Tensor::empty(ctx, qn::DType::BF16, {n, 16, d}), k = qn::Tensor::empty(ctx, qn::DType::BF16, {n, 2, d});
  qn::fill(*ctx, qn::FillArgs{q, 0.5});
  qn::fill(*ctx, qn::FillArgs{k, 0.5});
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(i % 2048);
  qn::Tensor p = qn::Tensor::empty(ctx, qn::DType::I32, {n});
  ctx->copy_from_host(p.raw(), pos.data(), pos.size() * 4);
  const double bytes = 2.0 * static_cast<double>(q.nbytes() + k.nbytes());
  const double copy_bps = qnbench::copy_bandwidth(ctx, q.nbytes(), iters, 3);
  const double s = qnbench::time_best(*ctx, 3, iters, [&] { qn::rope_forward(*ctx, qn::RopeArgs{q, k, p, 1e6}); });
  qnbench::print_rows("rope", {{"copy", bytes, bytes / copy_bps, ""}, {"forward bf16 (q and k in place)", bytes, s, ""}},
                      copy_bps);
  return 0;
}
