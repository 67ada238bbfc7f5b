// Elementwise ops: casts against the host RNE conversions, fill, axpby; on CUDA against the CPU.
#include "harness.h"
#include "qn/ops/elementwise.h"

using namespace qn;
using namespace qnt;

QN_TEST(cast_roundtrip_all_float_dtypes) {
  auto ctx = test_ctx();
  const size_t n = 10007;  // not a multiple of any vector width
  std::vector<float> v = random_floats(n, -70000.f, 70000.f, 1);
  v[0] = 0.f; v[1] = -0.f; v[2] = 1e-8f; v[3] = 65504.f; v[4] = 1.00390625f;  // bf16 tie case
  Tensor src = from_floats(ctx, DType::F32, {(int64_t)n}, v);
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor mid = poisoned(ctx, dt, {(int64_t)n});
    Tensor back = poisoned(ctx, DType::F32, {(int64_t)n});
    cast(*ctx, CastArgs{src, mid});
    cast(*ctx, CastArgs{mid, back});
    std::vector<float> want(n);
    for (size_t i = 0; i < n; ++i)
      want[i] = dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(v[i])) : f16_to_f32(f32_to_f16(v[i]));
    all_close(to_floats(back), want, 0.f, 0.f, std::string("cast f32->") + dtype_name(dt) + "->f32");
  }
}

QN_TEST(cast_int_to_f32) {
  auto ctx = test_ctx();
  std::vector<float> v = {0, 1, 2, 255, 7};
  Tensor src = from_floats(ctx, DType::U8, {5}, v);
  Tensor dst = poisoned(ctx, DType::F32, {5});
  cast(*ctx, CastArgs{src, dst});
  all_close(to_floats(dst), v, 0, 0, "cast u8->f32");
}

QN_TEST(cast_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor a = Tensor::empty(ctx, DType::F32, {4});
  Tensor b = Tensor::empty(ctx, DType::BF16, {5});
  EXPECT_THROWS_CODE(cast(*ctx, CastArgs{a, b}), Shape);
  Tensor c = Tensor::empty(ctx, DType::I32, {4});
  EXPECT_THROWS_CODE(cast(*ctx, CastArgs{a, c}), DType);
  if (testing_cuda()) {
    Tensor h = Tensor::empty(cpu_ctx(), DType::BF16, {4});
    EXPECT_THROWS_CODE(cast(*ctx, CastArgs{a, h}), Device);
  }
}

QN_TEST(fill_and_axpby) {
  auto ctx = test_ctx();
  const int64_t n = 70001;
  Tensor y = poisoned(ctx, DType::F32, {n});
  fill(*ctx, FillArgs{y, 0.5});
  std::vector<float> xv = random_floats(n, -1, 1, 2);
  Tensor x = from_floats(ctx, DType::F32, {n}, xv);
  axpby(*ctx, AxpbyArgs{x, y, 2.f, -3.f});
  std::vector<float> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = 2.f * xv[i] - 1.5f;
  all_close(to_floats(y), want, 1e-6f, 1e-6f, "axpby");
  Tensor h = poisoned(ctx, DType::BF16, {3});
  fill(*ctx, FillArgs{h, 1.0 / 3.0});
  all_close(to_floats(h), std::vector<float>(3, bf16_to_f32(f32_to_bf16(1.f / 3.f))), 0, 0, "fill bf16");
}
