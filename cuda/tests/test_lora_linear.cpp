// lora_linear forward/backward against a float64 reference computed here from the dequantized
// (or dense) W; finite-difference checks of dx, dA, dB; NF4 and dense bases, f32 and bf16
// activations, bias, accumulate flags, disabled adapter, dropout (reproducible, rate, CPU == CUDA).
//
// Tolerances (per element, relative to the sum of absolute terms that make up the value):
//   exact-input fp32 products (x W with f32 x, or bf16 x and a bf16-rounded W, and every LoRA
//   product in fp32):                                         1e-5 * sum|terms|
//   LoRA terms when x is bf16 (u, g, A, B pass through bf16 copies/panels, each product's inputs
//   rounded once or twice):                                    2^-7 * sum|terms|
//   a bf16 output adds its own rounding:                        2^-8 * |ref|
#include <cmath>
#include <cstdio>
#include "harness.h"
#include "qn/ops/lora_linear.h"
#include "qn/ops/nf4.h"

using namespace qn;
using namespace qnt;

namespace {

enum class Base { Dense32, Dense16, Nf4 };

struct Spec {
  int64_t m, in, out, r;
  Base base;
  DType xdt;
  bool bias;
  float dropout;
  uint64_t seed;
};

std::string spec_str(const Spec& s) {
  char b[200];
  std::snprintf(b, sizeof b, "lora m=%lld in=%lld out=%lld r=%lld base=%s x=%s bias=%d p=%g", (long long)s.m,
                (long long)s.in, (long long)s.out, (long long)s.r,
                s.base == Base::Nf4 ? "nf4" : s.base == Base::Dense16 ? "bf16" : "f32", dtype_name(s.xdt), s.bias,
                s.dropout);
  return b;
}

// A layer and its inputs on one context, plus host copies (as the op sees them) for the reference.
struct Setup {
  Spec s;
  std::shared_ptr<Context> ctx;
  Nf4Weight nf4;
  LoraLinear layer;
  Tensor x;
  std::vector<float> xh, wh, bh, ah, bbh;  // x, W (dequantized / rounded as the op's GEMM sees it), bias, A, B
  std::vector<float> mult;                 // dropout factor per x element
};

Setup make_setup(const std::shared_ptr<Context>& ctx, const Spec& s, uint64_t salt) {
  Setup S;
  S.s = s;
  S.ctx = ctx;
  const std::vector<float> w = random_floats(static_cast<size_t>(s.out * s.in), -1, 1, salt * 8 + 1);
  const bool bf16_gemm = s.xdt == DType::BF16 && s.base != Base::Dense32;
  if (s.base == Base::Nf4) {
    S.nf4 = nf4_quantize_weight(from_floats(ctx, DType::F32, {s.out, s.in}, w), 64, true, "w");
    Tensor deq = Tensor::empty(ctx, bf16_gemm ? DType::BF16 : DType::F32, {s.out, s.in});
    nf4_dequantize(*ctx, Nf4DequantizeArgs{S.nf4, deq});
    S.wh = to_floats(deq);
    S.layer.nf4 = &S.nf4;
  } else {
    S.layer.weight = from_floats(ctx, s.base == Base::Dense16 ? DType::BF16 : DType::F32, {s.out, s.in}, w);
    S.wh = to_floats(S.layer.weight);
    // CUDA runs every GEMM operand in x's dtype: with bf16 x, an f32 W is rounded to bf16 first.
    if (ctx->device().type == DeviceType::CUDA && s.xdt == DType::BF16)
      for (float& v : S.wh) v = bf16_to_f32(f32_to_bf16(v));
  }
  if (s.bias) {
    S.layer.bias = from_floats(ctx, DType::F32, {s.out}, random_floats(static_cast<size_t>(s.out), -1, 1, salt * 8 + 2));
    S.bh = to_floats(S.layer.bias);
  }
  S.layer.enabled = s.r > 0;
  if (s.r > 0) {
    S.layer.lora_a = from_floats(ctx, DType::F32, {s.r, s.in}, random_floats(static_cast<size_t>(s.r * s.in), -0.5f, 0.5f, salt * 8 + 3));
    S.layer.lora_b = from_floats(ctx, DType::F32, {s.out, s.r}, random_floats(static_cast<size_t>(s.out * s.r), -0.5f, 0.5f, salt * 8 + 4));
    S.ah = to_floats(S.layer.lora_a);
    S.bbh = to_floats(S.layer.lora_b);
  }
  S.layer.scale = s.r > 0 ? 2.f / static_cast<float>(s.r) : 1.f;
  S.layer.dropout = s.dropout;
  S.layer.seed = s.seed;
  S.x = from_floats(ctx, s.xdt, {s.m, s.in}, random_floats(static_cast<size_t>(s.m * s.in), -1, 1, salt * 8 + 5));
  S.xh = to_floats(S.x);
  S.mult.assign(S.xh.size(), 1.f);
  if (s.r > 0 && s.dropout > 0) {
    const uint64_t key = lora_dropout_key(s.seed);
    const uint32_t thr = lora_dropout_threshold(s.dropout);
    const float inv = 1.f / (1.f - s.dropout);
    for (size_t i = 0; i < S.mult.size(); ++i) S.mult[i] = lora_dropout_keep(key, i, thr) ? inv : 0.f;
  }
  return S;
}

// |got - ref| <= bound, elementwise; reports the worst.
void expect_within(const std::vector<float>& got, const std::vector<double>& ref, const std::vector<double>& bound,
                   const std::string& what) {
  size_t bad = 0, wi = 0;
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(got[i] - ref[i]);
    if (!(e <= bound[i])) {
      ++bad;
      const double ex = std::isnan(e) ? 1e30 : e / bound[i];
      if (ex > worst) worst = ex, wi = i;
    }
  }
  if (bad) {
    char b[300];
    std::snprintf(b, sizeof b, "%zu/%zu wrong; worst at %zu: %.9g vs ref %.9g (%.3g x bound %.3g)", bad, ref.size(), wi,
                  got[wi], ref[wi], worst, bound[wi]);
    record_failure(what, b);
  }
}

