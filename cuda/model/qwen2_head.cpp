// The Qwen2 model's head: final RMSNorm, LM head and cross-entropy (see qwen2_model.h).
//   Loss (training step, evalLoss): the rows that have a target are gathered, then the vocabulary is
//   walked in chunks with an online softmax (qn/ops/cross_entropy_online.h): per chunk the logits
//   GEMM z = h W[c]^T, the chunk op (running max / sum / target logit, P = exp(z - max)) and, with a
//   gradient, acc += P W[c]; the finish op gives the loss and dh = (acc / sum - W[y]) * scale. No
//   [tokens x vocab] logits or dlogits exist, only one [rows x Vc] chunk (DESIGN.md 4).
//   logits(): chunks of rows of full f32 logits, each copied to the host.
#include <algorithm>
#include <cstdlib>
#include <string>
#include "model/qwen2_model.h"
#include "model/lm_head_loss.h"
#include "model/qwen2_model_ctx.h"
#include "qn/ops/embedding.h"
#include "qn/ops/gemm.h"
#include "qn/ops/rmsnorm.h"

namespace qn {
namespace model {

namespace {

// logits(): rows per chunk of full logits (the whole [V, H] weight is packed once per chunk).
constexpr int64_t kLogitsChunkBytes = 64ll << 20;
constexpr int64_t kLogitsMinRows = 256;

// QN_MODEL_HEAD_CHUNK_MB (tuning knob, fractions allowed): bytes of one f32 logits chunk.
int64_t env_chunk_bytes() {
  static const int64_t bytes = [] {
    const char* e = std::getenv("QN_MODEL_HEAD_CHUNK_MB");
    const double mb = e ? std::atof(e) : 0.0;
    return mb > 0 ? static_cast<int64_t>(mb * (1 << 20)) : int64_t(0);
  }();
  return bytes;
}

}  // namespace

LossResult Qwen2Model::head_loss(const Ctx& c, const Tensor& x, const Tensor& dx, float grad_scale,
                                 std::vector<float>* logits_out) {
  Context& cx = *ctx_;
  const DType d = cfg_.compute;
  const int64_t m = c.m, H = cfg_.hidden;
  const bool grad = dx.defined();
  Tensor hf = ws("H.hf", d, {m, H});
  Tensor rstd = ws("H.rstd", DType::F32, {m});
  rmsnorm_forward(cx, RmsNormForwardArgs{x, final_norm_, hf, rstd, cfg_.rms_eps});
  tick("norm");
  Tensor dhf = grad ? ws("H.dhf", d, {m, H}) : Tensor();
  LossResult res = logits_out ? head_loss_logits(c, hf, dhf, logits_out)
                              : head_loss_online(c, hf, dhf, grad_scale);
  if (grad) rmsnorm_backward(cx, RmsNormBackwardArgs{x, final_norm_, rstd, dhf, dx, false, Tensor()});
  tick("norm");
  return res;
}

LossResult Qwen2Model::head_loss_online(const Ctx& c, const Tensor& hf, const Tensor& dhf, float grad_scale) {
  Context& cx = *ctx_;
  const DType d = cfg_.compute;
  const int64_t m = c.m, H = cfg_.hidden;
  const bool grad = dhf.defined();
  // The rows that have a target (padding and each sequence's last position have none), in order.
  std::vector<int32_t> rows, labels;
  for (int64_t r = 0; r < m; ++r) {
    const int32_t y = c.host_tgt[static_cast<size_t>(r)];
    if (y == -100) continue;
    rows.push_back(static_cast<int32_t>(r));
    labels.push_back(y);
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  LossResult res;
  res.tokens = c.tokens;
  if (grad && n < m) ctx_->memset(dhf.raw(), 0, dhf.nbytes());  // rows without a target: no gradient
  if (n == 0) return res;
  ctx_->memset(scalar_f32_.raw(), 0, 4);
  ctx_->memset(scalar_i32_.raw(), 0, 4);
  Tensor rows_t = ws("H.rows", DType::I32, {n}), labels_t = ws("H.labels", DType::I32, {n});
  ctx_->copy_from_host(rows_t.raw(), rows.data(), rows.size() * 4);
  ctx_->copy_from_host(labels_t.raw(), labels.data(), labels.size() * 4);
  Tensor hs = hf;
  if (n < m) {
    hs = ws("H.hsel", d, {n, H});
    embedding(cx, EmbeddingArgs{hf, rows_t, hs});  // gather the rows
  }
  Tensor row_loss = ws("H.rowloss", DType::F32, {n});
  LmHeadLossArgs h;
  h.hidden = hs;
  h.weight = cfg_.tie_embeddings ? embed_ : lm_head_;
  h.labels = labels_t;
  h.row_loss = row_loss;
  h.loss_sum = scalar_f32_;
  h.count = scalar_i32_;
  if (grad) {
    h.dx = dhf;
    h.rows = rows_t;
    h.grad_scale = grad_scale;
  }
  h.vocab_chunk = default_vocab_chunk(cx, std::min(n, kHeadRowBlock));
  h.row_block = kHeadRowBlock;
  lm_head_loss(cx, h, [this](const std::string& role, DType dt, const Shape& s) { return ws(role, dt, s); },
               [this](const char* what) { tick(what); });
  // The loss in double, in row order, on the host (the same sum for any backend and chunking).
  std::vector<float> rl(static_cast<size_t>(n));
  ctx_->copy_to_host(rl.data(), row_loss.raw(), rl.size() * 4);
  for (float v : rl) res.loss_sum += v;
  return res;
}

LossResult Qwen2Model::head_loss_logits(const Ctx& c, const Tensor& hf, const Tensor& dhf,
                                        std::vector<float>* logits_out) {
  if (dhf.defined() || c.tgt.defined())
    fail(ErrorCode::Internal, "Model: logits() runs without targets or gradients");
  Context& cx = *ctx_;
  const int64_t m = c.m, V = cfg_.vocab;
  const Tensor& W = cfg_.tie_embeddings ? embed_ : lm_head_;
  const int64_t chunk = std::max<int64_t>(
      1, std::min<int64_t>(m, env_chunk_bytes() ? env_chunk_bytes() / (V * 4)
                                                : std::max(kLogitsChunkBytes / (V * 4), kLogitsMinRows)));
  logits_out->resize(static_cast<size_t>(m * V));
  for (int64_t r0 = 0; r0 < m; r0 += chunk) {
    const int64_t r1 = std::min(m, r0 + chunk);
    Tensor lg = ws("H.logits", DType::F32, {r1 - r0, V});
    GemmArgs g;
    g.a = hf.slice_rows(r0, r1);
    g.b = W;
    g.c = lg;
    g.trans_b = true;
    gemm(cx, g);
    tick("head_gemm_fwd");
    ctx_->copy_to_host(logits_out->data() + r0 * V, lg.raw(), lg.nbytes());
  }
  workspace_.erase("H.logits");  // up to 155 MB that training and evalLoss never use
  return LossResult();
}

}  // namespace model
}  // namespace qn
