// CPU LoRA linear (see qn/ops/lora_linear.h), built on the blocked GEMM driver (gemm_driver.h)
// with custom packers and epilogues, so neither a dequantized W nor a separate pass over y exists:
//
// forward   u = s * xd A^T                  small product, fp32 out (lora_rank_kernels.h on bf16
//                                            activations; otherwise a GEMM with x packed through
//                                            the dropout mask)
//           y = [x | u] [W | B]^T + b        ONE GEMM over K = in + r (DESIGN.md section 5): the A
//                                            panels hold x then u, the B panels hold W (NF4 tiles
//                                            dequantized straight into them) then B
// backward  dB += dy^T u                    small products, fp32 (as u)
//           g = s * dy B
//           dA += g^T xd                    x packed through the mask
//           dx (+)= [dy | g] [W ; A]        ONE GEMM over K = out + r when p == 0; with dropout the
//                                            g A term is masked, so it is added per tile in the
//                                            epilogue of dy W (a K = r product on the finished tile)
// Precision: with bf16 x/dy and an NF4 or bf16 W every GEMM runs on bf16 panels (vdpbf16ps; u, g,
// A, B and the dropped-out x rounded to bf16 in their panels, as the GPU does), including the
// small LoRA ones (dB, g, dA: ~25% faster than fp32 panels); otherwise in fp32. fp32 accumulation
// everywhere.
#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>
#if defined(__x86_64__)
#include <cpuid.h>
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif
#include "gemm_driver.h"
#include "lora_rank_kernels.h"
#include "nf4_panels.h"
#include "qn/cpu_features.h"
#include "qn/parallel.h"
#include "qn/half.h"
#include "qn/ops/lora_linear.h"
#include "qn/ops/nf4.h"

namespace qn {
namespace cpu {
namespace {

using gemm_impl::EpilogueFn;
using gemm_impl::Format;
using gemm_impl::MatSrc;
using gemm_impl::PackFn;
using gemm_impl::Panel;
using gemm_impl::Problem;

std::vector<float> bias_f32(const Tensor& b) {
  std::vector<float> v;
  if (!b.defined()) return v;
  v.resize(static_cast<size_t>(b.numel()));
  if (b.dtype() == DType::F32) {
    std::memcpy(v.data(), b.raw(), v.size() * sizeof(float));
  } else {
    const uint16_t* h = b.data<uint16_t>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_to_f32(h[i]);
  }
  return v;
}

// ---- dropout factors -----------------------------------------------------------------------------
#if defined(__x86_64__)
bool has_avx512dq() {
  static const bool v = [] {
    unsigned a, b, c, d;
    const CpuFeatures& f = cpu_features();
    return f.avx512f && f.avx512vl && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 17));
  }();
  return v;
}

// The splitmix64 mask of lora_linear.h, 8 indices per step (vpmullq).
__attribute__((target("avx512f,avx512dq,avx512vl"))) void dropout_mults_avx512(const LoraDropout& dr, uint64_t idx0,
                                                                               int n, float* out) {
  const __m512i golden = _mm512_set1_epi64(static_cast<long long>(0x9E3779B97F4A7C15ull));
  const __m512i c1 = _mm512_set1_epi64(static_cast<long long>(0xBF58476D1CE4E5B9ull));
  const __m512i c2 = _mm512_set1_epi64(static_cast<long long>(0x94D049BB133111EBull));
  const __m512i key = _mm512_set1_epi64(static_cast<long long>(dr.key));
  const __m512i thr = _mm512_set1_epi64(dr.threshold);
  const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  const __m256 inv = _mm256_set1_ps(dr.inv_keep);
  for (int j = 0; j < n; j += 8) {
    const __m512i idx = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(idx0 + j)), lane);
    __m512i z = _mm512_add_epi64(key, _mm512_mullo_epi64(idx, golden));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), c1);
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), c2);
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
    const __mmask8 keep = _mm512_cmpge_epu64_mask(_mm512_srli_epi64(z, 40), thr);
    const __mmask8 tail = n - j >= 8 ? __mmask8(0xff) : __mmask8((1u << (n - j)) - 1);
    _mm256_mask_storeu_ps(out + j, tail, _mm256_maskz_mov_ps(keep, inv));
  }
}
#endif