struct Outputs {
  std::vector<float> y, u, dx, ga, gb;
};

// Runs forward (y, u) and backward (dx, dA, dB from the given starting values) on S.ctx.
Outputs run_op(const Setup& S, const std::vector<float>& dyh, const std::vector<float>* y0,
               const std::vector<float>* dx0, const std::vector<float>& ga0, const std::vector<float>& gb0) {
  const Spec& s = S.s;
  auto ctx = S.ctx;
  Outputs o;
  Tensor y = y0 ? from_floats(ctx, s.xdt, {s.m, s.out}, *y0) : poisoned(ctx, s.xdt, {s.m, s.out});
  Tensor u = s.r > 0 ? poisoned(ctx, DType::F32, {s.m, s.r}) : Tensor();
  lora_linear_forward(*ctx, LoraLinearForwardArgs{S.layer, S.x, y, u, y0 != nullptr});
  o.y = to_floats(y);
  if (s.r > 0) o.u = to_floats(u);
  Tensor dy = from_floats(ctx, s.xdt, {s.m, s.out}, dyh);
  Tensor dx = dx0 ? from_floats(ctx, s.xdt, {s.m, s.in}, *dx0) : poisoned(ctx, s.xdt, {s.m, s.in});
  Tensor ga, gb;
  if (s.r > 0) {
    ga = from_floats(ctx, DType::F32, {s.r, s.in}, ga0);
    gb = from_floats(ctx, DType::F32, {s.out, s.r}, gb0);
  }
  lora_linear_backward(*ctx, LoraLinearBackwardArgs{S.layer, S.x, dy, u, dx, dx0 != nullptr, ga, gb});
  o.dx = to_floats(dx);
  if (s.r > 0) {
    o.ga = to_floats(ga);
    o.gb = to_floats(gb);
  }
  return o;
}

