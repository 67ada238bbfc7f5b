// CPU RoPE forward / backward, in place (see qn/ops/rope.h). cos/sin come from a table over the
// positions 0..max (built in parallel, kept for the next call with the same theta, head_dim and
// dtype) when the positions are a small non-negative range, else are computed per token. Tokens split across the pool; all heads of a token share
// one row of the table; the rotation loop is compiled per SIMD level (xf::parallel_simd).
#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <type_traits>
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

// cos/sin rows for positions 0..np-1 of one (theta, head_dim, storage type). The last table is
// kept (the 36 layers of a step all use the same positions) and reused while it covers np.
struct CosSinTable {
  double theta = 0;
  int64_t d = 0, np = 0;
  bool bf16 = false;
  std::vector<float> cos, sin;  // [np][d/2]
};

template <typename T>
std::shared_ptr<const CosSinTable> cos_sin_table(double theta, int64_t d, int64_t np, const float* inv) {
  static std::mutex mu;
  static std::shared_ptr<const CosSinTable> last;
  const bool bf16 = !std::is_same<T, float>::value;
  std::lock_guard<std::mutex> lock(mu);
  if (last && last->theta == theta && last->d == d && last->bf16 == bf16 && last->np >= np) return last;
  auto t = std::make_shared<CosSinTable>();
  const int64_t half = d / 2;
  t->theta = theta, t->d = d, t->np = np, t->bf16 = bf16;
  t->cos.resize(static_cast<size_t>(np * half));
  t->sin.resize(static_cast<size_t>(np * half));
  parallel_for(np, 16, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) cos_sin_row<T>(static_cast<int32_t>(p), inv, half, &t->cos[p * half], &t->sin[p * half]);
  });
  last = t;
  return last;
}

// Rotates `heads` heads of one token. Forward: y1 = x1 c - x2 s, y2 = x2 c + x1 s; backward uses -s.
// Each product and the sum are rounded to T (identity for f32, torch's op-by-op bf16 for bf16).
template <typename T>
QN_XF_INLINE void rotate_half(T* __restrict x1, T* __restrict x2, int64_t half, const float* __restrict c,
                              const float* __restrict s, float sign) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = xf::to_f32(x1[i]), b = xf::to_f32(x2[i]);
    const float si = sign * s[i];
    const float ac = xf::round_to<T>(a * c[i]), bs = xf::round_to<T>(b * si);
    const float bc = xf::round_to<T>(b * c[i]), as = xf::round_to<T>(a * si);
    x1[i] = xf::from_f32<T>(ac - bs);
    x2[i] = xf::from_f32<T>(bc + as);
  }
}
template <typename T>
QN_XF_INLINE void rotate_token(T* x, int64_t heads, int64_t half, const float* c, const float* s, bool backward) {
  for (int64_t hd = 0; hd < heads; ++hd) rotate_half(x + hd * 2 * half, x + hd * 2 * half + half, half, c, s, backward ? -1.f : 1.f);
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
  std::shared_ptr<const CosSinTable> table;
  xf::with_type(dt, [&](auto tt) {
    using T = decltype(tt);
    if (use_table) table = cos_sin_table<T>(a.theta, d.d, static_cast<int64_t>(pmax) + 1, inv.data());
    const float* tc = table ? table->cos.data() : nullptr;
    const float* ts = table ? table->sin.data() : nullptr;
    T* q = a.q.defined() ? static_cast<T*>(a.q.raw()) : nullptr;
    T* k = a.k.defined() ? static_cast<T*>(a.k.raw()) : nullptr;
    const int64_t heads = d.hq + d.hkv;
    xf::parallel_simd(d.rows, std::max<int64_t>(1, 2048 / std::max<int64_t>(heads * d.d, 1)), [&](int64_t b, int64_t e) QN_XF_LAMBDA {
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

