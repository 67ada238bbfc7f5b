// bf16 tile micro-GEMMs of the CPU attention (cuda/cpu/attention.cpp), for bf16 inputs on CPUs
// with AVX512_BF16: vdpbf16ps multiplies pairs of bf16 values and accumulates in f32, twice the
// FMA rate of the f32 tiles. Tiles are 64 x 64 (kB), head_dim d a multiple of 16.
//   abt:  S[i][j] = scale * sum_c A[i][c] Bt[c][j]     (S = Q K^T, dP = dO V^T)
//         A: 64 bf16 rows with stride lda; Bt: pairs along c, [d/2][ldb][2] (column j of pair p at
//         bt + (p * ldb + j) * 2).
//   acc:  C[r][e] += sum_x A[r][x] B[x][e]               (O += P V, dV += P^T dO, dK += dS^T Q,
//         dQ += dS K)   A: 64 x 64 bf16 row-major; B: pairs along x, [32][d][2]; C f32 [64][d]
//         (C = ... when !accumulate: C is not read).
//   to_bf16 / to_bf16_t: a 64 x 64 f32 tile rounded (nearest even) to bf16, as is or transposed:
//         the A operands P, P^T, dS, dS^T (FlashAttention-2 on the GPU rounds P and dS the same way).
// Call only when cpu_features().avx512_bf16 (and avx512f/bw/vl) are set.
#pragma once
#include <cstdint>

namespace qn {
namespace cpu {
namespace attention_bf16 {

constexpr int kTile = 64;

void abt(float* s, const uint16_t* a, int64_t lda, const uint16_t* bt, int64_t ldb, int64_t d, float scale);
void acc(float* c, const uint16_t* a, const uint16_t* b, int64_t d, bool accumulate = true);
void to_bf16(const float* s, uint16_t* dst);
void to_bf16_t(const float* s, uint16_t* dst);

}  // namespace attention_bf16
}  // namespace cpu
}  // namespace qn
