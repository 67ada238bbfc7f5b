// The rank-r products of the CPU LoRA linear (cuda/cpu/lora_linear.cpp) on bf16 activations, as
// direct vdpbf16ps loops instead of runs of the general GEMM driver. Those products are thin
// (r = 8..64 columns or rows against M x 896..4864 activations): the driver packed the activations
// once more for each of them (u, g, dB and dA: dy packed three times per backward), split them into
// a handful of tasks and spent more time packing and synchronizing than multiplying. Here the
// activations are read in place and only the r-wide side is packed (bf16 pairs, a few KB to 600 KB).
//
//   rows_times_panel:  out[t, q] = alpha sum_k x[t, k] P[k, q]         u = s xd A^T, g = s dy B
//   reduce_over_rows:  out[q, n] (+)= alpha sum_t g[t, q] y[t, n]      dA += g^T xd
//                      (or out[n, q], transposed)                      dB += dy^T u
// Precision: bf16 operands (P and g rounded to bf16 from fp32, as the GEMM panels did), exact
// products, fp32 accumulation (vdpbf16ps flushes bf16 denormal inputs to zero). Used when the CPU
// has AVX512_BF16 and r <= kMaxRank; lora_linear.cpp keeps the GEMM-driver path otherwise.
#pragma once
#include <cstdint>
#include <vector>

namespace qn {
namespace cpu {
namespace lora_rank {

constexpr int64_t kMaxRank = 64;

// Whether these kernels run here (AVX512_BF16) for rank r.
bool available(int64_t r);

// P[k, q], k < K, q < r, as bf16 pairs: data[(k / 2) * rp + q] holds P[k, q] (low half) and
// P[k + 1, q] (high half); rp = r rounded up to 16; padding (q >= r, k >= K) is zero.
struct PairPanel {
  std::vector<uint32_t> data;
  int64_t k = 0, r = 0, rp = 0;
};
// P[k, q] = a[q * lda + k]: a is [r, K] (LoRA A, for u = xd A^T).
void pack_panel_from_rows(const float* a, int64_t lda, int64_t r, int64_t K, PairPanel& p);
// P[k, q] = b[k * ldb + q]: b is [K, r] (LoRA B, for g = dy B).
void pack_panel_from_cols(const float* b, int64_t ldb, int64_t K, int64_t r, PairPanel& p);

// out[t * ldo + q] = alpha * sum_k x[t * ldx + k] P[k, q] for t < m, q < p.r (overwritten).
// x: bf16 [m, p.k]. Runs on the thread pool.
void rows_times_panel(const uint16_t* x, int64_t ldx, int64_t m, const PairPanel& p, float alpha, float* out,
                      int64_t ldo);

// acc(q, n) = alpha * sum_{t < m} g[t * ldg + q] y[t * ldy + n], q < r, n < N; added to
// out[q * ldo + n] (transposed_out false) or out[n * ldo + q] (true). g: fp32 [m, r]; y: bf16
// [m, N]. Runs on the thread pool.
void reduce_over_rows(const float* g, int64_t ldg, int64_t r, const uint16_t* y, int64_t ldy, int64_t m, int64_t N,
                      float alpha, float* out, int64_t ldo, bool transposed_out);

}  // namespace lora_rank
}  // namespace cpu
}  // namespace qn