// out[j] = mult(idx0 + j), j < n.
void dropout_mults(const LoraDropout& dr, uint64_t idx0, int n, float* out) {
#if defined(__x86_64__)
  if (has_avx512dq()) return dropout_mults_avx512(dr, idx0, n, out);
#endif
  for (int j = 0; j < n; ++j) out[j] = dr.mult(idx0 + j);
}

// t[j] = base[j] + mult[j] * sum_q g[q] * A[q * lda + j], j < n (n <= 64): the masked LoRA term
// of dx added to a finished tile row.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) void masked_lora_row_avx512(const float* base, const float* g, const float* A,
                                                               int64_t lda, int64_t r, const float* mult, int n,
                                                               float* t) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const int nv = (n + 15) / 16;
  __mmask16 m[4];
  for (int v = 0; v < 4; ++v) {
    const int left = n - 16 * v;
    m[v] = left >= 16 ? __mmask16(0xffff) : left > 0 ? __mmask16((1u << left) - 1) : __mmask16(0);
  }
  for (int64_t q = 0; q < r; ++q) {
    const __m512 gq = _mm512_set1_ps(g[q]);
    const float* a = A + q * lda;
    for (int v = 0; v < nv; ++v) acc[v] = _mm512_fmadd_ps(gq, _mm512_maskz_loadu_ps(m[v], a + 16 * v), acc[v]);
  }
  for (int v = 0; v < nv; ++v) {
    const __m512 b = _mm512_maskz_loadu_ps(m[v], base + 16 * v), f = _mm512_maskz_loadu_ps(m[v], mult + 16 * v);
    _mm512_mask_storeu_ps(t + 16 * v, m[v], _mm512_fmadd_ps(f, acc[v], b));
  }
}
#endif

void masked_lora_row(const float* base, const float* g, const float* A, int64_t lda, int64_t r, const float* mult, int n,
                     float* t) {
#if defined(__x86_64__)
  if (cpu_features().avx512f) return masked_lora_row_avx512(base, g, A, lda, r, mult, n, t);
#endif
  float acc[64] = {};
  for (int64_t q = 0; q < r; ++q)
    for (int j = 0; j < n; ++j) acc[j] += g[q] * A[q * lda + j];
  for (int j = 0; j < n; ++j) t[j] = base[j] + mult[j] * acc[j];
}

// Packs like gemm_impl::pack, then multiplies each element by the dropout factor of its flat index
// in x ([M, in] row-major): (r, k) is x[r * ld + k] when src.k_contiguous, else x[k * ld + r].
PackFn dropout_packer(const MatSrc& src, const LoraDropout& drop) {
  return [src, drop](int64_t r0, int rows, const Panel& P, void* dst) {
    gemm_impl::pack(src, r0, rows, P, dst);
    std::vector<float> m(static_cast<size_t>(std::max(P.kc, rows)));
    auto scale = [&](int kk, int i, float f) {
      if (P.fmt == Format::F32) {
        static_cast<float*>(dst)[kk * P.R + i] *= f;
      } else {
        uint16_t& h = static_cast<uint16_t*>(dst)[(kk >> 1) * 2 * P.R + 2 * i + (kk & 1)];
        h = f32_to_bf16(bf16_to_f32(h) * f);
      }
    };
    if (src.k_contiguous) {  // consecutive indices along k
      for (int i = 0; i < rows; ++i) {
        dropout_mults(drop, static_cast<uint64_t>((r0 + i) * src.ld + P.k0), P.kc, m.data());
        for (int kk = 0; kk < P.kc; ++kk) scale(kk, i, m[kk]);
      }
    } else {  // consecutive indices along r
      for (int kk = 0; kk < P.kc; ++kk) {
        dropout_mults(drop, static_cast<uint64_t>((P.k0 + kk) * src.ld + r0), rows, m.data());
        for (int i = 0; i < rows; ++i) scale(kk, i, m[i]);
      }
    }
  };
}

thread_local std::vector<uint8_t> t_tile;  // one dequantized NF4 tile per thread

