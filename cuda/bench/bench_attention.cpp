// Attention benchmarks (qn_bench --filter attention): forward and backward at the Qwen2.5-3B head
// layout (Hq 16, Hkv 2, D 128), causal, bf16, T = 2048 x B = 2 on CUDA, T = 512 x B = 1 on the CPU
// (--n sets T). Reported as TFLOP/s of the causal model FLOPs: forward 2 * 2 * B * Hq * D * T^2 / 2,
// backward 2.5 x forward (the five products of FlashAttention-2; our kernels recompute more).
#include <cstdio>
#include "bench.h"
#include "qn/ops/attention.h"
#include "qn/ops/elementwise.h"
#include "qn/parallel.h"

QN_BENCH(attention) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t t = opt.n > 0 ? opt.n : cuda ? 2048 : 512, b = cuda ? 2 : 1, hq = 16, hkv = 2, d = 128;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 10 : 1;
  std::printf("attention bench on %s: B %lld, T %lld, Hq %lld, Hkv %lld, D %lld, bf16, causal, %d CPU threads\n",
              ctx->device().str().c_str(), (long long)b, (long long)t, (long long)hq, (long long)hkv, (long long)d,
              qn::num_threads());
  auto make = [&](int64_t heads, double v) {
    qn::Tensor x = qn::Tensor::empty(ctx, qn::DType::BF16, {b, t, heads, d});
    qn::fill(*ctx, qn::FillArgs{x, v});
    return x;
  };
  qn::Tensor q = make(hq, 0.05), k = make(hkv, 0.03), v = make(hkv, 0.5), out = make(hq, 0), dout = make(hq, 0.01);
  qn::Tensor dq = make(hq, 0), dk = make(hkv, 0), dv = make(hkv, 0);
  qn::Tensor lse = qn::Tensor::empty(ctx, qn::DType::F32, {b, hq, t});
  const double fwd_flops = 2.0 * 2.0 * b * hq * d * t * t / 2, bwd_flops = 2.5 * fwd_flops;
  const double fs = qnbench::time_best(*ctx, 3, iters, [&] {
    qn::attention_forward(*ctx, qn::AttentionForwardArgs{q, k, v, qn::Tensor(), out, lse});
  });
  const double bs = qnbench::time_best(*ctx, 3, iters, [&] {
    qn::attention_backward(*ctx, qn::AttentionBackwardArgs{q, k, v, qn::Tensor(), out, lse, dout, dq, dk, dv});
  });
  char note[2][64];
  std::snprintf(note[0], sizeof note[0], "%.2f TFLOP/s", fwd_flops / fs / 1e12);
  std::snprintf(note[1], sizeof note[1], "%.2f TFLOP/s", bwd_flops / bs / 1e12);
  const double io = static_cast<double>(q.nbytes() * 2 + k.nbytes() * 2);
  qnbench::print_rows("attention (GB/s of q, k, v, out; compute-bound)",
                      {{"forward", io, fs, note[0]}, {"backward", 2.5 * io, bs, note[1]}}, 0);
  return 0;
}
