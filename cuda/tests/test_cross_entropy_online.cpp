// LM head + cross-entropy over vocabulary chunks (cross_entropy_online_chunk / _finish driven by
// the head GEMMs in model/lm_head_loss.h, as the model runs them) against a float64 loop of loss = CE(h W^T) and
// dh = (softmax - onehot) W (that formula itself checked by central differences); one chunk vs
// many, chunk widths that are not multiples of 16, a running max that moves at every chunk,
// ignored and out-of-range labels, bf16, eval mode, row blocks, dx row remapping, every SIMD clone, bad
// arguments; on CUDA against the CPU.
#include <cmath>
#include "cpu/float_rows.h"
#include "harness.h"
#include "qn/ops/cross_entropy_online.h"
#include "model/lm_head_loss.h"

using namespace qn;
using namespace qnt;

namespace {

struct Problem {
  int64_t n, h, v;
  std::vector<float> hid, w;  // [n, h], [v, h]
  std::vector<int32_t> y;
};

Problem make_problem(int64_t n, int64_t h, int64_t v, float wscale, uint64_t salt, bool bf16_exact) {
  Problem p{n, h, v, random_floats(n * h, -1, 1, salt), random_floats(v * h, -wscale, wscale, salt + 1), {}};
  if (bf16_exact) {
    for (auto& x : p.hid) x = bf16_to_f32(f32_to_bf16(x));
    for (auto& x : p.w) x = bf16_to_f32(f32_to_bf16(x));
  }
  auto r = random_floats(n, 0, (float)v, salt + 2);
  for (int64_t i = 0; i < n; ++i) p.y.push_back(std::min<int32_t>((int32_t)r[i], (int32_t)v - 1));
  return p;
}

struct Ref {
  double loss = 0;
  int count = 0;
  std::vector<double> row_loss, dh;
};

Ref reference(const Problem& p, double scale) {
  Ref r;
  r.row_loss.assign(p.n, 0);
  r.dh.assign(p.n * p.h, 0);
  std::vector<double> z(p.v);
  for (int64_t i = 0; i < p.n; ++i) {
    if (p.y[i] < 0 || p.y[i] >= p.v) continue;
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < p.v; ++j) {
      double d = 0;
      for (int64_t k = 0; k < p.h; ++k) d += (double)p.hid[i * p.h + k] * p.w[j * p.h + k];
      z[j] = d;
      m = std::max(m, d);
    }
    for (int64_t j = 0; j < p.v; ++j) s += std::exp(z[j] - m);
    const double lse = m + std::log(s);
    r.row_loss[i] = lse - z[p.y[i]];
    r.loss += r.row_loss[i];
    r.count++;
    for (int64_t j = 0; j < p.v; ++j) {
      const double g = (std::exp(z[j] - lse) - (j == p.y[i])) * scale;
      for (int64_t k = 0; k < p.h; ++k) r.dh[i * p.h + k] += g * p.w[j * p.h + k];
    }
  }
  return r;
}

struct Out {
  float loss;
  int count;
  std::vector<float> row_loss, dx;
};

// The model's loop (model/lm_head_loss.h: per chunk the logits GEMM, the chunk op, acc += P W[c];
// then finish), with poisoned scratch. dt: dtype of h, W, probs and dx. rows (optional): destination
// rows in a dx of m_rows rows.
Out run(const std::shared_ptr<Context>& ctx, DType dt, const Problem& p, int64_t vc, float scale, bool grad = true,
        const std::vector<int32_t>& rows = {}, int64_t m_rows = 0, float loss0 = 0.f, int count0 = 0,
        int64_t row_block = 4096) {
  model::LmHeadLossArgs a;
  a.hidden = from_floats(ctx, dt, {p.n, p.h}, p.hid);
  a.weight = from_floats(ctx, dt, {p.v, p.h}, p.w);
  a.labels = from_bytes(ctx, DType::I32, {p.n}, p.y.data());
  a.row_loss = poisoned(ctx, DType::F32, {p.n});
  a.loss_sum = from_floats(ctx, DType::F32, {1}, {loss0});
  a.count = from_floats(ctx, DType::I32, {1}, {(float)count0});
  if (grad) {
    a.dx = poisoned(ctx, dt, {rows.empty() ? p.n : m_rows, p.h});
    if (!rows.empty()) a.rows = from_bytes(ctx, DType::I32, {p.n}, rows.data());
    a.grad_scale = scale;
  }
  a.vocab_chunk = vc;
  a.row_block = row_block;
  model::lm_head_loss(*ctx, a, [&](const std::string&, DType t, const Shape& s) { return poisoned(ctx, t, s); });
  return {to_floats(a.loss_sum)[0], (int)to_floats(a.count)[0], to_floats(a.row_loss),
          grad ? to_floats(a.dx) : std::vector<float>()};
}

