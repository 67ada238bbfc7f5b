// CUDA optimizer ops (see qn/ops/optim.h), one launch per step over the whole parameter buffer.
//   adamw32_kernel   f32 states; grid-stride over float4 (p, g, m, v) when n % 4 == 0 and every
//                    buffer is 16-byte aligned, scalar otherwise. torch.optim.AdamW order; the
//                    clip coefficient is read on the device from norm_sq when given.
//   adamw8_kernel    bitsandbytes-style blockwise 8-bit states: 256 threads handle 4 blocks of 256
//                    elements (4 per thread, float4 / uchar4 loads), dequantize (map[code] * absmax),
//                    update in f32, block max of |m| and v (warp shuffles + shared memory), store
//                    the new absmax and requantize with the same binary search as the CPU.
//   sumsq_partial_kernel + sumsq_final_kernel
//                    sum of squares in double: a fixed grid (a function of n only) writes one
//                    partial per block, then one block adds them in a fixed tree order, so the
//                    result is bit-identical run to run (no atomics).
//   nonfinite_kernel 16-byte loads over the raw bytes; any all-ones exponent sets the flag.
// The element math uses the _rn intrinsics (optim.h: no contraction, IEEE division and sqrt even
// under --use_fast_math), so CUDA matches the CPU bit for bit (denormals included: this file is compiled with -ftz=false). Paged states (managed memory) are
// prefetched to the device on the session stream before the step.
#include <atomic>
#include <cfloat>
#include <memory>
#include <unistd.h>
#include "cuda_common.cuh"
#include "qn/memory_stats.h"
#include "qn/ops/optim.h"

