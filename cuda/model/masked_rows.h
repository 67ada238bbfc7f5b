// transformers' eager semantics for FULLY MASKED attention query rows, applied by the model after
// the attention op (a temporary workaround, see below).
//
// A query i of row b sees no key at all when every key j <= i is padding: the positions before the
// first real token of a LEFT-padded row. transformers' eager attention adds the dtype minimum to
// masked scores, so such a row has all scores equal to that minimum and its softmax is UNIFORM over
// all T keys (padding and future keys included): out_i = (1/T) sum_j v_j. This is not harmless:
// HF's causal-LM loss counts the target of the last such position (it predicts the first real
// token), so those logits and their gradients reach the loss (test/fixtures/models: row 2 of the
// batch, 1 of the 27 targets; the trainer fixture too). Autograd also passes the gradient through
// the additive mask to the scores, so the backward is the ordinary softmax backward with p = 1/T:
//   delta = dout_i . out_i;  ds_ij = (dout_i . v_j - delta) / T
//   dv_j += dout_i / T;  dq_i += scale sum_j ds_ij k_j;  dk_j += scale ds_ij q_i
// qn::attention_forward / _backward define such rows as out = 0 contributing nothing, so the model
// patches them here (host side: only rows with left padding are copied, computed in double, and
// written back in the tensors' dtype). Remove once the attention op offers the HF convention.
#pragma once
#include <cstdint>
#include <vector>
#include "qn/tensor.h"

namespace qn {
namespace model {

// v [B, T, Hkv, D], out [B, T, Hq, D] (f32 or bf16). first_real[b] = index of the first key with
// mask != 0 in row b (T when none); rows with first_real[b] == 0 are untouched.
void hf_masked_rows_forward(Context& ctx, const Tensor& v, const Tensor& out, const std::vector<int64_t>& first_real);

// Adds the contributions of the fully masked query rows to dq, dk, dv (gradients wrt the rotated
// q and k the attention saw, i.e. before rope_backward). q, k, v as in forward; dout like out.
void hf_masked_rows_backward(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                             const Tensor& dq, const Tensor& dk, const Tensor& dv, float scale,
                             const std::vector<int64_t>& first_real);

}  // namespace model
}  // namespace qn