// Packs the base weight part k in [0, kw) of a B panel. Panel rows r are output columns j; for the
// forward (x W^T) j is a row of W and k a column (w_transposed = false); for dx = dy W, j is a
// column of W and k a row (w_transposed = true).
void pack_weight(const LoraLinear& L, bool w_transposed, DType tile_dt, int64_t r0, int rows, const Panel& P,
                 int64_t kw, void* dst) {
  const int64_t ka = std::max<int64_t>(P.k0, 0), kb = std::min<int64_t>(P.k0 + P.kc, kw);
  if (kb <= ka) return;
  if (!L.nf4) {
    const int64_t in = L.weight.dim(1);
    gemm_impl::pack_part(MatSrc{L.weight.raw(), L.weight.dtype(), in, !w_transposed}, r0, rows, P, ka, kb, 0, dst);
    return;
  }
  const size_t es = dtype_size(tile_dt);
  t_tile.resize(static_cast<size_t>(rows) * (kb - ka) * es);
  if (!w_transposed && tile_dt == DType::BF16 && P.fmt == gemm_impl::Format::BF16Pair && (ka - P.k0) % 2 == 0 &&
      P.R >= nf4_panels::kPanelCols && nf4_panels::can_decode_rows(*L.nf4, ka, kb, rows)) {
    // W rows [r0, r0 + 64), cols [ka, kb) decoded and transposed in registers straight into the panel
    nf4_panels::decode_rows_transposed(*L.nf4, r0, ka, kb, P.R,
                                       static_cast<uint16_t*>(dst) + ((ka - P.k0) / 2) * 2 * P.R);
  } else if (!w_transposed) {  // W rows [r0, r0 + rows), cols [ka, kb): a k-contiguous tile
    nf4_dequantize_tile(*L.nf4, r0, r0 + rows, ka, kb, tile_dt, t_tile.data(), kb - ka);
    gemm_impl::pack_part(MatSrc{t_tile.data(), tile_dt, kb - ka, true}, 0, rows, P, ka, kb, ka, dst);
  } else if (tile_dt == DType::BF16 && P.fmt == gemm_impl::Format::BF16Pair && (ka - P.k0) % 2 == 0 &&
             P.R >= nf4_panels::kPanelCols && nf4_panels::can_decode_transposed(*L.nf4, r0, rows)) {
    // W rows [ka, kb) decoded in pairs straight into the panel
    nf4_panels::decode_pairs_transposed(*L.nf4, ka, kb, r0, P.R,
                                        static_cast<uint16_t*>(dst) + ((ka - P.k0) / 2) * 2 * P.R);
  } else {  // W rows [ka, kb), cols [r0, r0 + rows): an r-contiguous tile
    nf4_dequantize_tile(*L.nf4, ka, kb, r0, r0 + rows, tile_dt, t_tile.data(), rows);
    gemm_impl::pack_part(MatSrc{t_tile.data(), tile_dt, rows, false}, 0, rows, P, ka, kb, ka, dst);
  }
}

// A K-concatenated operand: `first` fills k in [0, k1), then `second` (an r x k2 matrix, k-contiguous,
// ld k2) fills k in [k1, k1 + k2).
PackFn concat_packer(std::function<void(int64_t, int, const Panel&, void*)> first, int64_t k1, const MatSrc& second,
                     int64_t k2) {
  return [first, k1, second, k2](int64_t r0, int rows, const Panel& P, void* dst) {
    if (rows < P.R || P.kc_pad > P.kc) gemm_impl::zero_panel(P, dst);
    first(r0, rows, P, dst);
    if (k2) gemm_impl::pack_part(second, r0, rows, P, k1, k1 + k2, k1, dst);
  };
}

// Whether the big GEMMs run on bf16 panels.
bool use_bf16(const LoraLinear& L, DType xdt) {
  return xdt == DType::BF16 && (L.nf4 != nullptr || L.weight.dtype() == DType::BF16);
}

// Whether the rank-r products run as lora_rank kernels (bf16 activations and AVX512_BF16).
bool use_rank_kernels(const LoraLinear& L, DType xdt, int64_t r) {
  return use_bf16(L, xdt) && lora_rank::available(r);
}

thread_local std::vector<uint16_t> t_xd;  // x through the dropout mask, bf16

// x (bf16 [m, in]) itself, or x through the dropout mask as bf16 (each value rounded once, as the
// dropout packer does).
const uint16_t* dropped_x(const Tensor& x, int64_t m, int64_t in, const LoraDropout& drop) {
  const uint16_t* xs = x.data<uint16_t>();
  if (!drop.on) return xs;
  t_xd.resize(static_cast<size_t>(m * in));
  uint16_t* xd = t_xd.data();
  parallel_for(m, 4, [&](int64_t t0, int64_t t1) {
    std::vector<float> mult(static_cast<size_t>(in));
    for (int64_t t = t0; t < t1; ++t) {
      dropout_mults(drop, static_cast<uint64_t>(t * in), static_cast<int>(in), mult.data());
      for (int64_t c = 0; c < in; ++c) xd[t * in + c] = f32_to_bf16(bf16_to_f32(xs[t * in + c]) * mult[c]);
    }
  });
  return xd;
}

}  // namespace