namespace qn {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kNormBlocksMax = 1024;

__device__ __forceinline__ float clip_coef(float scale, const float* norm_sq, float max_norm) {
  return norm_sq ? optim_mul(scale, clip_coef_from_norm_sq(*norm_sq, max_norm)) : scale;
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads) adamw32_kernel(float* __restrict__ p, const float* __restrict__ g,
                                                           float* __restrict__ m, float* __restrict__ v, long long n,
                                                           AdamWCoefs c, float scale, const float* norm_sq,
                                                           float max_norm) {
  const float coef = clip_coef(scale, norm_sq, max_norm);
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (kVec) {
    const long long n4 = n >> 2;
    for (; i < n4; i += stride) {
      float4 pv = reinterpret_cast<float4*>(p)[i];
      const float4 gv = reinterpret_cast<const float4*>(g)[i];
      float4 mv = reinterpret_cast<float4*>(m)[i];
      float4 vv = reinterpret_cast<float4*>(v)[i];
      adamw_update(pv.x, optim_mul(gv.x, coef), mv.x, vv.x, c);
      adamw_update(pv.y, optim_mul(gv.y, coef), mv.y, vv.y, c);
      adamw_update(pv.z, optim_mul(gv.z, coef), mv.z, vv.z, c);
      adamw_update(pv.w, optim_mul(gv.w, coef), mv.w, vv.w, c);
      reinterpret_cast<float4*>(p)[i] = pv;
      reinterpret_cast<float4*>(m)[i] = mv;
      reinterpret_cast<float4*>(v)[i] = vv;
    }
  } else {
    for (; i < n; i += stride) {
      float pi = p[i], mi = m[i], vi = v[i];
      adamw_update(pi, optim_mul(g[i], coef), mi, vi, c);
      p[i] = pi;
      m[i] = mi;
      v[i] = vi;
    }
  }
}

__device__ __forceinline__ unsigned warp_max_bits(unsigned x) {
#if __CUDA_ARCH__ >= 800
  return __reduce_max_sync(0xffffffffu, x);
#else
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = max(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
#endif
}

// 256 threads, 4 quantization blocks of 256 elements per iteration: thread t works on block
// t / 64 of the group, elements 4 * (t % 64) .. +3 of it; the two warps of a block combine their
// maxima through shared memory.
template <bool kVec>
__global__ void __launch_bounds__(kThreads) adamw8_kernel(float* __restrict__ p, const float* __restrict__ g,
                                                          unsigned char* __restrict__ cm,
                                                          unsigned char* __restrict__ cv, float* __restrict__ am,
                                                          float* __restrict__ av, const float* __restrict__ qmap,
                                                          long long n, AdamWCoefs c, float scale, const float* norm_sq,
                                                          float max_norm) {
  __shared__ float smap[256], umap[256], smid[256], umid[256];
  __shared__ unsigned wmax_m[kThreads / 32], wmax_v[kThreads / 32];
  smap[threadIdx.x] = qmap[threadIdx.x];
  umap[threadIdx.x] = qmap[256 + threadIdx.x];
  smid[threadIdx.x] = qmap[512 + threadIdx.x];
  umid[threadIdx.x] = qmap[768 + threadIdx.x];
  __syncthreads();
  const float coef = clip_coef(scale, norm_sq, max_norm);
  const int q = threadIdx.x >> 6;            // block within the group
  const int warp = threadIdx.x >> 5;
  const long long nblocks = (n + kOptim8BlockSize - 1) / kOptim8BlockSize;
  const long long groups = (nblocks + 3) / 4;
  for (long long grp = blockIdx.x; grp < groups; grp += gridDim.x) {
    const long long blk = grp * 4 + q;
    const long long base = blk * kOptim8BlockSize + 4 * (threadIdx.x & 63);
    const bool live_block = blk < nblocks;
    float pe[4], ge[4], me[4], ve[4];
    bool live[4];
    const float old_am = live_block ? am[blk] : 0.f, old_av = live_block ? av[blk] : 0.f;
    if (kVec && base + 4 <= n) {
      const float4 pv = *reinterpret_cast<const float4*>(p + base);
      const float4 gv = *reinterpret_cast<const float4*>(g + base);
      const uchar4 mc = *reinterpret_cast<const uchar4*>(cm + base);
      const uchar4 vc = *reinterpret_cast<const uchar4*>(cv + base);
      pe[0] = pv.x; pe[1] = pv.y; pe[2] = pv.z; pe[3] = pv.w;
      ge[0] = gv.x; ge[1] = gv.y; ge[2] = gv.z; ge[3] = gv.w;
      me[0] = smap[mc.x]; me[1] = smap[mc.y]; me[2] = smap[mc.z]; me[3] = smap[mc.w];
      ve[0] = umap[vc.x]; ve[1] = umap[vc.y]; ve[2] = umap[vc.z]; ve[3] = umap[vc.w];
#pragma unroll
      for (int j = 0; j < 4; ++j) live[j] = true;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        live[j] = base + j < n;
        pe[j] = live[j] ? p[base + j] : 0.f;
        ge[j] = live[j] ? g[base + j] : 0.f;
        me[j] = live[j] ? smap[cm[base + j]] : 0.f;
        ve[j] = live[j] ? umap[cv[base + j]] : 0.f;
      }
    }
    // New absmax per state as the CPU takes it: an integer max of the bit patterns (|m| and v are
    // >= 0, so they order like the floats, and a NaN wins, as it does there; fmaxf would drop it).
    unsigned lm = 0u, lv = 0u;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (!live[j]) continue;
      me[j] = optim_mul(me[j], old_am);
      ve[j] = optim_mul(ve[j], old_av);
      adamw_update(pe[j], optim_mul(ge[j], coef), me[j], ve[j], c);
      lm = max(lm, __float_as_uint(me[j]) & 0x7fffffffu);
      lv = max(lv, __float_as_uint(ve[j]));
    }
    lm = warp_max_bits(lm);
    lv = warp_max_bits(lv);
    if ((threadIdx.x & 31) == 0) {
      wmax_m[warp] = lm;
      wmax_v[warp] = lv;
    }
    __syncthreads();
    const float new_am = __uint_as_float(max(wmax_m[2 * q], wmax_m[2 * q + 1]));
    const float new_av = __uint_as_float(max(wmax_v[2 * q], wmax_v[2 * q + 1]));
    __syncthreads();  // wmax_* is rewritten by the next iteration
    if (live_block && (threadIdx.x & 63) == 0) {
      am[blk] = new_am;
      av[blk] = new_av;
    }
    unsigned char qm[4], qv[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      qm[j] = quantize_m(smap, smid, me[j], new_am);
      qv[j] = quantize_v(umid, ve[j], new_av);
    }
    if (kVec && base + 4 <= n) {
      *reinterpret_cast<float4*>(p + base) = make_float4(pe[0], pe[1], pe[2], pe[3]);
      *reinterpret_cast<uchar4*>(cm + base) = make_uchar4(qm[0], qm[1], qm[2], qm[3]);
      *reinterpret_cast<uchar4*>(cv + base) = make_uchar4(qv[0], qv[1], qv[2], qv[3]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (live[j]) {
          p[base + j] = pe[j];
          cm[base + j] = qm[j];
          cv[base + j] = qv[j];
        }
    }
  }
}

// Per-block sum of squares in double over a grid-stride range; the in-block reduction is a fixed
// shared-memory tree.
template <bool kVec>
__global__ void __launch_bounds__(kThreads) sumsq_partial_kernel(const float* __restrict__ x, long long n,
                                                                 double* __restrict__ partial) {
  __shared__ double sh[kThreads];
  double acc = 0.0;
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (kVec) {
    for (; i < (n >> 2); i += stride) {
      const float4 f = reinterpret_cast<const float4*>(x)[i];
      acc += (double)f.x * f.x + (double)f.y * f.y + ((double)f.z * f.z + (double)f.w * f.w);
    }
  } else {
    for (; i < n; i += stride) acc += (double)x[i] * x[i];
  }
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

// One block of kNormBlocksMax threads adds the partials in a fixed tree order.
__global__ void __launch_bounds__(kNormBlocksMax) sumsq_final_kernel(const double* __restrict__ partial, int count,
                                                                     float* out, int* flag) {
  __shared__ double sh[kNormBlocksMax];
  sh[threadIdx.x] = threadIdx.x < count ? partial[threadIdx.x] : 0.0;
  __syncthreads();
  for (int w = kNormBlocksMax / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *out = (float)sh[0];
    if (flag) *flag = isfinite(sh[0]) ? 0 : 1;  // finite floats squared cannot overflow a double
  }
}

__device__ __forceinline__ bool word_nonfinite(unsigned w, int elem_bytes, unsigned mask16) {
  if (elem_bytes == 4) return (w & 0x7f800000u) == 0x7f800000u;
  return ((w & mask16) == mask16) || (((w >> 16) & mask16) == mask16);
}

// Scans `words` 32-bit words (as uint4 when kVec: 16-byte aligned) plus optional 16-bit head and
// tail elements (a 16-bit tensor that does not start or end on a 4-byte boundary).
template <bool kVec>
__global__ void __launch_bounds__(kThreads) nonfinite_kernel(const unsigned* __restrict__ x, long long words,
                                                             const unsigned short* head,
                                                             const unsigned short* tail, int elem_bytes,
                                                             unsigned mask16, int* flag) {
  bool bad = false;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  long long done = 0;
  if (kVec) {
    const long long w4 = words >> 2;
    for (long long i = tid; i < w4; i += stride) {
      const uint4 u = reinterpret_cast<const uint4*>(x)[i];
      bad |= word_nonfinite(u.x, elem_bytes, mask16) | word_nonfinite(u.y, elem_bytes, mask16) |
             word_nonfinite(u.z, elem_bytes, mask16) | word_nonfinite(u.w, elem_bytes, mask16);
    }
    done = w4 << 2;
  }
  for (long long i = done + tid; i < words; i += stride) bad |= word_nonfinite(x[i], elem_bytes, mask16);
  if (tid == 0) {
    if (head) bad |= (*head & mask16) == mask16;
    if (tail) bad |= (*tail & mask16) == mask16;
  }
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) *flag = 1;
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

unsigned norm_blocks_for(long long n) {
  // A function of n only (not of the device), so the summation order never changes.
  const long long b = (n / 4 + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b < kNormBlocksMax ? b : kNormBlocksMax));
}

// Prefetching managed memory needs concurrent managed access (Linux, Pascal and newer); where
// the device lacks it the driver migrates pages on demand instead.
bool can_prefetch(int device) {
  static std::atomic<int> cache[64];  // 0 unknown, 1 yes, 2 no
  std::atomic<int>& c = cache[device & 63];
  int v = c.load();
  if (v == 0) {
    int attr = 0;
    if (cudaDeviceGetAttribute(&attr, cudaDevAttrConcurrentManagedAccess, device) != cudaSuccess) {
      cudaGetLastError();
      attr = 0;
    }
    v = attr ? 1 : 2;
    c.store(v);
  }
  return v == 1;
}

void prefetch_to_device(const Tensor& t, int device, cudaStream_t stream, const Context& ctx) {
  if (!t.defined() || t.nbytes() == 0 || !can_prefetch(device)) return;
#if CUDART_VERSION >= 13000
  cudaMemLocation loc{};
  loc.type = cudaMemLocationTypeDevice;
  loc.id = device;
  QN_CUDA(cudaMemPrefetchAsync(t.raw(), t.nbytes(), loc, 0, stream), ctx);
#else
  QN_CUDA(cudaMemPrefetchAsync(t.raw(), t.nbytes(), device, stream), ctx);
#endif
}

// A session view that allocates managed memory; everything else goes to the device session.
class ManagedContext final : public Context {
 public:
  explicit ManagedContext(std::shared_ptr<Context> dev) : dev_(std::move(dev)) {}
  Device device() const override { return dev_->device(); }
  void* stream() const override { return dev_->stream(); }
  void check_usable() const override { dev_->check_usable(); }

