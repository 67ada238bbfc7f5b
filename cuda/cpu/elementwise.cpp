// CPU elementwise ops (see qn/ops/elementwise.h). Plain loops the compiler vectorizes, split
// across the thread pool.
#include "qn/half.h"
#include "qn/ops/elementwise.h"
#include "qn/parallel.h"

namespace qn {
namespace cpu {
namespace {

constexpr int64_t kGrain = 1 << 15;

float load(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::U8: return static_cast<float>(static_cast<const uint8_t*>(p)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(p)[i]);
  }
  return 0.f;
}

void store(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = v; break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    default: break;
  }
}

}  // namespace

void cast(Context&, const CastArgs& a) {
  check_cast(a);
  const DType s = a.src.dtype(), d = a.dst.dtype();
  const void* src = a.src.raw();
  void* dst = a.dst.raw();
  parallel_for(a.src.numel(), kGrain, [&](int64_t b, int64_t e) {
    if (s == DType::F32 && d == DType::BF16) {
      const float* x = static_cast<const float*>(src);
      uint16_t* y = static_cast<uint16_t*>(dst);
      for (int64_t i = b; i < e; ++i) y[i] = f32_to_bf16(x[i]);
    } else if (s == DType::BF16 && d == DType::F32) {
      const uint16_t* x = static_cast<const uint16_t*>(src);
      float* y = static_cast<float*>(dst);
      for (int64_t i = b; i < e; ++i) y[i] = bf16_to_f32(x[i]);
    } else {
      for (int64_t i = b; i < e; ++i) store(dst, d, i, load(src, s, i));
    }
  });
}

void fill(Context&, const FillArgs& a) {
  check_fill(a);
  const int64_t n = a.dst.numel();
  void* dst = a.dst.raw();
  const DType t = a.dst.dtype();
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      switch (t) {
        case DType::U8: static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(a.value); break;
        case DType::I32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(a.value); break;
        default: store(dst, t, i, static_cast<float>(a.value));
      }
    }
  });
}

void axpby(Context&, const AxpbyArgs& a) {
  check_axpby(a);
  const float* x = a.x.data<float>();
  float* y = a.y.data<float>();
  const float alpha = a.alpha, beta = a.beta;
  parallel_for(a.x.numel(), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = alpha * x[i] + beta * y[i];
  });
}

}  // namespace cpu
}  // namespace qn