std::vector<float> to_f(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace

QN_TEST(cross_entropy_online_f32_matches_f64) {
  for (int64_t v : {1, 17, 1000, 5003}) {
    Problem p = make_problem(13, 24, v, 3.f, 100 + v, false);
    p.y[3] = -100;
    p.y[5] = (int32_t)v;  // out of range: ignored
    const float scale = 1.f / 11;
    const Ref r = reference(p, scale);
    for (int64_t vc : {v, (int64_t)64, (int64_t)100, (int64_t)7}) {
      if (vc > v) continue;
      const Out o = run(test_ctx(), DType::F32, p, vc, scale, true, {}, 0, 0.5f, 4);
      const std::string w = "online CE f32 V=" + std::to_string(v) + " Vc=" + std::to_string(vc);
      // f32 GEMMs and log-sum-exp over V terms: 1e-5 relative; dh sums V products of P and W.
      EXPECT_TRUE(std::fabs(o.loss - (0.5 + r.loss)) <= 1e-5 * (1 + std::fabs(r.loss)));
      EXPECT_EQ(o.count, 4 + r.count);
      all_close(o.row_loss, to_f(r.row_loss), 1e-5f, 1e-5f, w + " row loss");
      all_close(o.dx, to_f(r.dh), 1e-4f, 1e-6f, w + " dh");
      for (int64_t k = 0; k < p.h; ++k) EXPECT_TRUE(o.dx[3 * p.h + k] == 0.f && o.dx[5 * p.h + k] == 0.f);
      // Row blocks of 4 (13 rows: 4 blocks, the last of 1 row): the same values, bit for bit on the
      // CPU (rows are independent); cuBLASLt may pick another algorithm for another M.
      const Out blk = run(test_ctx(), DType::F32, p, vc, scale, true, {}, 0, 0.5f, 4, 4);
      const float tol = testing_cuda() ? 1e-5f : 0.f;
      all_close(blk.row_loss, o.row_loss, tol, tol, w + " row blocks: row loss");
      all_close(blk.dx, o.dx, tol, tol, w + " row blocks: dh");
    }
  }
}

QN_TEST(cross_entropy_online_gradient_finite_differences) {
  // The float64 reference's dh against central differences of its loss with respect to h.
  Problem p = make_problem(3, 8, 37, 2.f, 7, false);
  const Ref r = reference(p, 1.0);
  double worst = 0;
  for (int64_t i = 0; i < p.n * p.h; i += 3) {
    Problem pp = p, pm = p;
    const float e = 1.f / 64;  // exact in f32; truncation ~ e^2 |L'''| ~ 1e-4 at these logit scales
    pp.hid[i] += e, pm.hid[i] -= e;
    const double fd = (reference(pp, 1).loss - reference(pm, 1).loss) / (2.0 * e);
    worst = std::max(worst, std::fabs(fd - r.dh[i]));
  }
  EXPECT_TRUE(worst < 5e-4);
}

QN_TEST(cross_entropy_online_running_max_moves_every_chunk) {
  // Logits that grow along the vocabulary (W rows scaled by j / V along h's direction): each chunk
  // raises the running max, so every chunk rescales the sum and acc; the top logits reach ~60,
  // where exp without a max shift would overflow nothing but lose the small terms.
  const int64_t n = 5, h = 16, v = 777;
  Problem p = make_problem(n, h, v, 0.05f, 31, false);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < h; ++k) p.hid[i * h + k] = k % 2 ? 1.f : 0.75f;
  for (int64_t j = 0; j < v; ++j)
    for (int64_t k = 0; k < h; ++k) p.w[j * h + k] += 4.5f * j / v;
  p.y = {0, 776, 400, 3, 775};
  const Ref r = reference(p, 0.5);
  for (int64_t vc : {(int64_t)32, (int64_t)129}) {
    const Out o = run(test_ctx(), DType::F32, p, vc, 0.5f);
    all_close(o.row_loss, to_f(r.row_loss), 1e-5f, 1e-4f, "online CE rising logits row loss");
    all_close(o.dx, to_f(r.dh), 1e-4f, 1e-5f, "online CE rising logits dh");
  }
}

