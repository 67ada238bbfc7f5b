// residual_add: every f32/bf16 combination against a float64 loop rounded once, in place, bad
// arguments; on CUDA against the CPU.
#include "harness.h"
#include "qn/ops/residual.h"

using namespace qn;
using namespace qnt;

QN_TEST(residual_add_all_dtypes) {
  auto ctx = test_ctx();
  const int64_t n = 70001;
  auto av = random_floats(n, -3, 3, 1), bv = random_floats(n, -3, 3, 2);
  for (DType ta : {DType::F32, DType::BF16})
    for (DType tb : {DType::F32, DType::BF16})
      for (DType ty : {DType::F32, DType::BF16}) {
        Tensor a = from_floats(ctx, ta, {n}, av), b = from_floats(ctx, tb, {n}, bv), y = poisoned(ctx, ty, {n});
        residual_add(*ctx, ResidualAddArgs{a, b, y, 0.5f, -2.f});
        const auto ra = to_floats(a), rb = to_floats(b);
        std::vector<float> want(n);
        for (int64_t i = 0; i < n; ++i) {
          const float v = (float)(0.5 * ra[i] - 2.0 * rb[i]);
          want[i] = ty == DType::BF16 ? bf16_to_f32(f32_to_bf16(v)) : v;
        }
        // f32 math (an FMA may differ by an ulp of the f32 result), then one rounding: the bf16
        // result may flip by one bf16 ulp (<= 2^-7 relative) only when the f32 value sits on a
        // rounding boundary.
        all_close(to_floats(y), want, ty == DType::BF16 ? 1.f / 128 : 2e-7f, 1e-30f,
                  std::string("residual_add ") + dtype_name(ta) + "+" + dtype_name(tb) + "->" + dtype_name(ty));
      }
  Tensor a = from_floats(ctx, DType::BF16, {n}, av), b = from_floats(ctx, DType::BF16, {n}, bv);
  Tensor y = poisoned(ctx, DType::BF16, {n});
  residual_add(*ctx, ResidualAddArgs{a, b, y});
  residual_add(*ctx, ResidualAddArgs{a, b, a});
  all_close(to_floats(a), to_floats(y), 0, 0, "residual_add in place");
}

QN_TEST(residual_add_cuda_matches_cpu) {
  if (!testing_cuda()) return;
  const int64_t n = 1 << 20 | 3;
  auto av = random_floats(n, -3, 3, 3), bv = random_floats(n, -3, 3, 4);
  std::vector<float> out[2];
  int k = 0;
  for (auto ctx : {test_ctx(), cpu_ctx()}) {
    Tensor a = from_floats(ctx, DType::BF16, {n}, av), b = from_floats(ctx, DType::F32, {n}, bv);
    Tensor y = poisoned(ctx, DType::BF16, {n});
    residual_add(*ctx, ResidualAddArgs{a, b, y, 1.f, 1.f});
    out[k++] = to_floats(y);
  }
  all_close(out[0], out[1], 0, 0, "residual_add cuda vs cpu");
}

QN_TEST(residual_add_rejects_bad_args) {
  auto ctx = test_ctx();
  Tensor a = Tensor::empty(ctx, DType::F32, {8});
  EXPECT_THROWS_CODE(residual_add(*ctx, ResidualAddArgs{a, Tensor::empty(ctx, DType::F32, {9}), a}), Shape);
  EXPECT_THROWS_CODE(residual_add(*ctx, ResidualAddArgs{a, Tensor::empty(ctx, DType::I32, {8}), a}), DType);
  if (testing_cuda()) EXPECT_THROWS_CODE(residual_add(*ctx, ResidualAddArgs{a, Tensor::empty(cpu_ctx(), DType::F32, {8}), a}), Device);
}
