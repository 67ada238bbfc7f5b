// SwiGLU benchmarks (qn_bench --filter swiglu): bf16 [N, 11008] (Qwen2.5-3B FFN), N = 16384 tokens
// on CUDA, 1024 on the CPU (--n sets N). Bytes: forward gate, up read + h written; backward gate,
// up, dh read + dgate, dup written; as GB/s and a fraction of the copy bandwidth.
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
  std::printf("swiglu bench on %s: [%lld, %lld] bf16, %d CPU threads\n", ctx->device().str().c_str(), (long long)n,
              (long long)f, qn::num_threads());
  qn::Tensor t[5];
  for (auto& x : t) {
    x = qn::Tensor::empty(ctx, qn::DType::BF16, {n, f});
    qn::fill(*ctx, qn::FillArgs{x, 0.3});
  }
  const double e = static_cast<double>(n * f);
  const double copy_bps = qnbench::copy_bandwidth(ctx, static_cast<size_t>(e * 2), iters, 3);
  const double fs = qnbench::time_best(*ctx, 3, iters, [&] { qn::swiglu_forward(*ctx, qn::SwigluForwardArgs{t[0], t[1], t[2]}); });
  const double bs = qnbench::time_best(*ctx, 3, iters, [&] {
    qn::swiglu_backward(*ctx, qn::SwigluBackwardArgs{t[0], t[1], t[2], t[3], t[4]});
  });
  qnbench::print_rows("swiglu", {{"copy", 4 * e, 4 * e / copy_bps, ""}, {"forward bf16", 6 * e, fs, ""},
                                  {"backward bf16", 10 * e, bs, ""}}, copy_bps);
  return 0;
}