// Forward and backward against the float64 reference.
void check_case(const Spec& s, uint64_t salt, bool accumulate) {
  const Setup S = make_setup(test_ctx(), s, salt);
  const int64_t M = s.m, I = s.in, O = s.out, R = s.r;
  const double sc = S.layer.scale;
  const bool lowp = s.xdt == DType::BF16;
  const double tol = 1e-5, tol_lora = lowp ? std::ldexp(1.0, -7) : 1e-5;
  const double out_round = s.xdt == DType::BF16 ? std::ldexp(1.0, -8) : 0.0;
  // CUDA adds the LoRA term to a bf16 y / dx already rounded once (beta = 1 accumulation).
  const double base_round = testing_cuda() && s.xdt == DType::BF16 ? std::ldexp(1.0, -8) : 0.0;
  const std::vector<float> dyh = to_floats(from_floats(test_ctx(), s.xdt, {M, O}, random_floats(M * O, -1, 1, salt * 8 + 6)));
  std::vector<float> y0, dx0, ga0(R * I), gb0(O * R);
  if (accumulate) {
    y0 = to_floats(from_floats(test_ctx(), s.xdt, {M, O}, random_floats(M * O, -1, 1, salt * 8 + 7)));
    dx0 = to_floats(from_floats(test_ctx(), s.xdt, {M, I}, random_floats(M * I, -1, 1, salt * 8 + 8)));
    ga0 = random_floats(R * I, -1, 1, salt * 8 + 9);
    gb0 = random_floats(O * R, -1, 1, salt * 8 + 10);
  }
  const Outputs o = run_op(S, dyh, accumulate ? &y0 : nullptr, accumulate ? &dx0 : nullptr, ga0, gb0);
  const std::string what = spec_str(s) + (accumulate ? " accumulate" : "") + " on " + test_ctx()->device().str();

  // xd, u (and |u| terms), g = dy B (and |g| terms)
  std::vector<double> xd(M * I), u(M * R, 0), uabs(M * R, 0), g(M * R, 0), gabs(M * R, 0);
  for (int64_t i = 0; i < M * I; ++i) xd[i] = double(S.xh[i]) * S.mult[i];
  for (int64_t t = 0; t < M; ++t)
    for (int64_t q = 0; q < R; ++q) {
      double a = 0, b = 0, c = 0, e = 0;
      for (int64_t k = 0; k < I; ++k) a += xd[t * I + k] * S.ah[q * I + k], b += std::fabs(xd[t * I + k] * S.ah[q * I + k]);
      for (int64_t k = 0; k < O; ++k) c += double(dyh[t * O + k]) * S.bbh[k * R + q], e += std::fabs(double(dyh[t * O + k]) * S.bbh[k * R + q]);
      u[t * R + q] = sc * a, uabs[t * R + q] = sc * b, g[t * R + q] = c, gabs[t * R + q] = e;
    }
  if (R > 0) {
    std::vector<double> bound(M * R);
    for (int64_t i = 0; i < M * R; ++i) bound[i] = tol_lora * uabs[i] + 1e-30;
    expect_within(o.u, u, bound, what + ": u");
  }
  // y
  {
    std::vector<double> ref(M * O), bound(M * O);
    for (int64_t t = 0; t < M; ++t)
      for (int64_t j = 0; j < O; ++j) {
        double v = 0, mb = 0, ml = 0;
        for (int64_t k = 0; k < I; ++k) v += double(S.xh[t * I + k]) * S.wh[j * I + k], mb += std::fabs(double(S.xh[t * I + k]) * S.wh[j * I + k]);
        for (int64_t q = 0; q < R; ++q) v += u[t * R + q] * S.bbh[j * R + q], ml += uabs[t * R + q] * std::fabs(S.bbh[j * R + q]);
        if (s.bias) v += S.bh[j], mb += std::fabs(S.bh[j]);
        if (accumulate) v += y0[t * O + j], mb += std::fabs(y0[t * O + j]);
        ref[t * O + j] = v;
        bound[t * O + j] = tol * mb + tol_lora * ml + out_round * std::fabs(v) + base_round * mb + 1e-30;
      }
    expect_within(o.y, ref, bound, what + ": y");
  }
  // dx = dy W + mult * s * (g A)
  {
    std::vector<double> ref(M * I), bound(M * I);
    for (int64_t t = 0; t < M; ++t)
      for (int64_t c = 0; c < I; ++c) {
        double v = 0, mb = 0, l = 0, ml = 0;
        for (int64_t j = 0; j < O; ++j) v += double(dyh[t * O + j]) * S.wh[j * I + c], mb += std::fabs(double(dyh[t * O + j]) * S.wh[j * I + c]);
        for (int64_t q = 0; q < R; ++q) l += g[t * R + q] * S.ah[q * I + c], ml += gabs[t * R + q] * std::fabs(S.ah[q * I + c]);
        v += S.mult[t * I + c] * sc * l;
        ml *= S.mult[t * I + c] * sc;
        if (accumulate) v += dx0[t * I + c], mb += std::fabs(dx0[t * I + c]);
        ref[t * I + c] = v;
        bound[t * I + c] = tol * mb + tol_lora * ml + out_round * std::fabs(v) + base_round * mb + 1e-30;
      }
    expect_within(o.dx, ref, bound, what + ": dx");
  }
  if (R == 0) return;
  // dA += s * g^T xd ; dB += dy^T u  (the reference uses the op's own u, as backward does)
  {
    std::vector<double> ref(R * I), bound(R * I);
    for (int64_t q = 0; q < R; ++q)
      for (int64_t c = 0; c < I; ++c) {
        double v = 0, mg = 0;
        for (int64_t t = 0; t < M; ++t) v += g[t * R + q] * xd[t * I + c], mg += gabs[t * R + q] * std::fabs(xd[t * I + c]);
        ref[q * I + c] = ga0[q * I + c] + sc * v;
        bound[q * I + c] = tol_lora * (sc * mg + std::fabs(ga0[q * I + c])) + 1e-30;
      }
    expect_within(o.ga, ref, bound, what + ": grad_a");
    std::vector<double> refb(O * R), boundb(O * R);
    for (int64_t j = 0; j < O; ++j)
      for (int64_t q = 0; q < R; ++q) {
        double v = 0, mg = 0;
        for (int64_t t = 0; t < M; ++t) v += double(dyh[t * O + j]) * o.u[t * R + q], mg += std::fabs(double(dyh[t * O + j]) * o.u[t * R + q]);
        refb[j * R + q] = gb0[j * R + q] + v;
        boundb[j * R + q] = tol_lora * (mg + std::fabs(gb0[j * R + q])) + 1e-30;
      }
    expect_within(o.gb, refb, boundb, what + ": grad_b");
  }
}

