// Cross-entropy benchmarks (qn_bench --filter cross_entropy): one chunk of bf16 logits [N, 151936]
// (Qwen2 vocabulary) with dlogits written in place, N = 4096 on CUDA, 64 on the CPU (--n sets N).
// Bytes counted: logits read once and written once (the kernel reads them twice; the second read
// mostly hits cache on the GPU), as GB/s and a fraction of the copy bandwidth.
// Check (once, before timing, on random logits): the loss sum and dlogits, on CUDA against the CPU
// backend on the same inputs, on the CPU against a float64 loop over the first 4 rows.
#include <cmath>
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
  const int reps = cuda ? 5 : 3;
  std::printf("cross_entropy bench on %s: [%lld, %lld] bf16, %d CPU threads, median of %d x %d calls\n",
              ctx->device().str().c_str(), (long long)n, (long long)v, qn::num_threads(), reps, iters);
  const qn::DType bf = qn::DType::BF16;
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<int32_t>((i * 7919) % v);
  qn::Tensor labels = qn::Tensor::empty(ctx, qn::DType::I32, {n});
  ctx->copy_from_host(labels.raw(), y.data(), y.size() * 4);
  // ---- check: random logits in [-8, 8], grad scale 1/n ----
  const int64_t cn = std::min<int64_t>(n, cuda ? 256 : 4);
  qnbench::Err err;
  {
    qn::Tensor z = qnbench::random(ctx, bf, {cn, v}, 8.f, 5);
    const auto z0 = qnbench::to_floats(z);
    qn::Tensor lab = qn::Tensor::empty(ctx, qn::DType::I32, {cn});
    ctx->copy_from_host(lab.raw(), y.data(), static_cast<size_t>(cn) * 4);
    qn::Tensor ls = qn::Tensor::empty(ctx, qn::DType::F32, {1}), cnt = qn::Tensor::empty(ctx, qn::DType::I32, {1});
    qn::fill(*ctx, qn::FillArgs{ls, 0});
    qn::fill(*ctx, qn::FillArgs{cnt, 0});
    const float gs = 1.f / cn;
    qn::cross_entropy(*ctx, qn::CrossEntropyArgs{z, lab, ls, cnt, qn::Tensor(), gs});
    const auto got = qnbench::to_floats(z);
    const float loss = qnbench::to_floats(ls)[0];
    if (cuda) {
      auto rc = qnbench::cpu_context();
      qn::Tensor Z = qnbench::from_floats(rc, bf, {cn, v}, z0), LAB = qnbench::convert(rc, lab, qn::DType::I32);
      qn::Tensor LS = qn::Tensor::empty(rc, qn::DType::F32, {1}), CNT = qn::Tensor::empty(rc, qn::DType::I32, {1});
      qn::fill(*rc, qn::FillArgs{LS, 0});
      qn::fill(*rc, qn::FillArgs{CNT, 0});
      qn::cross_entropy(*rc, qn::CrossEntropyArgs{Z, LAB, LS, CNT, qn::Tensor(), gs});
      err = qnbench::compare(got, qnbench::to_floats(Z));
      err.merge(qnbench::compare(std::vector<float>{loss}, qnbench::to_floats(LS)));
    } else {
      std::vector<double> ref(static_cast<size_t>(cn * v));
      double loss_ref = 0;
      for (int64_t i = 0; i < cn; ++i) {
        const float* zi = &z0[static_cast<size_t>(i * v)];
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < v; ++j) mx = std::max(mx, double(zi[j]));
        for (int64_t j = 0; j < v; ++j) s += std::exp(zi[j] - mx);
        const double lse = mx + std::log(s);
        loss_ref += lse - zi[y[i]];
        for (int64_t j = 0; j < v; ++j) ref[i * v + j] = (std::exp(zi[j] - lse) - (j == y[i] ? 1.0 : 0.0)) * gs;
      }
      err = qnbench::compare(got, ref);
      err.merge(qnbench::compare(std::vector<float>{loss}, std::vector<double>{loss_ref}));
    }
  }
  // ---- timing ----
  qn::Tensor z = qn::Tensor::empty(ctx, bf, {n, v});
  qn::fill(*ctx, qn::FillArgs{z, 0.1});  // rewritten with dlogits every call: timing does not depend on values
  qn::Tensor ls = qn::Tensor::empty(ctx, qn::DType::F32, {1}), cnt = qn::Tensor::empty(ctx, qn::DType::I32, {1});
  qn::fill(*ctx, qn::FillArgs{ls, 0});
  qn::fill(*ctx, qn::FillArgs{cnt, 0});
  const double bytes = 2.0 * static_cast<double>(z.nbytes());
  const double copy_bps = qnbench::copy_bandwidth(ctx, z.nbytes(), iters, 3);
  const double s = qnbench::time_median(*ctx, reps, iters, [&] {
    qn::cross_entropy(*ctx, qn::CrossEntropyArgs{z, labels, ls, cnt, qn::Tensor(), 1.f / n});
  });
  const std::string ref = cuda ? "vs CPU backend, " + std::to_string(cn) + " rows" : "vs float64, 4 rows";
  qnbench::print_rows("cross_entropy", {{"copy", bytes, bytes / copy_bps, ""},
                                        qnbench::row("loss + dlogits in place bf16", bytes, s, err, ref + " (loss sum and dlogits)")},
                      copy_bps);
  return 0;
}