QN_TEST(cross_entropy_online_bf16_eval_and_rows) {
  const int64_t n = 9, h = 40, v = 3001, vc = 512;
  Problem p = make_problem(n, h, v, 2.f, 41, true);
  p.y[0] = -100;
  const Ref r = reference(p, 0.25);
  const Out b = run(test_ctx(), DType::BF16, p, vc, 0.25f);
  // bf16 probs (2^-9 relative each) summed against W, then dx rounded once to bf16: within 2^-8 of
  // max |W| x grad_scale. The loss comes from f32 logits of bf16-exact inputs: 1e-5.
  EXPECT_TRUE(std::fabs(b.loss - r.loss) <= 1e-5 * std::fabs(r.loss));
  all_close(b.dx, to_f(r.dh), 1.f / 128, max_abs(p.w) * 0.25f / 256, "online CE bf16 dh");
  for (int64_t k = 0; k < h; ++k) EXPECT_TRUE(b.dx[k] == 0.f);  // ignored row: exactly 0
  // Eval mode (no probs, no acc): the same loss, bit for bit.
  const Out e = run(test_ctx(), DType::BF16, p, vc, 0.25f, false);
  EXPECT_EQ(e.loss, b.loss);
  EXPECT_EQ(e.count, b.count);
  all_close(e.row_loss, b.row_loss, 0, 0, "online CE eval row loss");
  // rows: dx rows scattered into a larger dx; unlisted rows keep their poison, an out-of-range
  // destination is skipped.
  std::vector<int32_t> rows = {12, 0, 3, 7, 1, 9, 4, 10, 99};
  const Out s = run(test_ctx(), DType::BF16, p, vc, 0.25f, true, rows, 13, 0.f, 0, 4);  // 3 row blocks
  std::vector<float> moved, want;
  for (int64_t i = 0; i < n; ++i) {
    if (rows[i] >= 13) continue;
    moved.insert(moved.end(), s.dx.begin() + rows[i] * h, s.dx.begin() + (rows[i] + 1) * h);
    want.insert(want.end(), b.dx.begin() + i * h, b.dx.begin() + (i + 1) * h);
  }
  // bit for bit on the CPU; on CUDA one bf16 rounding apart at most (another GEMM algorithm)
  all_close(moved, want, testing_cuda() ? 1.f / 128 : 0.f, testing_cuda() ? 1e-6f : 0.f, "online CE rows remapped");
  for (int64_t row : {2, 5, 6, 8, 11})
    EXPECT_TRUE(std::isnan(s.dx[row * h]) && std::isnan(s.dx[row * h + h - 1]));
}

QN_TEST(cross_entropy_online_cpu_simd_levels) {
  const int64_t n = 6, h = 20, v = 1001;
  Problem p = make_problem(n, h, v, 2.f, 51, true);
  const Ref r = reference(p, 1.0);
  for (auto level : {cpu::xf::Isa::Scalar, cpu::xf::Isa::Avx2}) {
    cpu::xf::isa_cap() = static_cast<int>(level);
    const Out f = run(cpu_ctx(), DType::F32, p, 200, 1.f);
    const Out b = run(cpu_ctx(), DType::BF16, p, 200, 1.f);
    cpu::xf::isa_cap() = static_cast<int>(cpu::xf::Isa::Avx512);
    all_close(f.row_loss, to_f(r.row_loss), 1e-5f, 1e-5f, "online CE simd level row loss");
    all_close(f.dx, to_f(r.dh), 1e-4f, 1e-6f, "online CE simd level dh");
    all_close(b.dx, to_f(r.dh), 1.f / 128, max_abs(p.w) / 256, "online CE simd level bf16 dh");
  }
}

QN_TEST(cross_entropy_online_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  // Qwen's vocabulary with an uneven last chunk (151936 = 18 x 8192 + 4480).
  const int64_t n = 37, h = 64, v = 151936, vc = 8192;
  Problem p = make_problem(n, h, v, 1.f, 61, true);
  p.y[1] = p.y[9] = -100;
  for (DType dt : {DType::F32, DType::BF16}) {
    const Out a = run(test_ctx(), dt, p, vc, 1.f / 35, true, {}, 0, 1.f, 2);
    const Out b = run(cpu_ctx(), dt, p, vc, 1.f / 35, true, {}, 0, 1.f, 2);
    EXPECT_TRUE(std::fabs(a.loss - b.loss) <= 1e-5 * std::fabs(b.loss));
    EXPECT_EQ(a.count, b.count);
    all_close(a.row_loss, b.row_loss, 1e-5f, 1e-5f, "online CE row loss cuda vs cpu");
    all_close(a.dx, b.dx, dt == DType::F32 ? 1e-4f : 1.f / 64, max_abs(b.dx) / 256, "online CE dh cuda vs cpu");
  }
  // One chunk op on the same logits: probs and state against the CPU's.
  const int64_t vc2 = 1000;
  auto z = random_floats(n * vc2, -20, 20, 62);
  std::vector<int32_t> y(p.y.begin(), p.y.end());
  for (DType dt : {DType::F32, DType::BF16}) {
    std::vector<std::vector<float>> got;
    for (auto ctx : {test_ctx(), cpu_ctx()}) {
      CrossEntropyOnlineChunkArgs c{from_floats(ctx, DType::F32, {n, vc2}, z), from_bytes(ctx, DType::I32, {n}, y.data()),
                                    from_floats(ctx, DType::F32, {n}, std::vector<float>(n, 3.f)),
                                    from_floats(ctx, DType::F32, {n}, std::vector<float>(n, 2.f)),
                                    from_floats(ctx, DType::F32, {n}, std::vector<float>(n, 1.f)), 5000, v};
      c.probs = poisoned(ctx, dt, {n, vc2});
      c.acc = from_floats(ctx, DType::F32, {n, h}, random_floats(n * h, -1, 1, 63));
      cross_entropy_online_chunk(*ctx, c);
      got.push_back(to_floats(c.probs));
      got.push_back(to_floats(c.row_max));
      got.push_back(to_floats(c.row_sum));
      got.push_back(to_floats(c.acc));
    }
    all_close(got[0], got[4], dt == DType::F32 ? 1e-5f : 1.f / 128, 1e-30f, "online chunk probs cuda vs cpu");
    all_close(got[1], got[5], 0, 0, "online chunk row max cuda vs cpu");
    all_close(got[2], got[6], 1e-5f, 0, "online chunk row sum cuda vs cpu");
    all_close(got[3], got[7], 1e-5f, 1e-7f, "online chunk acc cuda vs cpu");
  }
}