std::vector<Spec> specs() {
  std::vector<Spec> v;
  // r up to 72 covers every register layout of the bf16 rank kernels (r / 16 rounded up = 1..4) and
  // the GEMM fallback above their limit (64); odd in / out / m reach their odd-k and odd-row edges.
  const int64_t shapes[][4] = {{7, 64, 96, 4},  {33, 100, 70, 8}, {130, 256, 200, 16}, {1, 128, 64, 16},
                               {20, 96, 5, 3},  {9, 37, 50, 24},  {17, 66, 41, 40},    {6, 48, 130, 64},
                               {5, 40, 24, 72}};
  int i = 0;
  for (DType xdt : {DType::F32, DType::BF16})
    for (Base b : {Base::Nf4, Base::Dense32, Base::Dense16})
      for (const auto& sh : shapes) {
        const float p = (i % 3 == 1) ? 0.1f : (i % 3 == 2) ? 0.5f : 0.f;
        v.push_back(Spec{sh[0], sh[1], sh[2], sh[3], b, xdt, i % 2 == 0, p, 1000u + i});
        ++i;
      }
  return v;
}

}  // namespace

QN_TEST(lora_linear_matches_f64_reference) {
  const auto v = specs();
  for (size_t i = 0; i < v.size(); ++i) check_case(v[i], 10 + i, false);
}

QN_TEST(lora_linear_accumulate_flags_and_disabled_adapter) {
  const auto v = specs();
  for (size_t i = 0; i < v.size(); i += 4) check_case(v[i], 100 + i, true);
  Spec s{9, 70, 33, 0, Base::Nf4, DType::F32, true, 0.f, 1};  // r = 0: plain (NF4) linear
  check_case(s, 200, false);
  s.xdt = DType::BF16;
  check_case(s, 201, true);
}

