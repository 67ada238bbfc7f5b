// Fully masked attention rows with transformers' eager semantics (see masked_rows.h).
#include "model/masked_rows.h"
#include "qn/error.h"
#include "qn/half.h"

namespace qn {
namespace model {

namespace {

// Rows [r0, r1) of a tensor viewed as [rows, cols] (rows = first dim product) to/from doubles.
std::vector<double> read_rows(Context& ctx, const Tensor& t, int64_t r0, int64_t r1, int64_t cols) {
  const size_t n = static_cast<size_t>((r1 - r0) * cols);
  std::vector<double> out(n);
  const size_t off = static_cast<size_t>(r0 * cols);
  if (t.dtype() == DType::F32) {
    std::vector<float> h(n);
    ctx.copy_to_host(h.data(), t.data<float>() + off, n * 4);
    for (size_t i = 0; i < n; ++i) out[i] = h[i];
  } else if (t.dtype() == DType::BF16) {
    std::vector<uint16_t> h(n);
    ctx.copy_to_host(h.data(), t.data<uint16_t>() + off, n * 2);
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(h[i]);
  } else {
    fail(ErrorCode::DType, "hf_masked_rows: tensors must be f32 or bf16");
  }
  return out;
}

void write_rows(Context& ctx, const Tensor& t, int64_t r0, int64_t cols, const std::vector<double>& v) {
  const size_t n = v.size();
  const size_t off = static_cast<size_t>(r0 * cols);
  if (t.dtype() == DType::F32) {
    std::vector<float> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = static_cast<float>(v[i]);
    ctx.copy_from_host(t.data<float>() + off, h.data(), n * 4);
  } else {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = f32_to_bf16(static_cast<float>(v[i]));
    ctx.copy_from_host(t.data<uint16_t>() + off, h.data(), n * 2);
  }
}

struct Dims {
  int64_t b, t, hq, hkv, d;
};

Dims dims_of(const Tensor& q, const Tensor& v) {
  QN_CHECK(q.ndim() == 4 && v.ndim() == 4, Shape, "hf_masked_rows: q/out and v must be [B, T, H, D]");
  return {q.dim(0), q.dim(1), q.dim(2), v.dim(2), q.dim(3)};
}

}  // namespace

void hf_masked_rows_forward(Context& ctx, const Tensor& v, const Tensor& out, const std::vector<int64_t>& first_real) {
  const Dims s = dims_of(out, v);
  const int64_t grp = s.hq / s.hkv, qc = s.hq * s.d, kc = s.hkv * s.d;
  for (int64_t b = 0; b < s.b; ++b) {
    const int64_t f = first_real[b];
    if (f <= 0) continue;
    const std::vector<double> vv = read_rows(ctx, v, b * s.t, (b + 1) * s.t, kc);
    std::vector<double> mean(static_cast<size_t>(kc), 0.0);
    for (int64_t j = 0; j < s.t; ++j)
      for (int64_t c = 0; c < kc; ++c) mean[c] += vv[j * kc + c];
    for (auto& x : mean) x /= static_cast<double>(s.t);
    std::vector<double> o(static_cast<size_t>(f * qc));
    for (int64_t i = 0; i < f; ++i)
      for (int64_t h = 0; h < s.hq; ++h)
        for (int64_t e = 0; e < s.d; ++e) o[i * qc + h * s.d + e] = mean[(h / grp) * s.d + e];
    write_rows(ctx, out, b * s.t, qc, o);
  }
}

void hf_masked_rows_backward(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                             const Tensor& dq, const Tensor& dk, const Tensor& dv, float scale,
                             const std::vector<int64_t>& first_real) {
  const Dims s = dims_of(q, v);
  const int64_t grp = s.hq / s.hkv, qc = s.hq * s.d, kc = s.hkv * s.d, D = s.d, T = s.t;
  const double invT = 1.0 / static_cast<double>(T);
  for (int64_t b = 0; b < s.b; ++b) {
    const int64_t f = first_real[b];
    if (f <= 0) continue;
    const int64_t r0 = b * T;
    const std::vector<double> qq = read_rows(ctx, q, r0, r0 + f, qc);
    const std::vector<double> go = read_rows(ctx, dout, r0, r0 + f, qc);
    const std::vector<double> kk = read_rows(ctx, k, r0, r0 + T, kc);
    const std::vector<double> vv = read_rows(ctx, v, r0, r0 + T, kc);
    std::vector<double> gq = read_rows(ctx, dq, r0, r0 + f, qc);
    std::vector<double> gk = read_rows(ctx, dk, r0, r0 + T, kc);
    std::vector<double> gv = read_rows(ctx, dv, r0, r0 + T, kc);
    std::vector<double> mean(static_cast<size_t>(kc), 0.0);
    for (int64_t j = 0; j < T; ++j)
      for (int64_t c = 0; c < kc; ++c) mean[c] += vv[j * kc + c] * invT;
    std::vector<double> ds(static_cast<size_t>(T));
    for (int64_t i = 0; i < f; ++i)
      for (int64_t h = 0; h < s.hq; ++h) {
        const int64_t g = h / grp;
        const double* gi = &go[i * qc + h * D];
        const double* qi = &qq[i * qc + h * D];
        double delta = 0;
        for (int64_t e = 0; e < D; ++e) delta += gi[e] * mean[g * D + e];
        for (int64_t j = 0; j < T; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < D; ++e) dot += gi[e] * vv[j * kc + g * D + e];
          ds[j] = (dot - delta) * invT;
        }
        for (int64_t j = 0; j < T; ++j)
          for (int64_t e = 0; e < D; ++e) {
            gv[j * kc + g * D + e] += gi[e] * invT;
            gq[i * qc + h * D + e] += scale * ds[j] * kk[j * kc + g * D + e];
            gk[j * kc + g * D + e] += scale * ds[j] * qi[e];
          }
      }
    write_rows(ctx, dq, r0, qc, gq);
    write_rows(ctx, dk, r0, kc, gk);
    write_rows(ctx, dv, r0, kc, gv);
  }
}

}  // namespace model
}  // namespace qn
