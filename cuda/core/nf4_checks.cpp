// Argument validation for the nf4 ops (shared by CPU and CUDA), see qn/ops/nf4.h.
#include "qn/ops/nf4.h"
#include <cmath>

namespace qn {
namespace {

std::string num(int64_t v) { return std::to_string(v); }

void expect_numel(const Tensor& t, int64_t n, const char* op, const char* name) {
  QN_CHECK(t.defined(), Arg, std::string(op) + ": " + name + " is missing");
  QN_CHECK(t.numel() == n, Shape,
           std::string(op) + ": " + name + " must hold " + num(n) + " elements, got " + shape_str(t.shape()));
}

void expect_blocksize(int64_t bs, const char* op, const char* what) {
  QN_CHECK(nf4_blocksize_ok(bs), Arg,
           std::string(op) + ": " + what + " must be a power of two in [" + num(kNf4MinBlocksize) + ", " +
               num(kNf4MaxBlocksize) + "], got " + num(bs));
}

}  // namespace

void check_nf4_quantize(const Nf4QuantizeArgs& a) {
  const char* op = "nf4_quantize";
  QN_CHECK(a.src.defined(), Arg, "nf4_quantize: src is missing");
  const DType d = a.src.dtype();
  QN_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F16, DType,
           std::string("nf4_quantize: src must be f32, bf16 or f16, got ") + dtype_name(d) +
               (a.name.empty() ? "" : " (tensor '" + a.name + "')"));
  expect_blocksize(a.blocksize, op, "blocksize");
  const int64_t n = a.src.numel();
  QN_CHECK(n >= 1, Shape, "nf4_quantize: src is empty" + (a.name.empty() ? std::string() : " (tensor '" + a.name + "')"));
  expect_dtype(a.codes, DType::U8, op, "codes");
  expect_dtype(a.absmax, DType::F32, op, "absmax");
  expect_numel(a.codes, (n + 1) / 2, op, "codes");
  expect_numel(a.absmax, nf4_num_blocks(n, a.blocksize), op, "absmax");
  expect_same_context(a.src, a.codes, op);
  expect_same_context(a.src, a.absmax, op);
}

void check_nf4_double_quant(const Nf4DoubleQuantArgs& a) {
  const char* op = "nf4_double_quant";
  QN_CHECK(a.absmax.defined(), Arg, "nf4_double_quant: absmax is missing");
  expect_dtype(a.absmax, DType::F32, op, "absmax");
  expect_blocksize(a.nested_blocksize, op, "nested_blocksize");
  const int64_t nb = a.absmax.numel();
  QN_CHECK(nb >= 1, Shape, "nf4_double_quant: absmax is empty");
  expect_dtype(a.absmax_q, DType::U8, op, "absmax_q");
  expect_dtype(a.nested_absmax, DType::F32, op, "nested_absmax");
  expect_dtype(a.offset, DType::F32, op, "offset");
  expect_numel(a.absmax_q, nb, op, "absmax_q");
  expect_numel(a.nested_absmax, nf4_num_blocks(nb, a.nested_blocksize), op, "nested_absmax");
  expect_numel(a.offset, 1, op, "offset");
  expect_same_context(a.absmax, a.absmax_q, op);
  expect_same_context(a.absmax, a.nested_absmax, op);
  expect_same_context(a.absmax, a.offset, op);
}

void check_nf4_double_dequant(const Nf4DoubleDequantArgs& a) {
  const char* op = "nf4_double_dequant";
  QN_CHECK(a.absmax_q.defined(), Arg, "nf4_double_dequant: absmax_q is missing");
  expect_dtype(a.absmax_q, DType::U8, op, "absmax_q");
  expect_blocksize(a.nested_blocksize, op, "nested_blocksize");
  const int64_t nb = a.absmax_q.numel();
  expect_dtype(a.nested_absmax, DType::F32, op, "nested_absmax");
  expect_dtype(a.nested_map, DType::F32, op, "nested_map");
  expect_dtype(a.absmax, DType::F32, op, "absmax");
  expect_numel(a.nested_absmax, nf4_num_blocks(nb, a.nested_blocksize), op, "nested_absmax");
  expect_numel(a.nested_map, 256, op, "nested_map");
  expect_numel(a.absmax, nb, op, "absmax");
  expect_same_context(a.absmax_q, a.nested_absmax, op);
  expect_same_context(a.absmax_q, a.nested_map, op);
  expect_same_context(a.absmax_q, a.absmax, op);
}

