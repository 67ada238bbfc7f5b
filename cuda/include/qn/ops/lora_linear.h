// The LoRA linear layer over a frozen base weight (NF4 or dense), forward and backward.
// CPU: cuda/cpu/lora_linear.cpp (NF4 tiles dequantized straight into the GEMM's packed panels),
// CUDA: cuda/kernels/lora_linear.cu. Design: ../shared/DESIGN.md section 5.
//
//   xd = dropout(x)                 (mask from (seed, element index), kept values scaled 1/(1-p))
//   u  = s * xd A^T                 f32 [M, r]   saved by forward for backward
//   y  = x W^T + b + u B^T          [M, out], dtype of x      (y += ... when accumulate_y)
// Backward (no gradient for the frozen W and b):
//   dB += dy^T u                    f32 [out, r]   (u already holds s)
//   g   = dy B                      f32 [M, r]
//   dA += s * g^T xd                f32 [r, in]
//   dx  = dy W + s * dropout(g A)   [M, in]        (dx += ... when accumulate_dx)
//   where dropout(.) applies the same mask and 1/(1-p) scale as forward.
//
// Shapes: x is [..., in] (rows = product of the leading dims = M), y/dy are [..., out] with the
// same leading dims, dx like x. W is [out, in] (Nf4Weight rows = out, cols = in). A f32 [r, in],
// B f32 [out, r], bias [out] f32 or bf16 (optional).
// DTypes: x, y, dy, dx f32 or bf16 (all the same). Dense W f32 or bf16. u, A, B, grads f32.
// Precision: fp32 accumulation everywhere. On the GPU and in the CPU bf16 path, the GEMM inputs
// are bf16 (x as given, W dequantized to bf16, bf16 copies of A/B/u/g made per call); with f32
// x and a dense f32 W, the CPU computes in fp32 throughout (the reference path).
#pragma once
#include <cstdint>
#include "qn/nf4_weight.h"
#include "qn/op.h"

#if defined(__CUDACC__)
#define QN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define QN_HOST_DEVICE inline
#endif

namespace qn {

// The layer: frozen base weight plus adapter. Exactly one of `nf4` / `weight` is given.
struct LoraLinear {
  const Nf4Weight* nf4 = nullptr;  // NF4 base weight [out, in] (caller keeps it alive), or
  Tensor weight;                   // dense base weight f32/bf16 [out, in]
  Tensor bias;                     // optional [out], f32 or bf16
  bool enabled = true;             // false: plain linear, A/B/u/grads are ignored
  Tensor lora_a;                   // f32 [r, in]
  Tensor lora_b;                   // f32 [out, r]
  float scale = 1.f;               // s: alpha / r (or alpha / sqrt(r) for rsLoRA), computed by caller
  float dropout = 0.f;             // p in [0, 1)
  uint64_t seed = 0;               // dropout stream; use a fresh one per layer and step, and the
                                   // same one in backward / recompute
};

struct LoraLinearForwardArgs {
  LoraLinear layer;
  Tensor x;                   // [..., in]
  Tensor y;                   // [..., out], dtype of x
  Tensor u;                   // f32 [M, r] (output, saved for backward); needed when enabled
  bool accumulate_y = false;  // y += result (e.g. a residual add) instead of y = result
};

struct LoraLinearBackwardArgs {
  LoraLinear layer;
  Tensor x;                    // forward input [..., in]
  Tensor dy;                   // [..., out]
  Tensor u;                    // f32 [M, r] saved by forward (needed when enabled)
  Tensor dx;                   // optional [..., in], dtype of x
  bool accumulate_dx = false;  // dx += result (several layers read the same x)
  Tensor grad_a;               // f32 [r, in], accumulated (+=); needed when enabled
  Tensor grad_b;               // f32 [out, r], accumulated (+=); needed when enabled
};

QN_DECLARE_OP(lora_linear_forward, LoraLinearForwardArgs)
QN_DECLARE_OP(lora_linear_backward, LoraLinearBackwardArgs)

// Resolved sizes. The checks throw E_SHAPE / E_DTYPE / E_DEVICE / E_ARG naming the op and tensor.
struct LoraLinearDims {
  int64_t m = 0, in = 0, out = 0, r = 0;  // r = 0 when the adapter is disabled
  bool lora() const { return r > 0; }
};
LoraLinearDims check_lora_linear_forward(const LoraLinearForwardArgs& a);
LoraLinearDims check_lora_linear_backward(const LoraLinearBackwardArgs& a);

// ---- dropout mask (identical on CPU and CUDA) ----------------------------------------------
// Element i of x (row-major flat index into [M, in]) is kept when the top 24 bits of
// splitmix64(seed-mixed counter i) are >= floor(p * 2^24). Kept values are scaled by 1/(1-p).
QN_HOST_DEVICE uint64_t lora_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// Per-call key: mixes the seed once so that nearby seeds give unrelated streams.
QN_HOST_DEVICE uint64_t lora_dropout_key(uint64_t seed) { return lora_mix64(seed + 0x632BE59BD9B4E019ull); }
QN_HOST_DEVICE uint32_t lora_dropout_threshold(float p) {
  return p <= 0.f ? 0u : static_cast<uint32_t>(p * 16777216.0f);  // exact: p * 2^24, truncated
}
QN_HOST_DEVICE bool lora_dropout_keep(uint64_t key, uint64_t index, uint32_t threshold) {
  return static_cast<uint32_t>(lora_mix64(key + index * 0x9E3779B97F4A7C15ull) >> 40) >= threshold;
}

// The dropout of a layer, ready to apply: mult(i) = keep(i) ? 1/(1-p) : 0 for x's flat index i.
struct LoraDropout {
  bool on = false;  // enabled and p > 0
  uint64_t key = 0;
  uint32_t threshold = 0;
  float inv_keep = 1.f;
  QN_HOST_DEVICE float mult(uint64_t index) const {
    return lora_dropout_keep(key, index, threshold) ? inv_keep : 0.f;
  }
};
inline LoraDropout lora_dropout_of(const LoraLinear& L) {
  LoraDropout d;
  d.on = L.enabled && L.dropout > 0.f;
  d.key = lora_dropout_key(L.seed);
  d.threshold = lora_dropout_threshold(L.dropout);
  d.inv_keep = 1.f / (1.f - L.dropout);
  return d;
}

}  // namespace qn