  void* alloc(size_t bytes) override {
    check_usable();
    const int index = device().index;
    check(cudaSetDevice(index), "cudaSetDevice", index);
    // Managed memory may exceed what the device has free (pages spill to the host, which is the
    // point of paging), but not the device and the host together. Blocks cached by the session's
    // stream-ordered pool count as free: hand them back to the driver first.
    cudaMemPool_t pool = nullptr;
    if (cudaDeviceGetDefaultMemPool(&pool, index) == cudaSuccess) {
      cudaStreamSynchronize(static_cast<cudaStream_t>(dev_->stream()));
      cudaMemPoolTrimTo(pool, 0);
    }
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo", index);
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const size_t host_b = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
    if (bytes > free_b + host_b)
      fail(ErrorCode::Oom, "paged optimizer state: asked for " + std::to_string(bytes) + " bytes of managed memory, but only " +
                               std::to_string(free_b) + " bytes are free on cuda:" + std::to_string(index) + " and " +
                               std::to_string(host_b) + " in host memory; use a smaller LoRA rank or the 8-bit optimizer");
    void* p = nullptr;
    check(cudaMallocManaged(&p, bytes ? bytes : 1, cudaMemAttachGlobal), "cudaMallocManaged", index);
    memory_on_alloc(device(), bytes);
    return p;
  }
  void free(void* ptr, size_t bytes) noexcept override {
    cudaSetDevice(device().index);
    cudaStreamSynchronize(static_cast<cudaStream_t>(dev_->stream()));  // no queued op still uses it
    cudaFree(ptr);
    (void)cudaGetLastError();  // as in the device context's free: nothing left for a later launch check
    memory_on_free(device(), bytes);
  }
  void copy_from_host(void* dst, const void* src, size_t bytes) override { dev_->copy_from_host(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { dev_->copy_to_host(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { dev_->copy(dst, src, bytes); }
  void memset(void* dst, int value, size_t bytes) override { dev_->memset(dst, value, bytes); }
  void synchronize() override { dev_->synchronize(); }

 private:
  std::shared_ptr<Context> dev_;
};

}  // namespace

std::shared_ptr<Context> managed_context(const std::shared_ptr<Context>& device_ctx) {
  QN_CHECK(device_ctx && device_ctx->device().type == DeviceType::CUDA, Arg, "managed_context: not a CUDA session");
  return std::make_shared<ManagedContext>(device_ctx);
}

void adamw_step(Context& ctx, const AdamWArgs& a) {
  check_adamw(a);
  const long long n = a.param.numel();
  if (n == 0) return;
  const AdamWCoefs c = adamw_coefs(a);
  const OptimState& s = a.state;
  cudaStream_t stream = stream_of(ctx);
  if (s.paged)
    for (const Tensor* t : {&s.m, &s.v, &s.absmax_m, &s.absmax_v, &s.qmap}) prefetch_to_device(*t, device_of(ctx), stream, ctx);
  const float* norm_sq = a.norm_sq.defined() && a.max_grad_norm > 0.f ? a.norm_sq.data<float>() : nullptr;
  float* p = a.param.data<float>();
  const float* g = a.grad.data<float>();
  if (s.kind == OptimKind::AdamW32) {
    float* m = s.m.data<float>();
    float* v = s.v.data<float>();
    const bool vec = n % 4 == 0 && aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v);
    const unsigned blocks = blocks_for(vec ? n / 4 : n, kThreads);
    if (vec)
      adamw32_kernel<true><<<blocks, kThreads, 0, stream>>>(p, g, m, v, n, c, a.grad_scale, norm_sq, a.max_grad_norm);
    else
      adamw32_kernel<false><<<blocks, kThreads, 0, stream>>>(p, g, m, v, n, c, a.grad_scale, norm_sq, a.max_grad_norm);
    QN_CUDA_LAUNCHED("adamw32_kernel", ctx);
    return;
  }
  unsigned char* cm = s.m.data<unsigned char>();
  unsigned char* cv = s.v.data<unsigned char>();
  const bool vec = n % 4 == 0 && aligned16(p) && aligned16(g) && (reinterpret_cast<uintptr_t>(cm) & 3u) == 0 &&
                   (reinterpret_cast<uintptr_t>(cv) & 3u) == 0;
  const long long groups = ((n + kOptim8BlockSize - 1) / kOptim8BlockSize + 3) / 4;
  const unsigned blocks = static_cast<unsigned>(groups < 65535LL * 8 ? groups : 65535LL * 8);
  if (vec)
    adamw8_kernel<true><<<blocks, kThreads, 0, stream>>>(p, g, cm, cv, s.absmax_m.data<float>(), s.absmax_v.data<float>(),
                                                         s.qmap.data<float>(), n, c, a.grad_scale, norm_sq,
                                                         a.max_grad_norm);
  else
    adamw8_kernel<false><<<blocks, kThreads, 0, stream>>>(p, g, cm, cv, s.absmax_m.data<float>(), s.absmax_v.data<float>(),
                                                          s.qmap.data<float>(), n, c, a.grad_scale, norm_sq,
                                                          a.max_grad_norm);
  QN_CUDA_LAUNCHED("adamw8_kernel", ctx);
}

void grad_norm_sq(Context& ctx, const GradNormSqArgs& a) {
  check_grad_norm_sq(a);
  const long long n = a.grad.numel();
  const float* x = a.grad.data<float>();
  const unsigned blocks = norm_blocks_for(n);
  // Stream-ordered scratch: freed (cudaFreeAsync) after the kernels on the same stream.
  Tensor partial = Tensor::empty(a.grad.ctx_ptr(), DType::U8, {static_cast<int64_t>(blocks) * 8});
  cudaStream_t stream = stream_of(ctx);
  if (n % 4 == 0 && aligned16(x))
    sumsq_partial_kernel<true><<<blocks, kThreads, 0, stream>>>(x, n, partial.data<double>());
  else
    sumsq_partial_kernel<false><<<blocks, kThreads, 0, stream>>>(x, n, partial.data<double>());
  QN_CUDA_LAUNCHED("sumsq_partial_kernel", ctx);
  sumsq_final_kernel<<<1, kNormBlocksMax, 0, stream>>>(partial.data<double>(), static_cast<int>(blocks),
                                                        a.out.data<float>(),
                                                        a.flag.defined() ? a.flag.data<int>() : nullptr);
  QN_CUDA_LAUNCHED("sumsq_final_kernel", ctx);
}

void nonfinite(Context& ctx, const NonfiniteArgs& a) {
  check_nonfinite(a);
  ctx.memset(a.flag.raw(), 0, sizeof(int));
  const long long n = a.x.numel();
  if (n == 0) return;
  const int eb = static_cast<int>(dtype_size(a.x.dtype()));
  const unsigned mask16 = a.x.dtype() == DType::BF16 ? 0x7f80u : 0x7c00u;
  const char* begin = static_cast<const char*>(a.x.raw());
  const char* end = begin + n * eb;
  const unsigned short* head = nullptr;
  const unsigned short* tail = nullptr;
  if (reinterpret_cast<uintptr_t>(begin) & 3u) {  // 16-bit data starting at 2 mod 4
    head = reinterpret_cast<const unsigned short*>(begin);
    begin += 2;
  }
  const long long words = (end - begin) / 4;
  if ((end - begin) % 4) tail = reinterpret_cast<const unsigned short*>(begin + words * 4);
  const unsigned* x = reinterpret_cast<const unsigned*>(begin);
  const bool vec = aligned16(x);
  const unsigned blocks = blocks_for(vec ? words / 4 + 1 : words + 1, kThreads, 4096);
  if (vec)
    nonfinite_kernel<true><<<blocks, kThreads, 0, stream_of(ctx)>>>(x, words, head, tail, eb, mask16, a.flag.data<int>());
  else
    nonfinite_kernel<false><<<blocks, kThreads, 0, stream_of(ctx)>>>(x, words, head, tail, eb, mask16, a.flag.data<int>());
  QN_CUDA_LAUNCHED("nonfinite_kernel", ctx);
}

}  // namespace cuda
}  // namespace qn
