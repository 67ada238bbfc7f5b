// NF4 (4-bit NormalFloat) blockwise quantization with double quantization of the block scales,
// bit-compatible with bitsandbytes (quant_type "nf4", as transformers' load_in_4bit stores it).
// CPU: cuda/cpu/nf4.cpp, CUDA: cuda/kernels/nf4.cu (+ cuda/kernels/nf4_device.cuh for use inside
// other kernels), checks and helpers: cuda/core/nf4_*.cpp. Known answers: test/fixtures/nf4/
// (README there, "NF4 formulas"); CPU and CUDA give bit-identical codes, scales and outputs.
//
// Format (n = element count of the weight, flattened row-major; bs = blocksize):
//   blocks of bs elements (power of two in [32, 4096]); the last block may be partial.
//   absmax[b] = max |x| over block b (f32).      inv = f32(1 / absmax[b]);  s = f32(x * inv)
//   code = #{ i : s > kNf4Thresholds[i] }  (0..15; exactly on a threshold -> LOWER code; an
//          all-zero block gives s = 0 * inf = NaN -> code 0, which dequantizes to -0.0)
//   codes byte j = code[2j] << 4 | code[2j+1]  (even element in the HIGH nibble), ceil(n/2) bytes;
//          for odd n the missing last element is a 0.0 of the last block (low nibble 7, or 0 when
//          that block's absmax is 0).
//   dequant y = f32(kNf4Codes[code] * absmax[b]), rounded once to the output dtype (bf16: RNE).
// Double quantization of absmax (nb values, nested blocks of nbs = 256):
//   offset = f32(mean(absmax)): a float64 sum in a fixed order (256 strided lanes, then a pairwise
//          tree over the lanes; both backends), divided by nb in float64, rounded once.
//   a = f32(absmax - offset); nested[c] = max |a| over nested block c; s = f32(a * f32(1/nested[c]))
//   absmax_q = the bitsandbytes dQuantize binary search of s in kDynamicMap8 (u8)
//   restored = f32(f32(map[absmax_q] * nested[c]) + offset)      (no FMA)
// Every step is IEEE float32 (no FTZ, no contraction) on both backends, so results are identical.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include "qn/nf4_weight.h"
#include "qn/op.h"