QN_TEST(cross_entropy_online_rejects_bad_args) {
  auto ctx = test_ctx();
  const int64_t n = 4, vc = 10, v = 30, h = 8;
  auto f32 = [&](Shape s) { return Tensor::empty(ctx, DType::F32, s); };
  Tensor z = f32({n, vc}), y = Tensor::empty(ctx, DType::I32, {n}), m = f32({n}), s = f32({n}), t = f32({n});
  auto chunk = [&] { return CrossEntropyOnlineChunkArgs{z, y, m, s, t, 0, v}; };
  cross_entropy_online_chunk(*ctx, chunk());  // the valid call (contents arbitrary)
  auto bad = chunk();
  bad.v0 = 25;  // [25, 35) leaves the vocabulary
  EXPECT_THROWS_CODE(cross_entropy_online_chunk(*ctx, bad), Arg);
  bad = chunk();
  bad.logits = Tensor::empty(ctx, DType::BF16, {n, vc});
  EXPECT_THROWS_CODE(cross_entropy_online_chunk(*ctx, bad), DType);
  bad = chunk();
  bad.row_sum = f32({n + 1});
  EXPECT_THROWS_CODE(cross_entropy_online_chunk(*ctx, bad), Shape);
  bad = chunk();
  bad.probs = Tensor::empty(ctx, DType::BF16, {n, vc + 1});
  EXPECT_THROWS_CODE(cross_entropy_online_chunk(*ctx, bad), Shape);
  bad = chunk();
  bad.acc = Tensor::empty(ctx, DType::BF16, {n, h});
  EXPECT_THROWS_CODE(cross_entropy_online_chunk(*ctx, bad), DType);
  bad = chunk();
  bad.labels = f32({n});
  EXPECT_THROWS_CODE(cross_entropy_online_chunk(*ctx, bad), DType);

  Tensor ls = f32({1}), c = Tensor::empty(ctx, DType::I32, {1});
  auto fin = [&] {
    CrossEntropyOnlineFinishArgs a{y, m, s, t, v, ls, c};
    a.acc = f32({n, h}), a.weight = Tensor::empty(ctx, DType::BF16, {v, h}), a.dx = Tensor::empty(ctx, DType::BF16, {n, h});
    return a;
  };
  auto fb = fin();
  fb.weight = Tensor();  // acc and dx without the weight
  EXPECT_THROWS_CODE(cross_entropy_online_finish(*ctx, fb), Arg);
  fb = fin();
  fb.weight = Tensor::empty(ctx, DType::BF16, {v - 1, h});
  EXPECT_THROWS_CODE(cross_entropy_online_finish(*ctx, fb), Shape);
  fb = fin();
  fb.dx = Tensor::empty(ctx, DType::BF16, {n + 2, h});  // more rows than labels needs `rows`
  EXPECT_THROWS_CODE(cross_entropy_online_finish(*ctx, fb), Shape);
  fb.rows = Tensor::empty(ctx, DType::F32, {n});
  EXPECT_THROWS_CODE(cross_entropy_online_finish(*ctx, fb), DType);
  fb = fin();
  fb.count = f32({1});
  EXPECT_THROWS_CODE(cross_entropy_online_finish(*ctx, fb), DType);
  if (testing_cuda()) {
    fb = fin();
    fb.acc = Tensor::empty(cpu_ctx(), DType::F32, {n, h});
    EXPECT_THROWS_CODE(cross_entropy_online_finish(*ctx, fb), Device);
  }
}
