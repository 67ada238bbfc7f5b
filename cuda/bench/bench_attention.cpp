// Attention benchmarks (qn_bench --filter attention): forward and backward at the Qwen2.5-3B head
// layout (Hq 16, Hkv 2, D 128), causal, bf16, T = 2048 x B = 2 on CUDA, T = 512 x B = 1 on the CPU
// (--n sets T). Reported as TFLOP/s of the causal model FLOPs: forward 2 * 2 * B * Hq * D * T^2 / 2,
// backward 2.5 x forward (the five products of FlashAttention-2; our kernels recompute more), and
// as a fraction of our bf16 GEMM rate measured in the same run (qnbench::gemm_rate_bf16).
// Check (once, before timing, random q/k/v/dout at B 1, T 256): out, dq, dk, dv on CUDA against
// the CPU backend (bf16), on the CPU against the CPU f32 path (the reference compute mode).
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
  const int reps = cuda ? 5 : 3;
  std::printf("attention bench on %s: B %lld, T %lld, Hq %lld, Hkv %lld, D %lld, bf16, causal, %d CPU threads, median of %d x %d calls\n",
              ctx->device().str().c_str(), (long long)b, (long long)t, (long long)hq, (long long)hkv, (long long)d,
              qn::num_threads(), reps, iters);
  const qn::DType bf = qn::DType::BF16;
  // ---- check ----
  qnbench::Err ef, eb;
  {
    const int64_t ct = std::min<int64_t>(t, 256);
    auto rc = qnbench::cpu_context();
    const qn::DType rdt = cuda ? bf : qn::DType::F32;
    struct Set {
      qn::Tensor q, k, v, dout, out, lse, dq, dk, dv;
    };
    auto run = [&](const std::shared_ptr<qn::Context>& c, qn::DType dt, const Set* from) {
      Set s;
      if (from) {
        s.q = qnbench::convert(c, from->q, dt), s.k = qnbench::convert(c, from->k, dt), s.v = qnbench::convert(c, from->v, dt);
        s.dout = qnbench::convert(c, from->dout, dt);
      } else {
        s.q = qnbench::random(c, dt, {1, ct, hq, d}, 2.f, 1), s.k = qnbench::random(c, dt, {1, ct, hkv, d}, 2.f, 2);
        s.v = qnbench::random(c, dt, {1, ct, hkv, d}, 1.f, 3), s.dout = qnbench::random(c, dt, {1, ct, hq, d}, 1.f, 4);
      }
      s.out = qn::Tensor::empty(c, dt, {1, ct, hq, d}), s.dq = qn::Tensor::empty(c, dt, {1, ct, hq, d});
      s.dk = qn::Tensor::empty(c, dt, {1, ct, hkv, d}), s.dv = qn::Tensor::empty(c, dt, {1, ct, hkv, d});
      s.lse = qn::Tensor::empty(c, qn::DType::F32, {1, hq, ct});
      qn::attention_forward(*c, qn::AttentionForwardArgs{s.q, s.k, s.v, qn::Tensor(), s.out, s.lse});
      qn::attention_backward(*c, qn::AttentionBackwardArgs{s.q, s.k, s.v, qn::Tensor(), s.out, s.lse, s.dout, s.dq, s.dk, s.dv});
      return s;
    };
    const Set got = run(ctx, bf, nullptr);
    const Set ref = run(rc, rdt, &got);
    ef = qnbench::compare(got.out, ref.out);
    eb = qnbench::compare(got.dq, ref.dq);
    eb.merge(qnbench::compare(got.dk, ref.dk));
    eb.merge(qnbench::compare(got.dv, ref.dv));
  }
  // ---- timing ----
  auto make = [&](int64_t heads, double v) {
    qn::Tensor x = qn::Tensor::empty(ctx, bf, {b, t, heads, d});
    qn::fill(*ctx, qn::FillArgs{x, v});
    return x;
  };
  qn::Tensor q = make(hq, 0.05), k = make(hkv, 0.03), v = make(hkv, 0.5), out = make(hq, 0), dout = make(hq, 0.01);
  qn::Tensor dq = make(hq, 0), dk = make(hkv, 0), dv = make(hkv, 0);
  qn::Tensor lse = qn::Tensor::empty(ctx, qn::DType::F32, {b, hq, t});
  const double fwd_flops = 2.0 * 2.0 * b * hq * d * t * t / 2, bwd_flops = 2.5 * fwd_flops;
  const double gemm = qnbench::gemm_rate_bf16(ctx);
  const double fs = qnbench::time_median(*ctx, reps, iters, [&] {
    qn::attention_forward(*ctx, qn::AttentionForwardArgs{q, k, v, qn::Tensor(), out, lse});
  });
  const double bs = qnbench::time_median(*ctx, reps, iters, [&] {
    qn::attention_backward(*ctx, qn::AttentionBackwardArgs{q, k, v, qn::Tensor(), out, lse, dout, dq, dk, dv});
  });
  const char* ref = cuda ? "vs CPU backend, T 256" : "vs CPU f32 path, T 256";
  const double io = static_cast<double>(q.nbytes() * 2 + k.nbytes() * 2);
  qnbench::Row f = qnbench::row("forward", io, fs, ef, ref), bw = qnbench::row("backward (dq, dk, dv)", 2.5 * io, bs, eb, ref);
  f.flops = fwd_flops;
  bw.flops = bwd_flops;
  char title[160];
  std::snprintf(title, sizeof title, "attention (causal model FLOPs; of gemm: bf16 GEMM %s at %.3f TFLOP/s, same run)",
                cuda ? "8192^3" : "1024x2048x2048", gemm / 1e12);
  qnbench::print_flop_rows(title, {f, bw}, gemm);
  return 0;
}