namespace qn {

// kNf4Codes[16] is declared in qn/nf4_weight.h. The 15 decision thresholds
// f32((kNf4Codes[i] + kNf4Codes[i+1]) / 2) computed in float64 (= bitsandbytes' CUDA constants).
extern const float kNf4Thresholds[15];
// bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): ascending,
// [0] = -0.99296875, [127] = 0, [255] = 1. The nested_quant_map of a double-quantized weight.
extern const float kDynamicMap8[256];

constexpr int kNf4MinBlocksize = 32;
constexpr int kNf4MaxBlocksize = 4096;
constexpr int kNf4NestedBlocksize = 256;  // bitsandbytes' fixed nested blocksize

// Power of two in [32, 4096] (also the rule for nested_blocksize).
bool nf4_blocksize_ok(int64_t blocksize);
inline int64_t nf4_num_blocks(int64_t n, int64_t blocksize) { return (n + blocksize - 1) / blocksize; }
// log2 of a power of two (the blocksizes).
inline int nf4_log2(int64_t v) {
  int l = 0;
  while ((int64_t(1) << l) < v) ++l;
  return l;
}

// Fills the raw-pointer view a backend's kernels read (members codes, nested, log2_bs, and
// absmax, or absmax_q / nested_absmax / nested_map / offset / log2_nbs when nested). The tensors
// must exist (callers check).
template <typename View>
void fill_nf4_view(const Nf4Weight& w, View& v) {
  v.codes = w.codes.data<uint8_t>();
  v.nested = w.nested;
  v.log2_bs = nf4_log2(w.blocksize);
  if (w.nested) {
    v.absmax_q = w.absmax_q.data<uint8_t>();
    v.nested_absmax = w.nested_absmax.data<float>();
    v.nested_map = w.nested_map.data<float>();
    v.offset = w.nested_offset;
    v.log2_nbs = nf4_log2(w.nested_blocksize);
  } else {
    v.absmax = w.absmax.data<float>();
  }
}

// codes, absmax = quantize(src).
struct Nf4QuantizeArgs {
  Tensor src;         // f32, bf16 or f16, any shape, n = numel >= 1 (flattened row-major)
  Tensor codes;       // u8, ceil(n/2) elements (any shape, e.g. [ceil(n/2)] or [ceil(n/2), 1])
  Tensor absmax;      // f32, ceil(n/blocksize) elements
  int blocksize = 64;
  std::string name;   // the tensor's name, used in error messages (E_NONFINITE)
};

// Double quantization of a block-scale vector: absmax_q, nested_absmax, offset = dq(absmax).
struct Nf4DoubleQuantArgs {
  Tensor absmax;         // f32 [nb] (input)
  Tensor absmax_q;       // u8 [nb]
  Tensor nested_absmax;  // f32 [ceil(nb / nested_blocksize)]
  Tensor offset;         // f32, 1 element: the mean of absmax
  int nested_blocksize = kNf4NestedBlocksize;
};

// The inverse: absmax = f32(f32(nested_map[absmax_q] * nested_absmax[i / nbs]) + offset).
struct Nf4DoubleDequantArgs {
  Tensor absmax_q;       // u8 [nb]
  Tensor nested_absmax;  // f32 [ceil(nb / nested_blocksize)]
  Tensor nested_map;     // f32 [256] (kDynamicMap8 for weights we quantize; read from the file otherwise)
  float offset = 0.f;
  Tensor absmax;         // f32 [nb] (output)
  int nested_blocksize = kNf4NestedBlocksize;
};

// out = dequantize(w): the whole matrix in one launch (nested scales are restored on the fly).
struct Nf4DequantizeArgs {
  Nf4Weight w;
  Tensor out;  // f32 or bf16, rows*cols elements (any shape), same context as w's tensors
};

QN_DECLARE_OP(nf4_quantize, Nf4QuantizeArgs)
QN_DECLARE_OP(nf4_double_quant, Nf4DoubleQuantArgs)
QN_DECLARE_OP(nf4_double_dequant, Nf4DoubleDequantArgs)
QN_DECLARE_OP(nf4_dequantize, Nf4DequantizeArgs)

// Checks shared by both backends (E_ARG, E_SHAPE, E_DTYPE, E_DEVICE naming the op).
void check_nf4_quantize(const Nf4QuantizeArgs& a);
void check_nf4_double_quant(const Nf4DoubleQuantArgs& a);
void check_nf4_double_dequant(const Nf4DoubleDequantArgs& a);
void check_nf4_dequantize(const Nf4DequantizeArgs& a);
// An Nf4Weight is consistent: blocksizes, tensor dtypes and sizes, one context. `op` names the caller.
void check_nf4_weight(const Nf4Weight& w, const char* op);

// Quantizes a weight (any dtype nf4_quantize accepts; 2-D [rows, cols], or 1-D as [1, n]) into a
// new Nf4Weight on the weight's context, with double quantization when `double_quant`. Blocks the
// caller until the offset is known (it lives in the struct as a host float). E_NONFINITE names `name`.
Nf4Weight nf4_quantize_weight(const Tensor& w, int blocksize = 64, bool double_quant = true,
                              const std::string& name = "");
// kDynamicMap8 as an f32 [256] tensor on ctx (for Nf4Weight::nested_map).
Tensor nf4_dynamic_map_tensor(const std::shared_ptr<Context>& ctx);
// Throws E_NONFINITE: "nf4_quantize: tensor 'NAME' has a non-finite value (nan) at element I [r, c]".
[[noreturn]] void nf4_fail_nonfinite(const std::string& name, const Shape& shape, int64_t index, float value);
// nf4_double_quant's input check on a host copy of absmax: E_NONFINITE naming the first non-finite
// value (its offset and scales would be inf / nan). CUDA reads the absmax back only on failure.
void nf4_check_absmax_finite(const float* absmax, int64_t n);

namespace cpu {

// ---- Dequantize helpers for the CPU GEMM (single-threaded; call them from inside your own
// parallel loop). `w` lives on a CPU context. Output values are bit-identical to nf4_dequantize.
// out_dtype: DType::F32 or DType::BF16 (others: E_DTYPE). AVX-512 or AVX2 when the CPU has them.
//
// Rows [row0, row1) of the logical [rows, cols] matrix into `out`: row r goes to
// out + (r - row0) * ldo elements (ldo = 0 means ldo = cols, i.e. a dense [row1-row0, cols] block).
void nf4_dequantize_rows(const Nf4Weight& w, int64_t row0, int64_t row1, DType out_dtype, void* out,
                         int64_t ldo = 0);
// The tile rows [row0, row1) x cols [col0, col1): element (r, c) goes to
// out[(r - row0) * ldo + (c - col0)]; ldo >= col1 - col0. For packing GEMM panels of W (K = cols).
void nf4_dequantize_tile(const Nf4Weight& w, int64_t row0, int64_t row1, int64_t col0, int64_t col1,
                         DType out_dtype, void* out, int64_t ldo);
// Flat elements [e0, e1) of the row-major matrix into out[0 .. e1-e0).
void nf4_dequantize_range(const Nf4Weight& w, int64_t e0, int64_t e1, DType out_dtype, void* out);

namespace detail {
// Testing hook: caps the SIMD level of the nf4 CPU kernels (0 = scalar, 1 = AVX2, 2 = AVX-512;
// -1 = whatever the CPU has, the default). Returns the level now in effect.
int nf4_set_isa(int level);
}  // namespace detail

}  // namespace cpu
}  // namespace qn
