// Causal grouped-query attention with a key padding mask, forward and backward (FlashAttention-2
// style: tiled over keys with an online softmax, only the per-row log-sum-exp saved; no T x T matrix).
// CPU: cuda/cpu/attention.cpp, CUDA: cuda/kernels/attention.cu, tests: cuda/tests/test_attention.cpp.
// Reference: transformers eager attention (repeat_kv, scores * scale, causal + padding mask, fp32
// softmax, P V); design notes ../shared/DESIGN.md section 6.
//
// For batch b, q head h (kv head g = h / (Hq / Hkv): each kv head serves Hq/Hkv consecutive q heads),
// query i, key j:
//   allowed(i, j) = (!causal || j <= i) && mask[b, j] != 0          (mask undefined: all keys kept)
//   s_ij          = scale * dot(q[b,i,h], k[b,j,g])                  (f32 accumulation)
//   lse_i         = log(sum_{allowed j} exp(s_ij))                   (f32, natural log)
//   p_ij          = exp(s_ij - lse_i)
//   out[b,i,h]    = sum_j p_ij v[b,j,g]
// Backward, with delta_i = dot(dout_i, out_i):
//   dv_j += p_ij dout_i;   ds_ij = p_ij (dot(dout_i, v_j) - delta_i);
//   dq_i += scale ds_ij k_j;   dk_j += scale ds_ij q_i                (summed over the q heads of a group)
//
// Fully masked rows (no allowed key, e.g. a query on a left-padded position): out = 0, lse = -inf,
// and they contribute nothing to dq, dk, dv (their dq is 0). No NaN anywhere. transformers' eager
// output at such positions is not meaningful (the loss ignores them), so this is our convention.
//
// Shapes: q, out, dout, dq [B, T, Hq, D]; k, v, dk, dv [B, T, Hkv, D]; mask [B, T] i32 or u8
// (1 = keep, 0 = padding; any non-zero keeps); lse f32 [B, Hq, T].
// DTypes: q, k, v, out, dout, dq, dk, dv all f32 or all bf16. Scores, softmax, lse, accumulators
// f32; P is rounded to bf16 for the P V product on the GPU bf16 path (as FlashAttention does).
// Head dims: CPU any D >= 1; CUDA D in {16, 32, 64, 80, 96, 128} (E_ARG otherwise).
// scale = 0 means 1/sqrt(D). CUDA backward allocates f32 workspaces (delta [B,Hq,T], and for bf16
// with GQA per-q-head dk / dv partials [B,T,Hq,D] each) from the session's stream-ordered allocator.
#pragma once
#include "qn/op.h"

namespace qn {

struct AttentionForwardArgs {
  Tensor q, k, v;   // [B, T, Hq, D], [B, T, Hkv, D], [B, T, Hkv, D]
  Tensor mask;      // optional [B, T] i32 | u8, 1 = keep
  Tensor out;       // [B, T, Hq, D]
  Tensor lse;       // optional f32 [B, Hq, T]: saved for backward
  float scale = 0.f;  // 0 -> 1/sqrt(D)
  bool causal = true;
};

struct AttentionBackwardArgs {
  Tensor q, k, v;   // forward inputs
  Tensor mask;      // optional, as in forward
  Tensor out;       // forward output
  Tensor lse;       // f32 [B, Hq, T] from forward
  Tensor dout;      // [B, T, Hq, D]
  Tensor dq;        // [B, T, Hq, D] (written)
  Tensor dk, dv;    // [B, T, Hkv, D] (written)
  float scale = 0.f;
  bool causal = true;
};

QN_DECLARE_OP(attention_forward, AttentionForwardArgs)
QN_DECLARE_OP(attention_backward, AttentionBackwardArgs)

struct AttentionDims {
  int64_t b = 0, t = 0, hq = 0, hkv = 0, d = 0;
  float scale = 0.f;  // resolved (1/sqrt(D) when the args say 0)
  int64_t group() const { return hq / hkv; }
};
AttentionDims check_attention_forward(const AttentionForwardArgs& a);
AttentionDims check_attention_backward(const AttentionBackwardArgs& a);

}  // namespace qn
