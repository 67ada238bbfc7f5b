// The LM head's loss over vocabulary chunks (see lm_head_loss.h).
#include "model/lm_head_loss.h"
#include <algorithm>
#include <cstdlib>
#include "qn/error.h"
#include "qn/ops/cross_entropy_online.h"
#include "qn/ops/gemm.h"

namespace qn {
namespace model {

int64_t default_vocab_chunk(const Context& ctx, int64_t rows) {
  if (const char* e = std::getenv("QN_MODEL_HEAD_VOCAB_CHUNK"))
    if (std::atoll(e) > 0) return std::atoll(e);
  int64_t bytes = ctx.device().type == DeviceType::CPU ? 4ll << 20 : 128ll << 20;
  if (const char* e = std::getenv("QN_MODEL_HEAD_CHUNK_MB"))
    if (std::atof(e) > 0) bytes = static_cast<int64_t>(std::atof(e) * (1 << 20));
  return std::max<int64_t>(128, bytes / (std::max<int64_t>(rows, 1) * 4) / 64 * 64);
}

void lm_head_loss(Context& ctx, const LmHeadLossArgs& a, const ScratchFn& scratch, const TickFn& tick) {
  QN_CHECK(a.hidden.ndim() == 2 && a.weight.ndim() == 2 && a.hidden.dim(1) == a.weight.dim(1), Shape,
           "lm_head_loss: hidden " + shape_str(a.hidden.shape()) + " and weight " + shape_str(a.weight.shape()) +
               " must be [N, H] and [V, H]");
  QN_CHECK(a.vocab_chunk > 0 && a.row_block > 0, Arg, "lm_head_loss: vocab_chunk and row_block must be positive");
  const int64_t n = a.hidden.dim(0), H = a.hidden.dim(1), V = a.weight.dim(0);
  const bool grad = a.dx.defined();
  const DType pdt = grad ? a.dx.dtype() : DType::F32;
  auto note = [&](const char* what) {
    if (tick) tick(what);
  };
  Tensor row_max = scratch("H.max", DType::F32, {n}), row_sum = scratch("H.sum", DType::F32, {n});
  Tensor target = scratch("H.zy", DType::F32, {n});
  const int64_t vc = std::min(V, a.vocab_chunk);
  for (int64_t r0 = 0; r0 < n; r0 += a.row_block) {
    const int64_t r1 = std::min(n, r0 + a.row_block), nb = r1 - r0;
    const Tensor h = a.hidden.slice_rows(r0, r1), y = a.labels.slice_rows(r0, r1);
    const Tensor mx = row_max.slice_rows(r0, r1), sm = row_sum.slice_rows(r0, r1), zy = target.slice_rows(r0, r1);
    Tensor acc = grad ? scratch("H.acc", DType::F32, {nb, H}) : Tensor();
    for (int64_t v0 = 0; v0 < V; v0 += vc) {
      const int64_t v1 = std::min(V, v0 + vc);
      const Tensor wc = a.weight.slice_rows(v0, v1);
      GemmArgs g;
      g.a = h;
      g.b = wc;
      g.c = scratch("H.z", DType::F32, {nb, v1 - v0});
      g.trans_b = true;
      gemm(ctx, g);
      note("head_gemm_fwd");
      CrossEntropyOnlineChunkArgs c{g.c, y, mx, sm, zy, v0, V};
      if (grad) {
        c.probs = scratch("H.p", pdt, {nb, v1 - v0});
        c.acc = acc;
      }
      cross_entropy_online_chunk(ctx, c);
      note("ce");
      if (!grad) continue;
      GemmArgs b;
      b.a = c.probs;
      b.b = wc;
      b.c = acc;
      b.beta = 1.f;
      gemm(ctx, b);
      note("head_gemm_bwd");
    }
    CrossEntropyOnlineFinishArgs f{y, mx, sm, zy, V, a.loss_sum, a.count, a.row_loss.slice_rows(r0, r1)};
    if (grad) {
      f.acc = acc;
      f.weight = a.weight;
      f.dx = a.rows.defined() ? a.dx : a.dx.slice_rows(r0, r1);
      f.rows = a.rows.defined() ? a.rows.slice_rows(r0, r1) : Tensor();
      f.grad_scale = a.grad_scale;
    }
    cross_entropy_online_finish(ctx, f);
    note("ce");
  }
}

}  // namespace model
}  // namespace qn