void lora_linear_forward(Context&, const LoraLinearForwardArgs& a) {
  const LoraLinearDims d = check_lora_linear_forward(a);
  if (d.m == 0) return;
  const LoraLinear& L = a.layer;
  const DType xdt = a.x.dtype();
  const LoraDropout drop = lora_dropout_of(L);
  const MatSrc xs{a.x.raw(), xdt, d.in, true};

  if (d.lora() && use_rank_kernels(L, xdt, d.r)) {  // u = s * xd A^T, fp32
    lora_rank::PairPanel pa;
    lora_rank::pack_panel_from_rows(L.lora_a.data<float>(), d.in, d.r, d.in, pa);
    lora_rank::rows_times_panel(dropped_x(a.x, d.m, d.in, drop), d.in, d.m, pa, L.scale, a.u.data<float>(), d.r);
  } else if (d.lora()) {
    Problem pu;
    pu.m = d.m;
    pu.n = d.r;
    pu.k = d.in;
    pu.bf16 = use_bf16(L, xdt);
    pu.pack_a = drop.on ? dropout_packer(xs, drop) : gemm_impl::packer(xs);
    pu.pack_b = gemm_impl::packer(MatSrc{L.lora_a.raw(), DType::F32, d.in, true});
    pu.epilogue = gemm_impl::store_epilogue(a.u.raw(), DType::F32, d.r, L.scale, 0.f, nullptr);
    gemm_impl::run(pu);
  }

  // y = [x | u] [W | B]^T + b
  const bool bf16 = use_bf16(L, xdt);
  const DType tile_dt = bf16 ? DType::BF16 : DType::F32;
  const std::vector<float> bias = bias_f32(L.bias);
  const MatSrc us{d.lora() ? a.u.raw() : nullptr, DType::F32, d.r, true};
  const MatSrc bs{d.lora() ? L.lora_b.raw() : nullptr, DType::F32, d.r, true};
  const int64_t in = d.in, r = d.r;
  Problem py;
  py.m = d.m;
  py.n = d.out;
  py.k = in + r;
  py.bf16 = bf16;
  py.pack_a = concat_packer(
      [&](int64_t r0, int rows, const Panel& P, void* dst) { gemm_impl::pack_part(xs, r0, rows, P, 0, in, 0, dst); },
      in, us, r);
  py.pack_b = concat_packer(
      [&](int64_t r0, int rows, const Panel& P, void* dst) { pack_weight(L, false, tile_dt, r0, rows, P, in, dst); },
      in, bs, r);
  py.epilogue = gemm_impl::store_epilogue(a.y.raw(), xdt, d.out, 1.f, a.accumulate_y ? 1.f : 0.f,
                                          bias.empty() ? nullptr : bias.data());
  gemm_impl::run(py);
}

