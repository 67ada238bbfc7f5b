// An NF4-quantized weight matrix as bitsandbytes stores it (blockwise 4-bit NormalFloat with
// optional double quantization of the absmax scales). Produced by the nf4 ops, consumed by the
// NF4 dequantize kernels and by the LoRA linear (which dequantizes tiles into its GEMM panels).
#pragma once
#include <cstdint>
#include "qn/tensor.h"

namespace qn {

// The 16 NF4 code values (bitsandbytes' table, index 0..15).
extern const float kNf4Codes[16];

struct Nf4Weight {
  int64_t rows = 0, cols = 0;  // logical [out, in], flattened row-major before blocking
  int blocksize = 64;          // power of two in [32, 4096]
  Tensor codes;                // u8 [ceil(rows*cols/2)]: element 2i in the HIGH nibble, 2i+1 in the low
  bool nested = true;          // double quantization of the absmax
  Tensor absmax;               // f32 [nblocks] when !nested
  Tensor absmax_q;             // u8 [nblocks] when nested: index into nested_map
  Tensor nested_absmax;        // f32 [ceil(nblocks / nested_blocksize)]
  Tensor nested_map;           // f32 [256]: bitsandbytes' signed dynamic map
  float nested_offset = 0.f;   // mean of the absmax, added back after dequantization
  int nested_blocksize = 256;

  int64_t numel() const { return rows * cols; }
  int64_t nblocks() const { return (numel() + blocksize - 1) / blocksize; }
};

}  // namespace qn
