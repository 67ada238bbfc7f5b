// Fused cross-entropy: loss sum, count and in-place dlogits against float64 loops (the gradient
// formula itself checked by central differences of the float64 loss), ignored and out-of-range
// labels, bf16 logits against the f32 path, accumulation across chunks, eval mode (logits
// untouched), a separate dlogits output of either dtype (bit-identical to in place, then rounded),
// bad arguments; on CUDA against the CPU.
#include <cmath>
#include "cpu/float_rows.h"
#include "harness.h"
#include "qn/ops/cross_entropy.h"

using namespace qn;
using namespace qnt;

namespace {

struct Ref {
  double loss = 0;
  int count = 0;
  std::vector<double> row_loss, grad;
};

Ref reference(const std::vector<float>& z, const std::vector<int32_t>& y, int64_t n, int64_t v, double scale) {
  Ref r;
  r.row_loss.assign(n, 0);
  r.grad.assign(n * v, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] < 0 || y[i] >= v) continue;
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < v; ++j) m = std::max(m, (double)z[i * v + j]);
    for (int64_t j = 0; j < v; ++j) s += std::exp(z[i * v + j] - m);
    const double lse = m + std::log(s);
    r.row_loss[i] = lse - z[i * v + y[i]];
    r.loss += r.row_loss[i];
    r.count++;
    for (int64_t j = 0; j < v; ++j) r.grad[i * v + j] = (std::exp(z[i * v + j] - lse) - (j == y[i])) * scale;
  }
  return r;
}

struct Out {
  float loss;
  int count;
  std::vector<float> row_loss, grad;
};

Out run(const std::shared_ptr<Context>& ctx, DType dt, const std::vector<float>& z, const std::vector<int32_t>& y,
        int64_t n, int64_t v, float scale, float loss0 = 0.f, int count0 = 0) {
  Tensor logits = from_floats(ctx, dt, {n, v}, z);
  Tensor labels = from_bytes(ctx, DType::I32, {n}, y.data());
  Tensor ls = from_floats(ctx, DType::F32, {1}, {loss0}), cnt = from_floats(ctx, DType::I32, {1}, {(float)count0});
  Tensor rl = poisoned(ctx, DType::F32, {n});
  cross_entropy(*ctx, CrossEntropyArgs{logits, labels, ls, cnt, rl, scale});
  return {to_floats(ls)[0], (int)to_floats(cnt)[0], to_floats(rl), to_floats(logits)};
}

std::vector<int32_t> make_labels(int64_t n, int64_t v, uint64_t salt) {
  auto r = random_floats(n, 0, (float)v, salt);
  std::vector<int32_t> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = std::min<int32_t>((int32_t)r[i], (int32_t)v - 1);
  return y;
}

std::vector<float> to_f(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

}  // namespace

QN_TEST(cross_entropy_f32_matches_f64) {
  for (int64_t v : {1, 17, 1000, 32003}) {
    const int64_t n = 13;
    auto z = random_floats(n * v, -8, 8, 1 + v);
    auto y = make_labels(n, v, 2 + v);
    y[3] = -100;
    if (n > 5) y[5] = (int32_t)v;  // out of range: ignored
    const float scale = 1.f / 11;
    Ref r = reference(z, y, n, v, scale);
    Out o = run(test_ctx(), DType::F32, z, y, n, v, scale, 0.5f, 4);
    const std::string w = "cross_entropy f32 V=" + std::to_string(v);
    // f32 log-sum-exp over V terms (exp ~1 ulp, sums in lanes): relative 1e-6 of the loss,
    // absolute 1e-7 of the probabilities.
    EXPECT_TRUE(std::fabs(o.loss - (0.5 + r.loss)) <= 1e-5 * (1 + std::fabs(r.loss)));
    EXPECT_EQ(o.count, 4 + r.count);
    all_close(o.row_loss, to_f(r.row_loss), 1e-5f, 2e-6f, w + " row loss");
    all_close(o.grad, to_f(r.grad), 1e-5f, 1e-8f, w + " dlogits");
  }
}

QN_TEST(cross_entropy_gradient_finite_differences) {
  // The closed-form dlogits of the float64 reference against central differences of its loss.
  const int64_t n = 3, v = 41;
  auto z = random_floats(n * v, -3, 3, 3);
  auto y = make_labels(n, v, 4);
  Ref r = reference(z, y, n, v, 1.0);
  double worst = 0;
  for (int64_t i = 0; i < n * v; i += 5) {
    auto zp = z, zm = z;
    const float e = 1.f / 64;  // exact in f32; L is smooth: truncation ~ e^2 * |L'''| ~ 1e-5
    zp[i] += e, zm[i] -= e;
    const double fd = (reference(zp, y, n, v, 1).loss - reference(zm, y, n, v, 1).loss) / (2.0 * e);
    worst = std::max(worst, std::fabs(fd - r.grad[i]));
  }
  EXPECT_TRUE(worst < 5e-5);
}

