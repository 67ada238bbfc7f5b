// Decoding NF4 weights straight into the bf16 panels of the CPU GEMM (gemm_driver.h, BF16Pair),
// for the LoRA linear's backward dx = dy W, where a panel row is a column of W and the panel's k
// runs down W's rows: each pair of W rows is decoded (the 16 code values scaled per block, looked
// up 32 at a time, as nf4_dequantize does) and interleaved in registers. The generic path
// dequantized a tile, stored it and re-read it through the packer, one 64-element row segment per
// call: 0.5B gate/up/down backward 5.9 -> 5.6 ms. (The forward, a row of W per panel row, decodes
// long row segments at a time and gained nothing from the same treatment.)
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

}  // namespace nf4_panels
}  // namespace cpu
}  // namespace qn
