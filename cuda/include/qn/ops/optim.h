// Optimizer ops over ONE contiguous f32 parameter buffer and its gradient buffer (all LoRA tensors
// laid out back to back): a single multi-tensor launch per step.
//   adamw_step    torch.optim.AdamW (decoupled weight decay applied first, eps outside the sqrt,
//                 bias corrections with step t), states f32 (AdamW32) or bitsandbytes-style
//                 blockwise 8-bit (AdamW8: blocks of 256, m on the signed dynamic map, v on the
//                 unsigned dynamic map, one f32 absmax per block and state). The gradient is
//                 multiplied by a clip/scale coefficient before use (fused clipping, one pass).
//   grad_norm_sq  sum of squares of the gradient (double accumulation, fixed chunking and a
//                 fixed-order reduction: bit-identical run to run on both backends), plus an
//                 optional non-finite flag from the same pass.
//   nonfinite     flag = 1 when any element is NaN or +-Inf.
// State buffers come from optim_state_create; with `paged` on CUDA they live in managed memory
// (cudaMallocManaged) and are prefetched to the device before each step, so the driver can spill
// them to host memory when the device runs short (bitsandbytes' paged optimizers).
// CPU: cuda/cpu/optim.cpp, CUDA: cuda/kernels/optim.cu, tests: cuda/tests/test_optim.cpp.
#pragma once
#include <cmath>
#include <memory>
#include <string>
#include "qn/op.h"