QN_TEST(cross_entropy_bf16_and_eval_mode) {
  const int64_t n = 9, v = 151936;
  std::vector<float> z = random_floats(n * v, -10, 10, 5);
  for (auto& x : z) x = bf16_to_f32(f32_to_bf16(x));
  auto y = make_labels(n, v, 6);
  y[0] = -100;
  Out f = run(test_ctx(), DType::F32, z, y, n, v, 0.25f);
  Out b = run(test_ctx(), DType::BF16, z, y, n, v, 0.25f);
  // Same logits values: loss equal up to f32 rounding; dlogits rounded once to bf16.
  EXPECT_TRUE(std::fabs(f.loss - b.loss) <= 1e-6 * std::fabs(f.loss));
  all_close(b.grad, f.grad, 1.f / 256, 1e-30f, "cross_entropy bf16 dlogits vs f32");
  for (int64_t j = 0; j < v; ++j)
    if (b.grad[j] != 0.f) { EXPECT_TRUE(false); break; }  // ignored row: exactly 0
  // Eval mode: logits untouched, loss as with grad.
  auto ctx = test_ctx();
  Tensor logits = from_floats(ctx, DType::BF16, {n, v}, z);
  Tensor ls = from_floats(ctx, DType::F32, {1}, {0.f}), cnt = from_floats(ctx, DType::I32, {1}, {0.f});
  CrossEntropyArgs a{logits, from_bytes(ctx, DType::I32, {n}, y.data()), ls, cnt};
  a.compute_grad = false;
  cross_entropy(*ctx, a);
  all_close(to_floats(logits), z, 0, 0, "cross_entropy eval leaves logits");
  EXPECT_EQ(to_floats(ls)[0], b.loss);
  EXPECT_EQ((int)to_floats(cnt)[0], (int)n - 1);
}

// dlogits into a separate tensor: logits untouched, and the values are the in-place f32 gradient
// rounded once to the output dtype (the same f32 expression, so bit-identical after rounding), for
// every (logits, dlogits) dtype pair; on CUDA the bf16 outputs also against the CPU's.
QN_TEST(cross_entropy_separate_dlogits_output) {
  const int64_t n = 7, v = 5003;
  auto z = random_floats(n * v, -9, 9, 21);
  for (auto& x : z) x = bf16_to_f32(f32_to_bf16(x));  // the same values in both dtypes
  auto y = make_labels(n, v, 22);
  y[2] = -100;
  auto ctx = test_ctx();
  for (DType lt : {DType::F32, DType::BF16}) {
    const Out inplace = run(ctx, lt, z, y, n, v, 0.125f, 0.f, 0);
    for (DType gt : {DType::F32, DType::BF16}) {
      const std::string w = std::string("cross_entropy logits ") + dtype_name(lt) + " -> dlogits " + dtype_name(gt);
      Tensor logits = from_floats(ctx, lt, {n, v}, z);
      Tensor ls = from_floats(ctx, DType::F32, {1}, {0.f}), cnt = from_floats(ctx, DType::I32, {1}, {0.f});
      CrossEntropyArgs a{logits, from_bytes(ctx, DType::I32, {n}, y.data()), ls, cnt, Tensor(), 0.125f};
      a.dlogits = poisoned(ctx, gt, {n, v});
      cross_entropy(*ctx, a);
      all_close(to_floats(logits), z, 0, 0, w + ": logits untouched");
      EXPECT_EQ(to_floats(ls)[0], inplace.loss);
      EXPECT_EQ((int)to_floats(cnt)[0], inplace.count);
      std::vector<float> want = inplace.grad;
      if (gt == DType::BF16 && lt == DType::F32)
        for (auto& g : want) g = bf16_to_f32(f32_to_bf16(g));
      // f32 output from bf16 logits keeps more bits than the in-place bf16 result: compare loosely
      if (gt == DType::F32 && lt == DType::BF16) all_close(to_floats(a.dlogits), want, 1.f / 256, 1e-30f, w);
      else all_close(to_floats(a.dlogits), want, 0, 0, w);
    }
  }
  EXPECT_THROWS_CODE(cross_entropy(*ctx, [&] {
    CrossEntropyArgs a{from_floats(ctx, DType::F32, {n, v}, z), from_bytes(ctx, DType::I32, {n}, y.data()),
                       Tensor::empty(ctx, DType::F32, {1}), Tensor::empty(ctx, DType::I32, {1})};
    a.dlogits = Tensor::empty(ctx, DType::BF16, {n, v - 1});
    return a;
  }()), Shape);
}

