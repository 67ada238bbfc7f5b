// Optimizer ops, backend-independent parts (see qn/ops/optim.h): argument checks, the step
// coefficients, the bitsandbytes dynamic maps and 8-bit code search, and state creation.
#include <algorithm>
#include <cmath>
#include <vector>
#include "qn/ops/optim.h"

namespace qn {

const char* optim_kind_name(OptimKind k) {
  switch (k) {
    case OptimKind::AdamW32: return "adamw_32bit";
    case OptimKind::AdamW8: return "adamw_8bit";
  }
  return "?";
}

bool parse_optim_kind(const std::string& name, OptimKind* out) {
  if (name == "adamw_32bit" || name == "adamw") *out = OptimKind::AdamW32;
  else if (name == "adamw_8bit") *out = OptimKind::AdamW8;
  else return false;
  return true;
}

namespace {

// torch.linspace(0.1, 1, steps) in float32 as its vectorized CPU kernel computes it: step =
// (end - start) / (steps - 1) in f32; the first half is fma(step, i, start), the second half
// fma(-step, steps - 1 - i, end), each rounded once (matches the bitsandbytes table bit for bit).
std::vector<float> linspace_f32(float start, float end, int steps) {
  std::vector<float> r(static_cast<size_t>(steps));
  if (steps == 1) {
    r[0] = start;
    return r;
  }
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; ++i)
    r[i] = i < halfway ? std::fma(step, static_cast<float>(i), start)
                       : std::fma(-step, static_cast<float>(steps - i - 1), end);
  return r;
}

}  // namespace

void dynamic_map(bool is_signed, float out[256]) {
  const int max_exponent_bits = 7, non_sign_bits = 7;  // total_bits 8
  std::vector<float> data;
  for (int i = 0; i < max_exponent_bits; ++i) {
    const int items = is_signed ? (1 << (i + non_sign_bits - max_exponent_bits)) + 1
                                : (1 << (i + non_sign_bits - max_exponent_bits + 1)) + 1;
    const std::vector<float> b = linspace_f32(0.1f, 1.0f, items);
    const float scale = static_cast<float>(std::pow(10.0, i - (max_exponent_bits - 1)));
    for (int k = 0; k + 1 < items; ++k) {
      const float mean = (b[k] + b[k + 1]) / 2.0f;
      const float v = scale * mean;
      data.push_back(v);
      if (is_signed) data.push_back(-v);
    }
  }
  data.push_back(0.f);
  data.push_back(1.f);
  std::sort(data.begin(), data.end());
  for (int i = 0; i < 256; ++i) out[i] = i < static_cast<int>(data.size()) ? data[i] : 0.f;
}

void optim_midpoints(const float map[256], float out[256]) {
  for (int k = 0; k < 255; ++k) out[k] = (map[k] + map[k + 1]) * 0.5f;
  out[255] = INFINITY;
}

AdamWCoefs adamw_coefs(const AdamWArgs& a) {
  const double t = static_cast<double>(a.step);
  const double bc1 = 1.0 - std::pow(a.beta1, t);
  const double bc2 = 1.0 - std::pow(a.beta2, t);
  AdamWCoefs c;
  c.decay = static_cast<float>(1.0 - a.lr * a.weight_decay);
  c.omb1 = static_cast<float>(1.0 - a.beta1);
  c.beta2 = static_cast<float>(a.beta2);
  c.omb2 = static_cast<float>(1.0 - a.beta2);
  c.eps = static_cast<float>(a.eps);
  c.neg_step_size = static_cast<float>(-(a.lr / bc1));
  c.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  return c;
}

namespace {

bool flat_f32(const Tensor& t) { return t.defined() && t.dtype() == DType::F32; }

// A one-element tensor of dtype dt in the same session as `base`.
void expect_scalar(const Tensor& base, const Tensor& t, DType dt, const char* op, const char* name) {
  expect_same_context(base, t, op);
  expect_dtype(t, dt, op, name);
  QN_CHECK(t.numel() == 1, Shape, std::string(op) + ": " + name + " must hold one element");
}

void check_state(const AdamWArgs& a, int64_t n) {
  const OptimState& s = a.state;
  QN_CHECK(s.m.defined() && s.v.defined() && s.owner, Arg, "adamw_step: the optimizer state is missing (use optim_state_create)");
  QN_CHECK(s.owner == a.param.ctx_ptr(), Device,
           "adamw_step: the optimizer state belongs to another session than the parameters");
  QN_CHECK(s.n == n, Shape,
           "adamw_step: the optimizer state holds " + std::to_string(s.n) + " elements, the parameters " + std::to_string(n));
  const Device dev = a.param.device();
  auto same_device = [&](const Tensor& t, const char* name) {
    QN_CHECK(t.defined(), Arg, std::string("adamw_step: state tensor ") + name + " is missing");
    QN_CHECK(t.device() == dev, Device, std::string("adamw_step: state tensor ") + name + " is on " + t.device().str() +
                                            ", the parameters on " + dev.str());
  };
  same_device(s.m, "m");
  same_device(s.v, "v");
  if (s.kind == OptimKind::AdamW32) {
    expect_dtype(s.m, DType::F32, "adamw_step", "state m");
    expect_dtype(s.v, DType::F32, "adamw_step", "state v");
    QN_CHECK(s.m.numel() == n && s.v.numel() == n, Shape, "adamw_step: state m/v sizes differ from the parameters");
  } else {
    const int64_t blocks = (n + kOptim8BlockSize - 1) / kOptim8BlockSize;
    expect_dtype(s.m, DType::U8, "adamw_step", "state m");
    expect_dtype(s.v, DType::U8, "adamw_step", "state v");
    same_device(s.absmax_m, "absmax_m");
    same_device(s.absmax_v, "absmax_v");
    same_device(s.qmap, "qmap");
    expect_dtype(s.absmax_m, DType::F32, "adamw_step", "state absmax_m");
    expect_dtype(s.absmax_v, DType::F32, "adamw_step", "state absmax_v");
    expect_dtype(s.qmap, DType::F32, "adamw_step", "state qmap");
    QN_CHECK(s.m.numel() == n && s.v.numel() == n && s.absmax_m.numel() == blocks && s.absmax_v.numel() == blocks &&
                 s.qmap.numel() == 1024,
             Shape, "adamw_step: 8-bit state tensors have the wrong sizes");
  }
}

}  // namespace