void check_nf4_weight(const Nf4Weight& w, const char* op) {
  QN_CHECK(w.rows >= 1 && w.cols >= 1, Shape,
           std::string(op) + ": weight shape [" + num(w.rows) + ", " + num(w.cols) + "] is empty or negative");
  // rows * cols (Nf4Weight::numel) must not wrap: at most 2^62 elements, as Tensor::empty allows
  QN_CHECK(w.rows <= (int64_t(1) << 62) / w.cols, Shape,
           std::string(op) + ": weight shape [" + num(w.rows) + ", " + num(w.cols) + "] has too many elements");
  expect_blocksize(w.blocksize, op, "weight blocksize");
  const int64_t n = w.numel(), nb = w.nblocks();
  expect_dtype(w.codes, DType::U8, op, "weight codes");
  expect_numel(w.codes, (n + 1) / 2, op, "weight codes");
  if (w.nested) {
    expect_blocksize(w.nested_blocksize, op, "weight nested_blocksize");
    expect_dtype(w.absmax_q, DType::U8, op, "weight absmax_q");
    expect_numel(w.absmax_q, nb, op, "weight absmax_q");
    expect_dtype(w.nested_absmax, DType::F32, op, "weight nested_absmax");
    expect_numel(w.nested_absmax, nf4_num_blocks(nb, w.nested_blocksize), op, "weight nested_absmax");
    expect_dtype(w.nested_map, DType::F32, op, "weight nested_map");
    expect_numel(w.nested_map, 256, op, "weight nested_map");
    expect_same_context(w.codes, w.absmax_q, op);
    expect_same_context(w.codes, w.nested_absmax, op);
    expect_same_context(w.codes, w.nested_map, op);
  } else {
    expect_dtype(w.absmax, DType::F32, op, "weight absmax");
    expect_numel(w.absmax, nb, op, "weight absmax");
    expect_same_context(w.codes, w.absmax, op);
  }
}

void check_nf4_dequantize(const Nf4DequantizeArgs& a) {
  const char* op = "nf4_dequantize";
  check_nf4_weight(a.w, op);
  QN_CHECK(a.out.defined(), Arg, "nf4_dequantize: out is missing");
  const DType d = a.out.dtype();
  QN_CHECK(d == DType::F32 || d == DType::BF16, DType,
           std::string("nf4_dequantize: out must be f32 or bf16, got ") + dtype_name(d));
  expect_numel(a.out, a.w.numel(), op, "out");
  expect_same_context(a.w.codes, a.out, op);
}

}  // namespace qn

namespace qn {

void nf4_fail_nonfinite(const std::string& name, const Shape& shape, int64_t index, float value) {
  std::string where = "element " + std::to_string(index);
  if (shape.size() >= 2) {  // the multi-index, row-major
    std::vector<int64_t> idx(shape.size());
    int64_t rest = index;
    for (size_t i = shape.size(); i-- > 0;) {
      const int64_t d = shape[i] > 0 ? shape[i] : 1;
      idx[i] = rest % d;
      rest /= d;
    }
    where += " " + shape_str(idx);
  }
  const char* what = value != value ? "nan" : value > 0 ? "inf" : "-inf";
  fail(ErrorCode::NonFinite, "nf4_quantize: tensor '" + (name.empty() ? std::string("<unnamed>") : name) +
                                 "' has a non-finite value (" + what + ") at " + where + "; cannot quantize it");
}

void nf4_check_absmax_finite(const float* absmax, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = absmax[i];
    if (!std::isfinite(v)) {
      const char* what = v != v ? "nan" : v > 0 ? "inf" : "-inf";
      fail(ErrorCode::NonFinite, "nf4_double_quant: absmax has a non-finite value (" + std::string(what) + ") at element " +
                                     std::to_string(i) + "; cannot quantize it");
    }
  }
}

}  // namespace qn
