// Portable GEMM micro-kernel (see gemm_kernels.h) for CPUs without AVX2: 4 x 16 tiles, plain C++
// loops the compiler vectorizes with SSE. F32 panels.
#include "gemm_kernels.h"

namespace qn {
namespace cpu {
namespace gemm_impl {
namespace {

void ukr_f32_4x16(int kc, const void* pa, const void* pb, float* c, int64_t ldc, bool accumulate) {
  const float* a = static_cast<const float*>(pa);
  const float* b = static_cast<const float*>(pb);
  float acc[4][16] = {};
  for (int k = 0; k < kc; ++k, a += 4, b += 16)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 16; ++j) acc[i][j] += a[i] * b[j];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 16; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

}  // namespace

const Kernel kKernelScalarF32 = {"scalar 4x16", 4, 16, Format::F32, ukr_f32_4x16, 256, 64, 256};

}  // namespace gemm_impl
}  // namespace cpu
}  // namespace qn
