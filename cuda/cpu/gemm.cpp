// CPU gemm (see qn/ops/gemm.h): describes the operands to the blocked driver (gemm_driver.cpp),
// which packs them into panels for the best micro-kernel this CPU has (gemm_kernels_*.cpp).
#include <vector>
#include "gemm_driver.h"
#include "qn/half.h"
#include "qn/ops/gemm.h"

namespace qn {
namespace cpu {

void gemm(Context&, const GemmArgs& g) {
  const GemmDims d = check_gemm(g);
  if (d.m == 0 || d.n == 0) return;
  std::vector<float> bias32;
  const float* bias = nullptr;
  if (g.bias.defined()) {
    if (g.bias.dtype() == DType::F32) {
      bias = g.bias.data<float>();
    } else {
      bias32.resize(static_cast<size_t>(d.n));
      const uint16_t* h = g.bias.data<uint16_t>();
      for (int64_t j = 0; j < d.n; ++j) bias32[j] = bf16_to_f32(h[j]);
      bias = bias32.data();
    }
  }
  gemm_impl::Problem p;
  p.m = d.m;
  p.n = d.n;
  p.k = d.k;
  p.bf16 = g.a.dtype() == DType::BF16;
  // A(i, k) = op(A)[i, k]; B(j, k) = op(B)[k, j]. Leading dimension = the stored column count.
  p.pack_a = gemm_impl::packer(gemm_impl::MatSrc{g.a.raw(), g.a.dtype(), matrix_cols(g.a), !g.trans_a});
  p.pack_b = gemm_impl::packer(gemm_impl::MatSrc{g.b.raw(), g.b.dtype(), matrix_cols(g.b), g.trans_b});
  // A C larger than the last-level cache (the LM head's f32 logits: 155 MB at 256 tokens) is
  // streamed out; its reader (the cross-entropy) finds it in memory either way.
  constexpr int64_t kStreamBytes = int64_t(64) << 20;
  const bool stream = g.beta == 0.f && static_cast<int64_t>(g.c.nbytes()) >= kStreamBytes;
  p.epilogue = gemm_impl::store_epilogue(g.c.raw(), g.c.dtype(), d.n, g.alpha, g.beta, bias, stream);
  gemm_impl::run(p);
}

}  // namespace cpu
}  // namespace qn
