// Decoding NF4 weights straight into the bf16 panels of the CPU GEMM (gemm_driver.h, BF16Pair), so
// no dequantized tile is stored and re-read through a packer:
//   - backward dx = dy W (decode_pairs_transposed): a panel row is a column of W and the panel's k
//     runs down W's rows; each pair of W rows is decoded (the 16 code values scaled per block,
//     looked up 32 at a time, as nf4_dequantize does) and interleaved in registers. 0.5B
//     gate/up/down backward 5.9 -> 5.6 ms.
//   - forward x W^T (decode_rows_transposed): a panel row is a row of W; 16 rows are decoded 32
//     codes at a time and transposed in registers as 32-bit k pairs. One step's NF4 + LoRA GEMM
//     work (all seven 0.5B projections, forward and backward, plus the LM head) 1.0% faster, the
//     down projection (K = 4864) 4.4%; the decode itself, not the transpose, is most of the
//     packing cost that remains (~0.12 ns per weight on one core).
#pragma once
#include <cstdint>
#include "qn/nf4_weight.h"

namespace qn {
namespace cpu {
namespace nf4_panels {

constexpr int kPanelCols = 64;

// Whether decode_pairs_transposed handles W's columns [c0, c0 + n): AVX-512 (F, BW), n == 64,
// c0 and W's column count multiples of 32 (so every 32 codes share one scale block).
bool can_decode_transposed(const Nf4Weight& w, int64_t c0, int64_t n);

// dst[(j / 2) * 2R + 2i + (j & 1)] = bf16(W[k0 + j, c0 + i]) for j < k1 - k0, i < 64; when k1 - k0
// is odd the last pair's second half is 0. dst points at the panel unit of row k0 (R >= 64).
void decode_pairs_transposed(const Nf4Weight& w, int64_t k0, int64_t k1, int64_t c0, int R, uint16_t* dst);

// Whether decode_rows_transposed handles W's rows [r0, r0 + n) and columns [k0, k1): AVX-512 (F, BW),
// n == 64, W's column count, k0 and k1 multiples of 32 (each 32-code run shares one scale block).
bool can_decode_rows(const Nf4Weight& w, int64_t k0, int64_t k1, int64_t n);

// The forward's panels (x W^T: a panel row is a row of W, the panel's k runs along it):
// dst[((j / 2) * R + i) * 2 + (j & 1)] = bf16(W[r0 + i, k0 + j]) for i < 64, j < k1 - k0. Rows of 16
// are decoded 32 codes at a time into registers and transposed there as 32-bit pairs (the generic
// path stored a dequantized tile and transposed it in a second pass). dst points at the panel unit
// of k0.
void decode_rows_transposed(const Nf4Weight& w, int64_t r0, int64_t k0, int64_t k1, int R, uint16_t* dst);

}  // namespace nf4_panels
}  // namespace cpu
}  // namespace qn