void check_adamw(const AdamWArgs& a) {
  expect_same_context(a.param, a.grad, "adamw_step");
  expect_dtype(a.param, DType::F32, "adamw_step", "param");
  expect_dtype(a.grad, DType::F32, "adamw_step", "grad");
  const int64_t n = a.param.numel();
  QN_CHECK(a.grad.numel() == n, Shape,
           "adamw_step: param " + shape_str(a.param.shape()) + " and grad " + shape_str(a.grad.shape()) + " differ in size");
  check_state(a, n);
  QN_CHECK(a.step >= 1, Arg, "adamw_step: step must be >= 1 (the first update is step 1), got " + std::to_string(a.step));
  QN_CHECK(std::isfinite(a.lr) && a.lr >= 0, Arg, "adamw_step: lr must be finite and >= 0");
  QN_CHECK(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1, Arg, "adamw_step: betas must be in [0, 1)");
  QN_CHECK(a.eps > 0 && std::isfinite(a.eps), Arg, "adamw_step: eps must be > 0");
  QN_CHECK(a.weight_decay >= 0 && std::isfinite(a.weight_decay), Arg, "adamw_step: weight_decay must be >= 0");
  QN_CHECK(std::isfinite(a.grad_scale), Arg, "adamw_step: grad_scale must be finite");
  QN_CHECK(std::isfinite(a.max_grad_norm) && a.max_grad_norm >= 0, Arg, "adamw_step: max_grad_norm must be >= 0");
  if (a.norm_sq.defined()) expect_scalar(a.param, a.norm_sq, DType::F32, "adamw_step", "norm_sq");
}

void check_grad_norm_sq(const GradNormSqArgs& a) {
  QN_CHECK(flat_f32(a.grad), DType, "grad_norm_sq: grad must be f32");
  expect_scalar(a.grad, a.out, DType::F32, "grad_norm_sq", "out");
  if (a.flag.defined()) expect_scalar(a.grad, a.flag, DType::I32, "grad_norm_sq", "flag");
}

void check_nonfinite(const NonfiniteArgs& a) {
  QN_CHECK(a.x.defined(), Arg, "nonfinite: x is missing");
  const DType d = a.x.dtype();
  QN_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F16, DType,
           std::string("nonfinite: x must be f32, bf16 or f16, got ") + dtype_name(d));
  expect_scalar(a.x, a.flag, DType::I32, "nonfinite", "flag");
}

OptimState optim_state_create(const std::shared_ptr<Context>& ctx, int64_t n, OptimKind kind, bool paged) {
  QN_CHECK(ctx != nullptr, Arg, "optim_state_create: no session");
  QN_CHECK(n >= 0, Arg, "optim_state_create: n must be >= 0, got " + std::to_string(n));
  QN_CHECK(kind == OptimKind::AdamW32 || kind == OptimKind::AdamW8, Arg, "optim_state_create: unknown optimizer kind");
  ctx->check_usable();
  OptimState s;
  s.kind = kind;
  s.n = n;
  s.owner = ctx;
  std::shared_ptr<Context> alloc_ctx = ctx;
  if (paged && ctx->device().type == DeviceType::CUDA) {
#ifdef QN_WITH_CUDA
    alloc_ctx = cuda::managed_context(ctx);
    s.paged = true;
#endif
  }
  auto zeros = [&](DType dt, const Shape& shape) {
    Tensor t = Tensor::empty(alloc_ctx, dt, shape);
    if (t.nbytes()) alloc_ctx->memset(t.raw(), 0, t.nbytes());
    return t;
  };
  if (kind == OptimKind::AdamW32) {
    s.m = zeros(DType::F32, {n});
    s.v = zeros(DType::F32, {n});
    return s;
  }
  const int64_t blocks = (n + kOptim8BlockSize - 1) / kOptim8BlockSize;
  s.m = zeros(DType::U8, {n});
  s.v = zeros(DType::U8, {n});
  s.absmax_m = zeros(DType::F32, {blocks});
  s.absmax_v = zeros(DType::F32, {blocks});
  // Codes 0 with absmax 0 decode to map[0] * 0 = 0 for both maps: a zero state, like bitsandbytes'.
  float maps[1024];
  dynamic_map(true, maps);
  dynamic_map(false, maps + 256);
  optim_midpoints(maps, maps + 512);
  optim_midpoints(maps + 256, maps + 768);
  s.qmap = Tensor::empty(alloc_ctx, DType::F32, {4, 256});
  alloc_ctx->copy_from_host(s.qmap.raw(), maps, sizeof(maps));
  return s;
}

}  // namespace qn
