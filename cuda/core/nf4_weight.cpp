// Backend-independent NF4 helpers: quantize a weight tensor into an Nf4Weight (see qn/ops/nf4.h).
#include "qn/ops/nf4.h"

namespace qn {

Tensor nf4_dynamic_map_tensor(const std::shared_ptr<Context>& ctx) {
  Tensor t = Tensor::empty(ctx, DType::F32, {256});
  ctx->copy_from_host(t.raw(), kDynamicMap8, sizeof(kDynamicMap8));
  return t;
}

Nf4Weight nf4_quantize_weight(const Tensor& w, int blocksize, bool double_quant, const std::string& name) {
  QN_CHECK(w.defined(), Arg, "nf4_quantize_weight: weight is missing");
  QN_CHECK(w.ndim() == 1 || w.ndim() == 2, Shape,
           "nf4_quantize_weight: weight must be 1-D or 2-D, got " + shape_str(w.shape()) +
               (name.empty() ? "" : " (tensor '" + name + "')"));
  const auto& ctx = w.ctx_ptr();
  Nf4Weight q;
  q.rows = w.ndim() == 2 ? w.dim(0) : 1;
  q.cols = w.ndim() == 2 ? w.dim(1) : w.dim(0);
  q.blocksize = blocksize;
  const int64_t n = w.numel();
  QN_CHECK(nf4_blocksize_ok(blocksize), Arg,
           "nf4_quantize_weight: blocksize must be a power of two in [32, 4096], got " + std::to_string(blocksize));
  const int64_t nb = nf4_num_blocks(n, blocksize);
  q.codes = Tensor::empty(ctx, DType::U8, {(n + 1) / 2});
  Tensor absmax = Tensor::empty(ctx, DType::F32, {nb});
  nf4_quantize(*ctx, Nf4QuantizeArgs{w, q.codes, absmax, blocksize, name});
  q.nested = double_quant;
  if (!double_quant) {
    q.absmax = absmax;
    return q;
  }
  q.nested_blocksize = kNf4NestedBlocksize;
  q.absmax_q = Tensor::empty(ctx, DType::U8, {nb});
  q.nested_absmax = Tensor::empty(ctx, DType::F32, {nf4_num_blocks(nb, q.nested_blocksize)});
  Tensor offset = Tensor::empty(ctx, DType::F32, {1});
  nf4_double_quant(*ctx, Nf4DoubleQuantArgs{absmax, q.absmax_q, q.nested_absmax, offset, q.nested_blocksize});
  q.nested_map = nf4_dynamic_map_tensor(ctx);
  ctx->copy_to_host(&q.nested_offset, offset.raw(), sizeof(float));  // waits for the stream
  return q;
}

}  // namespace qn