// Finite differences of L = sum(y * R) against backward (dy = R). The op is linear in each of x,
// A and B separately (the dropout mask is fixed by the seed), so central differences have no
// truncation error: the only error is fp32 rounding of y, which a large step (0.25) keeps at
// ~1e-6 relative. Run on the f32 path (f32 x, f32 W or NF4 dequantized to f32).
QN_TEST(lora_linear_finite_differences) {
  for (Base base : {Base::Dense32, Base::Nf4}) {
    Spec s{3, 6, 5, 2, base, DType::F32, true, 0.3f, 77};
    Setup S = make_setup(test_ctx(), s, 300);
    auto ctx = test_ctx();
    const std::vector<float> rh = random_floats(s.m * s.out, -1, 1, 301);
    auto loss = [&]() {
      Tensor y = poisoned(ctx, DType::F32, {s.m, s.out});
      Tensor u = poisoned(ctx, DType::F32, {s.m, s.r});
      lora_linear_forward(*ctx, LoraLinearForwardArgs{S.layer, S.x, y, u});
      const auto yv = to_floats(y);
      double l = 0;
      for (size_t i = 0; i < yv.size(); ++i) l += double(yv[i]) * rh[i];
      return l;
    };
    const Outputs o = run_op(S, rh, nullptr, nullptr, std::vector<float>(s.r * s.in, 0.f), std::vector<float>(s.out * s.r, 0.f));
    const float eps = 0.25f;
    auto fd = [&](Tensor& t, std::vector<float>& host, const std::vector<float>& analytic, const char* name) {
      double maxg = 0;
      for (float a : analytic) maxg = std::max(maxg, std::fabs(double(a)));
      for (size_t i = 0; i < host.size(); ++i) {
        const float keep = host[i];
        host[i] = keep + eps;
        t = from_floats(ctx, t.dtype(), t.shape(), host);
        const double lp = loss();
        host[i] = keep - eps;
        t = from_floats(ctx, t.dtype(), t.shape(), host);
        const double lm = loss();
        host[i] = keep;
        t = from_floats(ctx, t.dtype(), t.shape(), host);
        const double num = (lp - lm) / (2.0 * eps);
        if (std::fabs(num - analytic[i]) > 1e-4 * (maxg + 1.0)) {
          char b[200];
          std::snprintf(b, sizeof b, "%s[%zu]: finite difference %.8g vs backward %.8g", name, i, num, analytic[i]);
          record_failure(spec_str(s), b);
        }
      }
    };
    std::vector<float> xh = S.xh, ah = S.ah, bh = S.bbh;
    fd(S.x, xh, o.dx, "dx");
    fd(S.layer.lora_a, ah, o.ga, "dA");
    fd(S.layer.lora_b, bh, o.gb, "dB");
  }
}

QN_TEST(lora_linear_dropout_mask_reproducible) {
  // in == r and A = I, s = 1, p = 0.5: u = dropout(x) exactly (x values are bf16-exact, the
  // factor is 2), so u shows the mask itself. Same seed -> same mask; another seed -> another;
  // the kept fraction is 1 - p; on CUDA the mask equals the CPU's bit for bit.
  const int64_t m = 257, r = 64;
  std::vector<float> eye(r * r, 0.f);
  for (int64_t i = 0; i < r; ++i) eye[i * r + i] = 1.f;
  std::vector<float> xv = to_floats(from_floats(cpu_ctx(), DType::BF16, {m, r}, random_floats(m * r, 0.5f, 1.f, 400)));
  auto run_u = [&](const std::shared_ptr<Context>& ctx, uint64_t seed, DType xdt) {
    LoraLinear L;
    L.weight = from_floats(ctx, DType::F32, {3, r}, std::vector<float>(3 * r, 0.f));
    L.lora_a = from_floats(ctx, DType::F32, {r, r}, eye);
    L.lora_b = from_floats(ctx, DType::F32, {3, r}, std::vector<float>(3 * r, 0.f));
    L.scale = 1.f;
    L.dropout = 0.5f;
    L.seed = seed;
    Tensor x = from_floats(ctx, xdt, {m, r}, xv);
    Tensor y = poisoned(ctx, xdt, {m, 3});
    Tensor u = poisoned(ctx, DType::F32, {m, r});
    lora_linear_forward(*ctx, LoraLinearForwardArgs{L, x, y, u});
    return to_floats(u);
  };
  const auto u1 = run_u(test_ctx(), 5, DType::F32), u2 = run_u(test_ctx(), 5, DType::F32), u3 = run_u(test_ctx(), 6, DType::F32);
  all_close(u1, u2, 0, 0, "same seed, same mask");
  size_t kept = 0, same = 0;
  for (size_t i = 0; i < u1.size(); ++i) {
    EXPECT_TRUE(u1[i] == 0.f || u1[i] == 2.f * xv[i]);
    kept += u1[i] != 0.f;
    same += (u1[i] != 0.f) == (u3[i] != 0.f);
  }
  const double frac = double(kept) / u1.size();
  EXPECT_TRUE(std::fabs(frac - 0.5) < 0.02);
  EXPECT_TRUE(double(same) / u1.size() < 0.6);  // another seed: ~half agree
  if (testing_cuda()) {
    all_close(u1, run_u(cpu_ctx(), 5, DType::F32), 0, 0, "cuda mask == cpu mask (f32 x)");
    all_close(run_u(test_ctx(), 5, DType::BF16), run_u(cpu_ctx(), 5, DType::BF16), 0, 0, "cuda mask == cpu mask (bf16 x)");
  }
  // The host helper itself: deterministic and p = 0 keeps everything.
  EXPECT_TRUE(lora_dropout_keep(lora_dropout_key(1), 12345, lora_dropout_threshold(0.f)));
  EXPECT_EQ(lora_dropout_keep(lora_dropout_key(9), 77, lora_dropout_threshold(0.3f)),
            lora_dropout_keep(lora_dropout_key(9), 77, lora_dropout_threshold(0.3f)));
}