namespace qn {

enum class OptimKind : int32_t {
  AdamW32 = 0,  // m, v f32 [n]
  AdamW8 = 1,   // m, v u8 codes [n]; absmax_m, absmax_v f32 [ceil(n/256)]; qmap f32 [4, 256]
};
constexpr int64_t kOptim8BlockSize = 256;
const char* optim_kind_name(OptimKind k);                    // "adamw_32bit", "adamw_8bit"
bool parse_optim_kind(const std::string& name, OptimKind* out);

// The optimizer state of one parameter buffer of n elements. A plain bundle of tensors (copies
// share the storage). Zero-initialized by optim_state_create (as torch's / bitsandbytes' fresh
// state). `owner` is the session whose stream the state is used on; with `paged` the tensors are
// allocated through a managed-memory context that forwards everything else to `owner`.
struct OptimState {
  OptimKind kind = OptimKind::AdamW32;
  bool paged = false;
  int64_t n = 0;
  std::shared_ptr<Context> owner;
  Tensor m, v;
  Tensor absmax_m, absmax_v;  // AdamW8 only
  // AdamW8 only, f32 [4, 256]: rows 0, 1 the signed (m) and unsigned (v) dynamic maps, rows 2, 3
  // their decision midpoints (optim_midpoints).
  Tensor qmap;
};

// Allocates and zero-fills a state for n parameters on ctx's device. paged is honoured on CUDA
// only (ignored on CPU). Throws E_OOM when the managed allocation would exceed the free device
// memory (cudaMemGetInfo, after trimming the stream-ordered pool) plus the available host memory
// (it may exceed the device's alone: pages spill to the host), E_ARG for n < 0.
OptimState optim_state_create(const std::shared_ptr<Context>& ctx, int64_t n, OptimKind kind, bool paged = false);

// bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): 256 sorted f32
// values, computed with torch's float32 linspace and arithmetic (the signed map equals the
// `dynamic_map` fixture bit for bit).
void dynamic_map(bool is_signed, float out[256]);
// The 255 decision midpoints f32((map[k] + map[k+1]) * 0.5) of a sorted map, padded with +inf.
void optim_midpoints(const float map[256], float out[256]);

struct AdamWArgs {
  Tensor param;  // f32 [n] (any shape; treated as flat), updated in place
  Tensor grad;   // f32, same element count; read only
  OptimState state;
  int64_t step = 1;  // t: 1 for the first update (torch increments before the update)
  // Hyper-parameters as JS / torch hold them (double); adamw_coefs rounds each derived value once.
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  // g_used = grad * grad_scale * clip, with clip = min(1, max_grad_norm / (sqrt(norm_sq) + 1e-6))
  // (torch clip_grad_norm_, in f32) when norm_sq (f32 [1], the sum of squares of `grad` as
  // grad_norm_sq writes it, read on the device: no host round trip) is given and max_grad_norm > 0;
  // clip = 1 otherwise. Pass the clip coefficient through grad_scale to clip from the host.
  float grad_scale = 1.f;
  Tensor norm_sq;
  float max_grad_norm = 0.f;
};

struct GradNormSqArgs {
  Tensor grad;  // f32 (flat)
  Tensor out;   // f32 [1]: sum of squares (accumulated in double, rounded once)
  Tensor flag;  // optional i32 [1]: 1 if any element is NaN/Inf, else 0
};

struct NonfiniteArgs {
  Tensor x;     // f32, bf16 or f16 (flat)
  Tensor flag;  // i32 [1]
};

QN_DECLARE_OP(adamw_step, AdamWArgs)
QN_DECLARE_OP(grad_norm_sq, GradNormSqArgs)
QN_DECLARE_OP(nonfinite, NonfiniteArgs)

// Checks shared by both backends.
void check_adamw(const AdamWArgs& a);
void check_grad_norm_sq(const GradNormSqArgs& a);
void check_nonfinite(const NonfiniteArgs& a);

// Host-side step coefficients, computed in double as torch does in Python and rounded once to
// f32 (as torch's scalar arguments are), identical on both backends (see adamw_update).
struct AdamWCoefs {
  float decay, omb1, beta2, omb2, eps, neg_step_size, bc2_sqrt;
};
AdamWCoefs adamw_coefs(const AdamWArgs& a);

// ---- element math shared by the CPU op and the CUDA kernels (host and device) ----------------
#if defined(__CUDACC__)
#define QN_OPTIM_HD __host__ __device__ __forceinline__
#else
#define QN_OPTIM_HD inline __attribute__((always_inline))
#endif

// The element math rounds exactly as written on both backends, so CPU and CUDA agree bit for bit
// (denormals aside: the CUDA build flushes them) and the CPU follows torch's own rounding steps:
// products, sums, quotients and square roots each rounded once, fused multiply-adds only where
// written (optim_fma). Device code uses the _rn intrinsics (never contracted, IEEE even under
// --use_fast_math); cuda/cpu/optim.cpp compiles with fp-contract off.
QN_OPTIM_HD float optim_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
QN_OPTIM_HD float optim_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
QN_OPTIM_HD float optim_fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
QN_OPTIM_HD float optim_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
QN_OPTIM_HD float optim_sqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// The fused clip coefficient from a sum of squares (torch clip_grad_norm_ in float32).
QN_OPTIM_HD float clip_coef_from_norm_sq(float norm_sq, float max_norm) {
  const float coef = optim_div(max_norm, optim_sqrt(norm_sq) + 1e-6f);
  return coef < 1.f ? coef : 1.f;
}

// One AdamW element update in torch's order and rounding (single-tensor torch.optim.AdamW on the
// CPU): p *= decay; m = lerp(m, g, 1 - beta1) (torch's vectorized lerp: one fma); v = v * beta2 +
// ((1 - beta2) * g) * g; p += -step_size * (m / (sqrt(v) / bc2_sqrt + eps)). g is already
// multiplied by the clip coefficient (optim_mul).
QN_OPTIM_HD void adamw_update(float& p, float g, float& m, float& v, const AdamWCoefs& c) {
  p = optim_mul(p, c.decay);
  m = c.omb1 < 0.5f ? optim_fma(c.omb1, g - m, m) : optim_fma(c.omb1 - 1.f, g - m, g);
  v = optim_add(optim_mul(v, c.beta2), optim_mul(optim_mul(c.omb2, g), g));
  const float denom = optim_add(optim_div(optim_sqrt(v), c.bc2_sqrt), c.eps);
  p = optim_add(p, optim_mul(c.neg_step_size, optim_div(m, denom)));
}

// The 8-bit code of x (already divided by the block absmax): the nearest map entry, i.e. the
// number of decision midpoints below x (a value exactly on a midpoint takes the lower code;
// bitsandbytes' binary search agrees except, at most, on such exact midpoints). Branch-free
// 8-step lower bound over `mid` (optim_midpoints), so the CPU loop vectorizes with gathers.
QN_OPTIM_HD uint8_t quantize_to_map(const float* mid, float x) {
  int c = 0;  // unrolled by hand: GCC then vectorizes the caller's loop (8 gathers)
  c += mid[c + 127] < x ? 128 : 0;
  c += mid[c + 63] < x ? 64 : 0;
  c += mid[c + 31] < x ? 32 : 0;
  c += mid[c + 15] < x ? 16 : 0;
  c += mid[c + 7] < x ? 8 : 0;
  c += mid[c + 3] < x ? 4 : 0;
  c += mid[c + 1] < x ? 2 : 0;
  c += mid[c] < x ? 1 : 0;
  return static_cast<uint8_t>(c);
}

// One step toward m's sign when the code's value has the other sign (bitsandbytes keeps m's sign
// through quantization): +1, -1 or 0, branch-free.
QN_OPTIM_HD int sign_fix(float m, float q) {
  return static_cast<int>((m > 0.f) & (q < 0.f)) - static_cast<int>((m < 0.f) & (q >= 0.f));
}

// Requantizes one updated state value against its block's new absmax. m (signed map): a code
// whose value has the other sign is moved one step toward the right sign (bitsandbytes keeps m's
// sign through quantization); an all-zero block stores the code of 0. v (unsigned map): nearest.
QN_OPTIM_HD uint8_t quantize_m(const float* smap, const float* smid, float m, float absmax) {
  if (!(absmax > 0.f)) return 127;  // smap[127] == 0
  const int c = quantize_to_map(smid, optim_div(m, absmax));
  return static_cast<uint8_t>(c + sign_fix(m, smap[c]));
}
QN_OPTIM_HD uint8_t quantize_v(const float* umid, float v, float absmax) {
  if (!(absmax > 0.f)) return 0;  // umap[0] == 0
  return quantize_to_map(umid, optim_div(v, absmax));
}

#ifdef QN_WITH_CUDA
namespace cuda {
// A Context that allocates managed memory (cudaMallocManaged, after checking device + host free) and
// forwards copies, stream and usability checks to `device_ctx`.
std::shared_ptr<Context> managed_context(const std::shared_ptr<Context>& device_ctx);
}  // namespace cuda
#endif

}  // namespace qn
