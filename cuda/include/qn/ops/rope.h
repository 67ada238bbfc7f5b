// Rotary position embedding, HF half-split form (rotate_half), applied IN PLACE to q and k.
// CPU: cuda/cpu/rope.cpp, CUDA: cuda/kernels/rope.cu, tests: cuda/tests/test_rope.cpp.
//
// Matches transformers' Qwen2RotaryEmbedding (rope_type "default", attention_scaling 1) and
// apply_rotary_pos_emb. For head_dim d and i in [0, d/2):
//   inv_freq[i] = f32(1 / f32(f32(theta) ^ f32(f32(2i) / d)))     (torch float32 pow and divide)
//   angle       = f32(pos * inv_freq[i])                          (one float32 product)
//   c, s        = cos(angle), sin(angle) correctly rounded to f32 (computed in double)
// Forward (x1 = x[:d/2], x2 = x[d/2:], both halves use the same c, s):
//   y1 = x1 * c - x2 * s        y2 = x2 * c + x1 * s
// Backward (rope_backward: rotation by -angle, the transpose; applied to dq and dk in place):
//   d1 = g1 * c + g2 * s        d2 = g2 * c - g1 * s
// Precision: f32 storage: f32 products and sum (CPU and CUDA may differ by an FMA ulp).
// bf16 storage emulates the bf16 model in transformers op by op: c, s rounded to bf16 (cos.to(x.dtype)),
// each product rounded to bf16, then the sum rounded to bf16 (what torch's bf16 eager ops do).
//
// Shapes: q [..., Hq, d], k [..., Hkv, d]; rows = product of the dims before the last two (tokens,
// e.g. [B, T, H, d] or [B*T, H, d]); positions i32 with exactly `rows` elements (e.g. [B, T]).
// Either q or k may be undefined. d must be even.
#pragma once
#include "qn/op.h"

namespace qn {

struct RopeArgs {
  Tensor q;          // [..., Hq, d] f32 | bf16, rotated in place (optional)
  Tensor k;          // [..., Hkv, d] f32 | bf16, rotated in place (optional)
  Tensor positions;  // i32, one per token
  double theta = 10000.0;  // rope_theta from config.json
};

// Forward: rotate by +angle. Backward: rotate gradients (dq in q, dk in k) by -angle.
QN_DECLARE_OP(rope_forward, RopeArgs)
QN_DECLARE_OP(rope_backward, RopeArgs)

struct RopeDims {
  int64_t rows = 0, hq = 0, hkv = 0, d = 0;
};
RopeDims check_rope(const RopeArgs& a, const char* op);

// inv_freq as transformers computes it (float32), shared by both backends. out has d/2 entries.
void rope_inv_freq(double theta, int64_t d, float* out);

}  // namespace qn