void lora_linear_backward(Context&, const LoraLinearBackwardArgs& a) {
  const LoraLinearDims d = check_lora_linear_backward(a);
  if (d.m == 0) return;
  const LoraLinear& L = a.layer;
  const DType xdt = a.x.dtype();
  const LoraDropout drop = lora_dropout_of(L);
  const int64_t m = d.m, in = d.in, out = d.out, r = d.r;
  std::vector<float> g;  // s * dy B, [M, r]
  const bool bf16 = use_bf16(L, xdt);

  if (d.lora() && use_rank_kernels(L, xdt, r)) {
    const uint16_t* dy = a.dy.data<uint16_t>();
    // dB += dy^T u
    lora_rank::reduce_over_rows(a.u.data<float>(), r, r, dy, out, m, out, 1.f, a.grad_b.data<float>(), r, true);
    // g = s * dy B
    g.resize(static_cast<size_t>(m * r));
    lora_rank::PairPanel pb;
    lora_rank::pack_panel_from_cols(L.lora_b.data<float>(), r, out, r, pb);
    lora_rank::rows_times_panel(dy, out, m, pb, L.scale, g.data(), r);
    // dA += g^T xd
    lora_rank::reduce_over_rows(g.data(), r, r, dropped_x(a.x, m, in, drop), in, m, in, 1.f, a.grad_a.data<float>(),
                                in, false);
  } else if (d.lora()) {
    // dB += dy^T u:  (i = o, k = t) of dy^T is dy[t, o]; (j, k = t) of u is u[t, j].
    Problem pb;
    pb.m = out;
    pb.n = r;
    pb.k = m;
    pb.bf16 = bf16;
    pb.pack_a = gemm_impl::packer(MatSrc{a.dy.raw(), xdt, out, false});
    pb.pack_b = gemm_impl::packer(MatSrc{a.u.raw(), DType::F32, r, false});
    pb.epilogue = gemm_impl::store_epilogue(a.grad_b.raw(), DType::F32, r, 1.f, 1.f, nullptr);
    gemm_impl::run(pb);
    // g = s * dy B:  (j, k = o) of B is B[o, j].
    g.resize(static_cast<size_t>(m * r));
    Problem pg;
    pg.m = m;
    pg.n = r;
    pg.k = out;
    pg.bf16 = bf16;
    pg.pack_a = gemm_impl::packer(MatSrc{a.dy.raw(), xdt, out, true});
    pg.pack_b = gemm_impl::packer(MatSrc{L.lora_b.raw(), DType::F32, r, false});
    pg.epilogue = gemm_impl::store_epilogue(g.data(), DType::F32, r, L.scale, 0.f, nullptr);
    gemm_impl::run(pg);
    // dA += g^T xd:  (i = q, k = t) of g^T is g[t, q]; (j = c, k = t) of xd is xd[t, c].
    const MatSrc xs{a.x.raw(), xdt, in, false};
    Problem pa;
    pa.m = r;
    pa.n = in;
    pa.k = m;
    pa.bf16 = bf16;
    pa.pack_a = gemm_impl::packer(MatSrc{g.data(), DType::F32, r, false});
    pa.pack_b = drop.on ? dropout_packer(xs, drop) : gemm_impl::packer(xs);
    pa.epilogue = gemm_impl::store_epilogue(a.grad_a.raw(), DType::F32, in, 1.f, 1.f, nullptr);
    gemm_impl::run(pa);
  }

  if (!a.dx.defined() || in == 0) return;
  // dx (+)= dy W + mask * (g A)
  const DType tile_dt = bf16 ? DType::BF16 : DType::F32;
  const bool concat = d.lora() && !drop.on;  // g A joins the GEMM along K
  const int64_t kr = concat ? r : 0;
  const MatSrc dys{a.dy.raw(), xdt, out, true};
  const MatSrc gs{g.data(), DType::F32, r, true};
  const MatSrc as{d.lora() ? L.lora_a.raw() : nullptr, DType::F32, in, false};
  Problem px;
  px.m = m;
  px.n = in;
  px.k = out + kr;
  px.bf16 = bf16;
  px.pack_a = concat_packer(
      [&](int64_t r0, int rows, const Panel& P, void* dst) { gemm_impl::pack_part(dys, r0, rows, P, 0, out, 0, dst); },
      out, gs, kr);
  px.pack_b = concat_packer(
      [&](int64_t r0, int rows, const Panel& P, void* dst) { pack_weight(L, true, tile_dt, r0, rows, P, out, dst); },
      out, as, kr);
  const float beta = a.accumulate_dx ? 1.f : 0.f;
  if (d.lora() && drop.on) {
    const float* A = L.lora_a.data<float>();
    const float* gp = g.data();
    void* dx = a.dx.raw();
    px.epilogue = [=, &drop](int64_t i0, int64_t j0, int mr, int nr, const float* tile, int64_t ld) {
      float t[64], mult[64];  // nr <= NR = 64 (also in the transposed path, where nr <= MR)
      for (int ii = 0; ii < mr; ++ii) {
        const int64_t i = i0 + ii;
        dropout_mults(drop, static_cast<uint64_t>(i * in + j0), nr, mult);
        masked_lora_row(tile + ii * ld, gp + i * r, A + j0, in, r, mult, nr, t);
        if (xdt == DType::F32)
          gemm_impl::finish_row_f32(static_cast<float*>(dx) + i * in + j0, t, nr, 1.f, beta, nullptr);
        else
          gemm_impl::finish_row_bf16(static_cast<uint16_t*>(dx) + i * in + j0, t, nr, 1.f, beta, nullptr);
      }
    };
  } else {
    px.epilogue = gemm_impl::store_epilogue(a.dx.raw(), xdt, in, 1.f, beta, nullptr);
  }
  gemm_impl::run(px);
}

}  // namespace cpu
}  // namespace qn
