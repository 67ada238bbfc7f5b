// Embedding: gather against the table rows exactly (every table/out dtype pair), out-of-range ids
// give zero rows, the scatter-add backward against a float64 sum with repeated ids, bad
// arguments; on CUDA against the CPU.
#include "harness.h"
#include "qn/ops/embedding.h"

using namespace qn;
using namespace qnt;

namespace {

std::vector<int32_t> make_ids(int64_t n, int64_t v, uint64_t salt) {
  auto r = random_floats(n, 0, (float)v, salt);
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = std::min<int32_t>((int32_t)r[i], (int32_t)v - 1);
  return ids;
}

}  // namespace

QN_TEST(embedding_gather_exact) {
  auto ctx = test_ctx();
  const int64_t v = 1000, h = 67, b = 3, t = 11;
  auto tab = random_floats(v * h, -1, 1, 1);
  auto ids = make_ids(b * t, v, 2);
  ids[4] = -1;
  ids[5] = (int32_t)v;  // out of range: zero rows
  Tensor tid = from_bytes(ctx, DType::I32, {b, t}, ids.data());
  for (DType tt : {DType::F32, DType::BF16})
    for (DType to : {DType::F32, DType::BF16}) {
      Tensor table = from_floats(ctx, tt, {v, h}, tab), out = poisoned(ctx, to, {b, t, h});
      embedding(*ctx, EmbeddingArgs{table, tid, out});
      const auto tv = to_floats(table);
      std::vector<float> want(b * t * h, 0.f);
      for (int64_t i = 0; i < b * t; ++i)
        if (ids[i] >= 0 && ids[i] < v)
          for (int64_t j = 0; j < h; ++j) {
            const float x = tv[ids[i] * h + j];
            want[i * h + j] = to == DType::BF16 ? bf16_to_f32(f32_to_bf16(x)) : x;
          }
      all_close(to_floats(out), want, 0, 0, std::string("embedding ") + dtype_name(tt) + "->" + dtype_name(to));
    }
}

QN_TEST(embedding_backward_scatter_add) {
  auto ctx = test_ctx();
  const int64_t v = 50, h = 33, n = 400;  // many repeats of each id
  auto ids = make_ids(n, v, 3);
  ids[0] = -5;
  auto dout = random_floats(n * h, -1, 1, 4);
  Tensor tid = from_bytes(ctx, DType::I32, {n}, ids.data());
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor td = from_floats(ctx, dt, {n, h}, dout);
    const auto dv = to_floats(td);
    Tensor dtab = from_floats(ctx, DType::F32, {v, h}, std::vector<float>(v * h, 1.f));
    embedding_backward(*ctx, EmbeddingBackwardArgs{tid, td, dtab});
    std::vector<double> want(v * h, 1.0);
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] >= 0)
        for (int64_t j = 0; j < h; ++j) want[ids[i] * h + j] += dv[i * h + j];
    // f32 sums of ~8 terms of |x| <= 1 (any order on CUDA): well within 1e-5.
    all_close(to_floats(dtab), std::vector<float>(want.begin(), want.end()), 1e-6f, 1e-5f,
              std::string("embedding_backward ") + dtype_name(dt));
  }
}

QN_TEST(embedding_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  const int64_t v = 151936, h = 72, n = 777;  // the full Qwen2 vocabulary, a narrow row
  auto tab = random_floats(v * 16, -1, 1, 5);  // a smaller random block, tiled
  std::vector<float> big(v * h);
  for (int64_t i = 0; i < v * h; ++i) big[i] = tab[i % tab.size()] + (float)(i / h) * 1e-3f;
  auto ids = make_ids(n, v, 6);
  std::vector<float> out[2];
  int k = 0;
  for (auto ctx : {test_ctx(), cpu_ctx()}) {
    Tensor table = from_floats(ctx, DType::BF16, {v, h}, big), o = poisoned(ctx, DType::BF16, {n, h});
    embedding(*ctx, EmbeddingArgs{table, from_bytes(ctx, DType::I32, {n}, ids.data()), o});
    out[k++] = to_floats(o);
  }
  all_close(out[0], out[1], 0, 0, "embedding cuda vs cpu");
}

QN_TEST(embedding_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor tab = Tensor::empty(ctx, DType::F32, {10, 4}), ids = Tensor::empty(ctx, DType::I32, {3});
  EXPECT_THROWS_CODE(embedding(*ctx, EmbeddingArgs{tab, ids, Tensor::empty(ctx, DType::F32, {3, 5})}), Shape);
  EXPECT_THROWS_CODE(embedding(*ctx, EmbeddingArgs{tab, ids, Tensor::empty(ctx, DType::F32, {4, 4})}), Shape);
  EXPECT_THROWS_CODE(embedding(*ctx, EmbeddingArgs{tab, Tensor::empty(ctx, DType::F32, {3}), Tensor::empty(ctx, DType::F32, {3, 4})}), DType);
  EXPECT_THROWS_CODE(embedding_backward(*ctx, EmbeddingBackwardArgs{ids, Tensor::empty(ctx, DType::F32, {3, 4}), Tensor::empty(ctx, DType::BF16, {10, 4})}), DType);
  if (testing_cuda()) EXPECT_THROWS_CODE(embedding(*ctx, EmbeddingArgs{tab, Tensor::empty(cpu_ctx(), DType::I32, {3}), Tensor::empty(ctx, DType::F32, {3, 4})}), Device);
}
