// CPU RoPE forward / backward, in place (see qn/ops/rope.h). cos/sin come from a table over the
// distinct positions 0..max (built once per call in parallel) when the positions are a small
// non-negative range, else per token. Tokens split across the pool; all heads of a token share
// one row of the table.
#include <algorithm>
#include <cmath>
#include <vector>
#include "float_rows.h"
#include "qn/ops/rope.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace {

// cos/sin of f32(pos * inv_freq[i]) for i < half, correctly rounded to f32, then to T's precision
// (bf16 storage uses bf16 cos/sin as transformers' cos.to(x.dtype) does).
template <typename T>
void cos_sin_row(int32_t pos, const float* inv_freq, int64_t half, float* c, float* s) {
  for (int64_t i = 0; i < half; ++i) {
    const float ang = static_cast<float>(pos) * inv_freq[i];
    c[i] = xf::round_to<T>(static_cast<float>(std::cos(static_cast<double>(ang))));
    s[i] = xf::round_to<T>(static_cast<float>(std::sin(static_cast<double>(ang))));
  }
}

// Rotates `heads` heads of one token. Forward: y1 = x1 c - x2 s, y2 = x2 c + x1 s; backward uses -s.
// Each product and the sum are rounded to T (identity for f32, torch's op-by-op bf16 for bf16).
template <typename T>
void rotate_token(T* x, int64_t heads, int64_t half, const float* c, const float* s, bool backward) {
  for (int64_t hd = 0; hd < heads; ++hd) {
    T* x1 = x + hd * 2 * half;
    T* x2 = x1 + half;
    for (int64_t i = 0; i < half; ++i) {
      const float a = xf::to_f32(x1[i]), b = xf::to_f32(x2[i]);
      const float si = backward ? -s[i] : s[i];
      const float ac = xf::round_to<T>(a * c[i]), bs = xf::round_to<T>(b * si);
      const float bc = xf::round_to<T>(b * c[i]), as = xf::round_to<T>(a * si);
      x1[i] = xf::from_f32<T>(ac - bs);
      x2[i] = xf::from_f32<T>(bc + as);
    }
  }
}

void rope_apply(const RopeArgs& a, bool backward, const char* op) {
  const RopeDims d = check_rope(a, op);
  if (d.rows == 0) return;
  const int64_t half = d.d / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  rope_inv_freq(a.theta, d.d, inv.data());
  const int32_t* pos = a.positions.data<int32_t>();
  int32_t pmin = pos[0], pmax = pos[0];
  for (int64_t r = 1; r < d.rows; ++r) pmin = std::min(pmin, pos[r]), pmax = std::max(pmax, pos[r]);
  const DType dt = a.q.defined() ? a.q.dtype() : a.k.dtype();
  const bool use_table = pmin >= 0 && static_cast<int64_t>(pmax) < d.rows + 4096;
  std::vector<float> tc, ts;
  xf::with_type(dt, [&](auto tt) {
    using T = decltype(tt);
    if (use_table) {
      const int64_t np = static_cast<int64_t>(pmax) + 1;
      tc.resize(static_cast<size_t>(np * half));
      ts.resize(static_cast<size_t>(np * half));
      parallel_for(np, 16, [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p)
          cos_sin_row<T>(static_cast<int32_t>(p), inv.data(), half, &tc[p * half], &ts[p * half]);
      });
    }
    T* q = a.q.defined() ? static_cast<T*>(a.q.raw()) : nullptr;
    T* k = a.k.defined() ? static_cast<T*>(a.k.raw()) : nullptr;
    const int64_t heads = d.hq + d.hkv;
    parallel_for(d.rows, std::max<int64_t>(1, 2048 / std::max<int64_t>(heads * d.d, 1)), [&](int64_t b, int64_t e) {
      std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
      for (int64_t r = b; r < e; ++r) {
        const float *cr, *sr;
        if (use_table) {
          cr = &tc[pos[r] * half];
          sr = &ts[pos[r] * half];
        } else {
          cos_sin_row<T>(pos[r], inv.data(), half, c.data(), s.data());
          cr = c.data();
          sr = s.data();
        }
        if (q) rotate_token(q + r * d.hq * d.d, d.hq, half, cr, sr, backward);
        if (k) rotate_token(k + r * d.hkv * d.d, d.hkv, half, cr, sr, backward);
      }
    });
  });
}

}  // namespace

void rope_forward(Context&, const RopeArgs& a) { rope_apply(a, false, "rope_forward"); }
void rope_backward(Context&, const RopeArgs& a) { rope_apply(a, true, "rope_backward"); }

}  // namespace cpu
}  // namespace qn

