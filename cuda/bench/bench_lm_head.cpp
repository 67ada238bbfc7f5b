// LM head + cross-entropy benchmark (qn_bench --filter lm_head): loss and dh for hidden rows
// h [N, H] and a Qwen2 head weight W [151936, H], bf16, side by side in one run:
//   online      model/lm_head_loss.h, the model's path: vocabulary chunks with an online softmax
//               (chunk width from default_vocab_chunk), never more than one [N x Vc] chunk;
//   full logits the plain way: z = h W^T as [N, V] f32, cross_entropy writing bf16 dlogits, then
//               dh = dlogits W (the layout of a head that materializes the logits).
// Shapes: the CPU uses Qwen2.5-0.5B's H = 896 and N = 256 (the bench model's batch), CUDA
// Qwen2.5-3B's H = 2048 and N = 4096 (--n sets N). FLOPs: 4 N H V (two GEMMs), as TFLOP/s and a
// fraction of the bf16 GEMM rate measured in the same run; the note gives the scratch bytes.
// Check (once, before timing): the online loss and dh against the full-logits path on the same
// inputs (both are checked against float64 in cuda/tests).
#include <cmath>
#include <cstdio>
#include <map>
#include <vector>
#include "bench.h"
#include "model/lm_head_loss.h"
#include "qn/ops/cross_entropy.h"
#include "qn/ops/elementwise.h"
#include "qn/ops/gemm.h"
#include "qn/parallel.h"

QN_BENCH(lm_head) {
  auto ctx = qn::open_context(qn::parse_device(opt.device));
  const bool cuda = ctx->device().type == qn::DeviceType::CUDA;
  const int64_t n = opt.n > 0 ? opt.n : cuda ? 4096 : 256, h = cuda ? 2048 : 896, v = 151936;
  const int iters = opt.iters > 0 ? opt.iters : cuda ? 10 : 1;
  const int reps = cuda ? 5 : 3;
  const qn::DType bf = qn::DType::BF16;
  const int64_t vc = qn::model::default_vocab_chunk(*ctx, std::min(n, qn::model::kHeadRowBlock));
  std::printf("lm_head bench on %s: N %lld, H %lld, V %lld bf16, vocabulary chunk %lld, %d CPU threads, median of %d x %d calls\n",
              ctx->device().str().c_str(), (long long)n, (long long)h, (long long)v, (long long)vc, qn::num_threads(),
              reps, iters);
  qn::Tensor hid = qnbench::random(ctx, bf, {n, h}, 1.f, 11), w = qnbench::random(ctx, bf, {v, h}, 0.1f, 12);
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<int32_t>((i * 7919) % v);
  qn::Tensor labels = qn::Tensor::empty(ctx, qn::DType::I32, {n});
  ctx->copy_from_host(labels.raw(), y.data(), y.size() * 4);
  qn::Tensor ls = qn::Tensor::empty(ctx, qn::DType::F32, {1}), cnt = qn::Tensor::empty(ctx, qn::DType::I32, {1});
  qn::Tensor dh = qn::Tensor::empty(ctx, bf, {n, h}), dh_ref = qn::Tensor::empty(ctx, bf, {n, h});
  qn::Tensor row_loss = qn::Tensor::empty(ctx, qn::DType::F32, {n});
  const float gs = 1.f / n;

  std::map<std::string, qn::Tensor> scratch;  // grown on demand, kept between calls (as the model's workspace)
  double online_bytes = 0;
  auto online = [&] {
    qn::fill(*ctx, qn::FillArgs{ls, 0});
    qn::fill(*ctx, qn::FillArgs{cnt, 0});
    qn::model::LmHeadLossArgs a;
    a.hidden = hid, a.weight = w, a.labels = labels, a.row_loss = row_loss, a.loss_sum = ls, a.count = cnt;
    a.dx = dh, a.grad_scale = gs, a.vocab_chunk = vc, a.row_block = qn::model::kHeadRowBlock;
    qn::model::lm_head_loss(*ctx, a, [&](const std::string& role, qn::DType dt, const qn::Shape& s) {
      qn::Tensor& t = scratch[role];
      const int64_t need = qn::shape_numel(s);
      if (!t.defined() || t.dtype() != dt || t.numel() < need) {
        t = qn::Tensor::empty(ctx, dt, {need});
        online_bytes = 0;
        for (const auto& kv : scratch) online_bytes += static_cast<double>(kv.second.nbytes());
      }
      return t.slice_rows(0, need).reshape(s);
    });
  };
  qn::Tensor z = qn::Tensor::empty(ctx, qn::DType::F32, {n, v}), dl = qn::Tensor::empty(ctx, bf, {n, v});
  qn::Tensor ls_ref = qn::Tensor::empty(ctx, qn::DType::F32, {1}), cnt_ref = qn::Tensor::empty(ctx, qn::DType::I32, {1});
  auto full = [&] {
    qn::fill(*ctx, qn::FillArgs{ls_ref, 0});
    qn::fill(*ctx, qn::FillArgs{cnt_ref, 0});
    qn::GemmArgs f;
    f.a = hid, f.b = w, f.c = z, f.trans_b = true;
    qn::gemm(*ctx, f);
    qn::CrossEntropyArgs ce{z, labels, ls_ref, cnt_ref, qn::Tensor(), gs};
    ce.dlogits = dl;
    qn::cross_entropy(*ctx, ce);
    qn::GemmArgs b;
    b.a = dl, b.b = w, b.c = dh_ref;
    qn::gemm(*ctx, b);
  };
  // ---- check ----
  online();
  full();
  qnbench::Err err = qnbench::compare(dh, dh_ref);
  err.merge(qnbench::compare(qnbench::to_floats(ls), qnbench::to_floats(ls_ref)));
  // ---- timing ----
  const double flops = 4.0 * n * h * v;
  const double gemm = qnbench::gemm_rate_bf16(ctx);
  const qnbench::Timing to = qnbench::time_stats(*ctx, reps, iters, online);
  const qnbench::Timing tf = qnbench::time_stats(*ctx, reps, iters, full);
  const double full_bytes = static_cast<double>(z.nbytes() + dl.nbytes());
  char note_o[160], note_f[160];
  std::snprintf(note_o, sizeof note_o, "scratch %.1f MB; vs full logits: %s; %.2fx its speed", online_bytes / 1e6,
                qnbench::err_note(err).c_str(), tf.median / to.median);
  std::snprintf(note_f, sizeof note_f, "scratch %.1f MB (f32 logits + bf16 dlogits)", full_bytes / 1e6);
  qnbench::Row ro{"online, vocabulary chunks (loss + dh)", 0, to.median, note_o, flops};
  qnbench::Row rf{"full logits + cross_entropy (loss + dh)", 0, tf.median, note_f, flops};
  char title[200];
  std::snprintf(title, sizeof title, "lm_head (4 N H V FLOPs; of gemm: bf16 GEMM %s at %.3f TFLOP/s, same run)",
                cuda ? "8192^3" : "1024x2048x2048", gemm / 1e12);
  qnbench::print_flop_rows(title, {ro, rf}, gemm);
  return 0;
}