QN_TEST(cross_entropy_cpu_simd_levels) {
  // The AVX2 and baseline clones (this machine may run AVX-512 by default) against the reference.
  const int64_t n = 5, v = 3001;
  auto z = random_floats(n * v, -8, 8, 9);
  for (auto& x : z) x = bf16_to_f32(f32_to_bf16(x));  // the same values in both dtypes
  auto y = make_labels(n, v, 10);
  Ref r = reference(z, y, n, v, 0.5);
  for (auto level : {cpu::xf::Isa::Scalar, cpu::xf::Isa::Avx2}) {
    cpu::xf::isa_cap() = static_cast<int>(level);
    Out o = run(cpu_ctx(), DType::BF16, z, y, n, v, 0.5f);
    Out f = run(cpu_ctx(), DType::F32, z, y, n, v, 0.5f);
    cpu::xf::isa_cap() = static_cast<int>(cpu::xf::Isa::Avx512);
    all_close(f.grad, to_f(r.grad), 1e-5f, 1e-8f, "cross_entropy simd level dlogits");
    all_close(f.row_loss, to_f(r.row_loss), 1e-5f, 2e-6f, "cross_entropy simd level row loss");
    all_close(o.grad, f.grad, 1.f / 256, 1e-30f, "cross_entropy simd level bf16");
  }
}

QN_TEST(cross_entropy_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  const int64_t n = 70, v = 151936;
  auto z = random_floats(n * v, -12, 12, 7);
  auto y = make_labels(n, v, 8);
  y[1] = y[9] = -100;
  for (DType dt : {DType::F32, DType::BF16}) {
    Out a = run(test_ctx(), dt, z, y, n, v, 1.f / 68, 1.f, 2), b = run(cpu_ctx(), dt, z, y, n, v, 1.f / 68, 1.f, 2);
    EXPECT_TRUE(std::fabs(a.loss - b.loss) <= 1e-5 * std::fabs(b.loss));
    EXPECT_EQ(a.count, b.count);
    all_close(a.row_loss, b.row_loss, 1e-5f, 1e-6f, "cross_entropy row loss cuda vs cpu");
    all_close(a.grad, b.grad, dt == DType::F32 ? 1e-5f : 1.f / 128, 1e-10f, "cross_entropy dlogits cuda vs cpu");
  }
}

QN_TEST(cross_entropy_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor z = Tensor::empty(ctx, DType::F32, {4, 10}), y = Tensor::empty(ctx, DType::I32, {4});
  Tensor ls = Tensor::empty(ctx, DType::F32, {1}), c = Tensor::empty(ctx, DType::I32, {1});
  EXPECT_THROWS_CODE(cross_entropy(*ctx, CrossEntropyArgs{z, Tensor::empty(ctx, DType::I32, {5}), ls, c}), Shape);
  EXPECT_THROWS_CODE(cross_entropy(*ctx, CrossEntropyArgs{z, Tensor::empty(ctx, DType::F32, {4}), ls, c}), DType);
  EXPECT_THROWS_CODE(cross_entropy(*ctx, CrossEntropyArgs{z, y, ls, Tensor::empty(ctx, DType::F32, {1})}), DType);
  EXPECT_THROWS_CODE(cross_entropy(*ctx, CrossEntropyArgs{z, y, Tensor::empty(ctx, DType::F32, {2}), c}), Shape);
  EXPECT_THROWS_CODE(cross_entropy(*ctx, CrossEntropyArgs{Tensor::empty(ctx, DType::F16, {4, 10}), y, ls, c}), DType);
  if (testing_cuda()) EXPECT_THROWS_CODE(cross_entropy(*ctx, CrossEntropyArgs{z, y, Tensor::empty(cpu_ctx(), DType::F32, {1}), c}), Device);
}

QN_TEST(cross_entropy_masked_logits) {
  // -inf logits (token ids masked out, legal input to torch's cross_entropy) add nothing: a row
  // whose first 1500 columns are -inf (every thread of a CUDA block starts on -inf) gives the
  // finite loss of the remaining columns and exact zeros in their dlogits.
  const int64_t n = 4, v = 2000;
  auto z = random_floats(n * v, -4, 4, 21);
  auto y = make_labels(n, v, 22);
  for (int64_t j = 0; j < 1500; ++j) z[1 * v + j] = -INFINITY;
  for (int64_t j = 0; j < v; j += 3) z[2 * v + j] = -INFINITY;
  y[1] = 1700;
  y[2] = 1;
  Ref r = reference(z, y, n, v, 0.5);
  Out o = run(test_ctx(), DType::F32, z, y, n, v, 0.5f);
  EXPECT_TRUE(std::isfinite(o.loss));
  EXPECT_TRUE(std::fabs(o.loss - r.loss) <= 1e-5 * (1 + std::fabs(r.loss)));
  all_close(o.row_loss, to_f(r.row_loss), 1e-5f, 2e-6f, "cross_entropy masked row loss");
  all_close(o.grad, to_f(r.grad), 1e-5f, 1e-8f, "cross_entropy masked dlogits");
  for (int64_t j = 0; j < 1500; ++j)
    if (o.grad[1 * v + j] != 0.f) { EXPECT_TRUE(false); break; }
}
