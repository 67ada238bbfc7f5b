// Internal interface of the CPU GEMM (BLIS-style): a cache-blocked driver that runs a
// register-blocked micro-kernel over packed panels. Used by qn::cpu::gemm (cuda/cpu/gemm.cpp) and
// by the LoRA linear (cuda/cpu/lora_linear.cpp), which supplies its own packers (NF4 tiles
// dequantized straight into B panels, [x | u] concatenation, dropout) and epilogues.
//
// Problem: C[m, n] = sum_k A(i, k) B(k, j), fp32 accumulation. The driver never touches A, B or C
// directly: it asks `pack_a` / `pack_b` for panels and hands finished fp32 tiles to `epilogue`.
//
// Panel formats (R = MR for A panels, NR for B panels; rows past the matrix edge are zero):
//   F32      : float    dst[k * R + i],                       k in [0, kc)
//   BF16Pair : uint16_t dst[(k / 2) * 2R + 2i + (k & 1)],      k in [0, kc_pad), kc_pad even,
//              zero at k >= kc (the layout vdpbf16ps wants: one 32-bit lane holds 2 k's).
#pragma once
#include <cstdint>
#include <functional>
#include "qn/dtype.h"

namespace qn {
namespace cpu {
namespace gemm_impl {

enum class Format { F32, BF16Pair };

struct Panel {
  int R = 0;        // panel width (MR or NR)
  int64_t k0 = 0;   // first k of this block
  int kc = 0;       // valid k's
  int kc_pad = 0;   // k's in the panel (kc, or kc rounded up to even for BF16Pair)
  Format fmt = Format::F32;
  size_t bytes() const { return static_cast<size_t>(R) * kc_pad * (fmt == Format::F32 ? 4 : 2); }
};

// Packs rows [r0, r0 + rows) (rows <= R; the rest of the panel is zero) of the operand into dst.
// For A, "row" is i (an output row); for B it is j (an output column). Called concurrently.
using PackFn = std::function<void(int64_t r0, int rows, const Panel& panel, void* dst)>;
// Receives a finished tile: tile[ii * ld + jj] = C(i0 + ii, j0 + jj), ii < mr, jj < nr. Called
// concurrently for distinct tiles, exactly once per tile.
using EpilogueFn = std::function<void(int64_t i0, int64_t j0, int mr, int nr, const float* tile, int64_t ld)>;

struct Problem {
  int64_t m = 0, n = 0, k = 0;
  bool bf16 = false;  // the operands are bf16 values (use the bf16 dot-product kernels if present)
  PackFn pack_a, pack_b;
  EpilogueFn epilogue;
};

// Runs the problem on the thread pool. Picks the kernel from cpu_features() (and QN_GEMM_ISA=
// avx512bf16|avx512|avx2|scalar to force a lower one, for tests and benchmarks).
void run(const Problem& p);
// Name of the kernel run() would use ("avx512bf16 6x64", ...).
const char* kernel_name(bool bf16);
// Caps the kernel ISA for this process: "avx512bf16" (no cap), "avx512", "avx2", "scalar"; nullptr
// restores the default. For tests and benchmarks (not thread-safe against running GEMMs).
void set_isa_limit(const char* name);

// ---- operand sources and packers ---------------------------------------------------------------
// A matrix in memory: element (r, k) is at p[r * ld + k] when k_contiguous, else p[k * ld + r].
// dtype f32 or bf16.
struct MatSrc {
  const void* p = nullptr;
  DType dt = DType::F32;
  int64_t ld = 0;
  bool k_contiguous = true;
};
// Packs rows [r0, r0+rows) x [panel.k0, panel.k0 + panel.kc) of src (converting as needed).
void pack(const MatSrc& src, int64_t r0, int rows, const Panel& panel, void* dst);
inline PackFn packer(const MatSrc& src) {
  return [src](int64_t r0, int rows, const Panel& panel, void* dst) { pack(src, r0, rows, panel, dst); };
}
// Like pack(), but only k in [k_begin, k_end) of the panel (absolute k), reading src at k - k_shift.
// Used to build K-concatenated operands ([x | u]); k's outside are left untouched (rows past `rows`
// inside the range may be written as zeros, which they are in a packed panel anyway).
void pack_part(const MatSrc& src, int64_t r0, int rows, const Panel& panel, int64_t k_begin, int64_t k_end,
               int64_t k_shift, void* dst);
// Zeroes a panel.
void zero_panel(const Panel& panel, void* dst);

// ---- epilogue helpers ---------------------------------------------------------------------------
// out[j] = alpha * acc[j] + beta * out[j] (out not read when beta == 0) + bias[j] (if bias), j < n.
void finish_row_f32(float* out, const float* acc, int n, float alpha, float beta, const float* bias);
void finish_row_bf16(uint16_t* out, const float* acc, int n, float alpha, float beta, const float* bias);
// The standard epilogue: C (f32 or bf16, row-major with leading dimension ldc) = alpha*acc +
// beta*C + bias (bias f32 [n], optional). stream: C is far larger than the caches and only
// written (beta 0), so an f32 C goes out with non-temporal stores.
EpilogueFn store_epilogue(void* c, DType dt, int64_t ldc, float alpha, float beta, const float* bias,
                          bool stream = false);

}  // namespace gemm_impl
}  // namespace cpu
}  // namespace qn
