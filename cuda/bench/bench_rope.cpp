// RoPE benchmarks (qn_bench --filter rope): in-place forward on bf16 q [N, 16, 128] and k
// [N, 2, 128] (Qwen2.5-3B), N = 16384 tokens on CUDA, 4096 on the CPU (--n sets N). Bytes: q and
// k read and written, as GB/s and a fraction of the copy bandwidth.
// Check (once, before timing): on CUDA against the CPU backend on the same inputs; on the CPU against
// a float64 loop (Qwen2 rotate_half, inv_freq = theta^(-2i/d)) over the first 16 tokens.
#include <cmath>
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
  const int reps = cuda ? 5 : 3;
  const double theta = 1e6;
  std::printf("rope bench on %s: %lld tokens, q 16 x %lld, k 2 x %lld heads, bf16, %d CPU threads, median of %d x %d calls\n",
              ctx->device().str().c_str(), (long long)n, (long long)d, (long long)d, qn::num_threads(), reps, iters);
  const qn::DType bf = qn::DType::BF16;
  qn::Tensor q = qnbench::random(ctx, bf, {n, 16, d}, 1.f, 1), k = qnbench::random(ctx, bf, {n, 2, d}, 1.f, 2);
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>((i * 37) % 2048);
  qn::Tensor p = qn::Tensor::empty(ctx, qn::DType::I32, {n});
  ctx->copy_from_host(p.raw(), pos.data(), pos.size() * 4);
  // ---- check ----
  const auto q0 = qnbench::to_floats(q), k0 = qnbench::to_floats(k);
  qnbench::Err err;
  if (cuda) {
    auto rc = qnbench::cpu_context();
    qn::Tensor Q = qnbench::convert(rc, q, bf), K = qnbench::convert(rc, k, bf), P = qnbench::convert(rc, p, qn::DType::I32);
    qn::rope_forward(*ctx, qn::RopeArgs{q, k, p, theta});
    qn::rope_forward(*rc, qn::RopeArgs{Q, K, P, theta});
    err = qnbench::compare(q, Q);
    err.merge(qnbench::compare(k, K));
  } else {
    qn::rope_forward(*ctx, qn::RopeArgs{q, k, p, theta});
    const int64_t rows = std::min<int64_t>(n, 16);
    auto check = [&](const std::vector<float>& x0, const qn::Tensor& x, int64_t heads) {
      auto got = qnbench::to_floats(x);
      got.resize(static_cast<size_t>(rows * heads * d));
      std::vector<double> ref(got.size());
      for (int64_t t = 0; t < rows; ++t)
        for (int64_t h = 0; h < heads; ++h) {
          const size_t o = static_cast<size_t>((t * heads + h) * d);
          for (int64_t i = 0; i < d / 2; ++i) {
            const double a = pos[t] * std::pow(theta, -2.0 * i / d), c = std::cos(a), s = std::sin(a);
            ref[o + i] = x0[o + i] * c - x0[o + i + d / 2] * s;
            ref[o + i + d / 2] = x0[o + i + d / 2] * c + x0[o + i] * s;
          }
        }
      return qnbench::compare(got, ref);
    };
    err = check(q0, q, 16);
    err.merge(check(k0, k, 2));
  }
  // ---- timing ----
  const double bytes = 2.0 * static_cast<double>(q.nbytes() + k.nbytes());
  const double copy_bps = qnbench::copy_bandwidth(ctx, q.nbytes(), iters, 3);
  const double s = qnbench::time_median(*ctx, reps, iters, [&] { qn::rope_forward(*ctx, qn::RopeArgs{q, k, p, theta}); });
  qnbench::print_rows("rope", {{"copy", bytes, bytes / copy_bps, ""},
                               qnbench::row("forward bf16 (q and k in place)", bytes, s, err, cuda ? "vs CPU backend" : "vs float64, 16 tokens")},
                      copy_bps);
  return 0;
}