QN_TEST(lora_linear_rejects_bad_args) {
  auto ctx = test_ctx();
  LoraLinear L;
  L.weight = Tensor::empty(ctx, DType::F32, {8, 6});
  L.lora_a = Tensor::empty(ctx, DType::F32, {2, 6});
  L.lora_b = Tensor::empty(ctx, DType::F32, {8, 2});
  Tensor x = Tensor::empty(ctx, DType::F32, {3, 6});
  Tensor y = Tensor::empty(ctx, DType::F32, {3, 8});
  Tensor u = Tensor::empty(ctx, DType::F32, {3, 2});
  lora_linear_forward(*ctx, LoraLinearForwardArgs{L, x, y, u});  // fine
  Tensor x5 = Tensor::empty(ctx, DType::F32, {3, 5});
  EXPECT_THROWS_CODE(lora_linear_forward(*ctx, LoraLinearForwardArgs{L, x5, y, u}), Shape);
  Tensor yh = Tensor::empty(ctx, DType::BF16, {3, 8});
  EXPECT_THROWS_CODE(lora_linear_forward(*ctx, LoraLinearForwardArgs{L, x, yh, u}), DType);
  Tensor u3 = Tensor::empty(ctx, DType::F32, {3, 3});
  EXPECT_THROWS_CODE(lora_linear_forward(*ctx, LoraLinearForwardArgs{L, x, y, u3}), Shape);
  EXPECT_THROWS_CODE(lora_linear_forward(*ctx, LoraLinearForwardArgs{L, x, y, Tensor()}), Arg);
  LoraLinear L2 = L;
  L2.lora_a = Tensor::empty(ctx, DType::BF16, {2, 6});
  EXPECT_THROWS_CODE(lora_linear_forward(*ctx, LoraLinearForwardArgs{L2, x, y, u}), DType);
  L2 = L;
  L2.dropout = 1.f;
  EXPECT_THROWS_CODE(lora_linear_forward(*ctx, LoraLinearForwardArgs{L2, x, y, u}), Arg);
  L2 = L;
  L2.lora_b = Tensor::empty(ctx, DType::F32, {8, 3});
  EXPECT_THROWS_CODE(lora_linear_forward(*ctx, LoraLinearForwardArgs{L2, x, y, u}), Shape);
  Tensor dy = Tensor::empty(ctx, DType::F32, {3, 8});
  Tensor ga = Tensor::empty(ctx, DType::F32, {2, 6}), gb = Tensor::empty(ctx, DType::F32, {8, 2});
  Tensor gbad = Tensor::empty(ctx, DType::F32, {2, 8});
  EXPECT_THROWS_CODE(lora_linear_backward(*ctx, LoraLinearBackwardArgs{L, x, dy, u, Tensor(), false, ga, gbad}), Shape);
  Tensor dxh = Tensor::empty(ctx, DType::BF16, {3, 6});
  EXPECT_THROWS_CODE(lora_linear_backward(*ctx, LoraLinearBackwardArgs{L, x, dy, u, dxh, false, ga, gb}), DType);
  LoraLinear none;  // no base weight
  EXPECT_THROWS_CODE(lora_linear_forward(*ctx, LoraLinearForwardArgs{none, x, y, u}), Arg);
  try {
    lora_linear_forward(*ctx, LoraLinearForwardArgs{L, x5, y, u});
  } catch (const Error& e) {
    EXPECT_TRUE(std::string(e.what()).find("lora_linear_forward: x must be [..., in = 6]") != std::string::npos);
  }
}
