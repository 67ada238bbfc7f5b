// AVX2 + FMA GEMM micro-kernel (see gemm_kernels.h): 6 x 16 tiles in 12 ymm accumulators; per k,
// 2 loads of B, 6 broadcasts of A, 12 FMAs. F32 panels (bf16 operands are widened when packed).
#include <immintrin.h>
#include "gemm_kernels.h"

namespace qn {
namespace cpu {
namespace gemm_impl {
namespace {

__attribute__((target("avx2,fma"))) void ukr_f32_6x16(int kc, const void* pa, const void* pb, float* c, int64_t ldc,
                                                      bool accumulate) {
  const float* a = static_cast<const float*>(pa);
  const float* b = static_cast<const float*>(pb);
  __m256 acc[6][2];
  for (int i = 0; i < 6; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += 6;
    b += 16;
  }
#pragma GCC unroll 6
  for (int i = 0; i < 6; ++i) {
    float* r = c + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(r));
      acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(r + 8));
    }
    _mm256_storeu_ps(r, acc[i][0]);
    _mm256_storeu_ps(r + 8, acc[i][1]);
  }
}

}  // namespace

const Kernel kKernelAvx2F32 = {"avx2 6x16", 6, 16, Format::F32, ukr_f32_6x16, 256, 96, 256};

}  // namespace gemm_impl
}  // namespace cpu
}  // namespace qn
