// CUDA gemm (see qn/ops/gemm.h): C[M,N] = alpha op(A) op(B) + beta C + bias, row-major, fp32
// accumulation. Matches the CPU gemm (and the float64 loop in cuda/tests/test_gemm.cpp) within the
// fp32 summation error.
//
// Path 1: cuBLASLt (gemm_cublaslt.cpp) when the library loaded and offers the type combination.
// Path 2: our own kernels (no cuBLASLt, f32 inputs with a bf16 C, K = 0, or QN_GEMM_NO_CUBLASLT=1):
//   bf16 inputs: 64 x 64 tiles, 4 warps of 32 x 32 on WMMA 16x16x16 bf16 fragments (fp32
//                accumulate, sm_80+), k steps of 32 through shared memory;
//   f32 inputs : 64 x 64 tiles, 256 threads of 4 x 4 outputs, k steps of 16, fp32 FMA.
//   Tiles are loaded element-wise with bounds checks (any size, transposes, alignment), so these
//   kernels favour generality over peak speed; they are the fallback, not the fast path.
#include <mma.h>
#include <atomic>
#include <cstdlib>
#include "cuda_common.cuh"
#include "qn/ops/gemm.h"

namespace qn {
namespace cuda {

bool cublaslt_gemm(Context& ctx, const GemmArgs& g, const GemmDims& d);  // gemm_cublaslt.cpp

namespace {

struct GemmParams {
  const void* a;
  const void* b;
  void* c;
  const void* bias;
  int bias_bf16;
  long long m, n, k;
  int ta, tb;
  float alpha, beta;
};

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// op(A)[i, k] and op(B)[k, j] with zero outside the matrix.
template <typename T>
__device__ __forceinline__ T load_a(const GemmParams& p, long long i, long long k) {
  if (i >= p.m || k >= p.k) return T(0.f);
  const T* a = static_cast<const T*>(p.a);
  return p.ta ? a[k * p.m + i] : a[i * p.k + k];
}
template <typename T>
__device__ __forceinline__ T load_b(const GemmParams& p, long long k, long long j) {
  if (j >= p.n || k >= p.k) return T(0.f);
  const T* b = static_cast<const T*>(p.b);
  return p.tb ? b[j * p.k + k] : b[k * p.n + j];
}

template <typename TO>
__device__ __forceinline__ void store_c(const GemmParams& p, long long i, long long j, float acc) {
  if (i >= p.m || j >= p.n) return;
  TO* c = static_cast<TO*>(p.c);
  float v = p.alpha * acc;
  if (p.beta != 0.f) v += p.beta * to_f<TO>(c[i * p.n + j]);
  if (p.bias) v += p.bias_bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p.bias)[j])
                               : static_cast<const float*>(p.bias)[j];
  c[i * p.n + j] = from_f<TO>(v);
}

// ---- f32 inputs: 64 x 64 tile, 16 x 16 threads, 4 x 4 outputs each ----------------------------
template <typename TO>
__global__ void __launch_bounds__(256) gemm_f32_kernel(GemmParams p) {
  __shared__ float As[16][64 + 4];
  __shared__ float Bs[16][64 + 4];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const long long i0 = blockIdx.y * 64ll, j0 = blockIdx.x * 64ll;
  float acc[4][4] = {};
  for (long long k0 = 0; k0 < p.k; k0 += 16) {
    for (int e = threadIdx.x; e < 16 * 64; e += 256) {
      // A tile: k fastest when A is not transposed (coalesced along k), i fastest otherwise.
      const int kk = p.ta ? e / 64 : e % 16, ii = p.ta ? e % 64 : e / 16;
      As[kk][ii] = load_a<float>(p, i0 + ii, k0 + kk);
      const int kb = p.tb ? e % 16 : e / 64, jj = p.tb ? e / 16 : e % 64;
      Bs[kb][jj] = load_b<float>(p, k0 + kb, j0 + jj);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 16; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) av[r] = As[kk][ty + 16 * r], bv[r] = Bs[kk][tx + 16 * r];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) store_c<TO>(p, i0 + ty + 16 * r, j0 + tx + 16 * c, acc[r][c]);
}

// ---- bf16 inputs: 64 x 64 tile, 4 warps (2 x 2) of 32 x 32 on WMMA fragments ----------------
template <typename TO>
__global__ void __launch_bounds__(128) gemm_bf16_wmma_kernel(GemmParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int BK = 32, LDA = BK + 8, LDB = 64 + 8, LDC = 64 + 4;
  __shared__ __align__(32) __nv_bfloat16 As[64 * LDA];  // [i][k]
  __shared__ __align__(32) __nv_bfloat16 Bs[BK * LDB];  // [k][j]
  __shared__ __align__(32) float Cs[64 * LDC];
  const int warp = threadIdx.x / 32, wy = warp / 2, wx = warp % 2;
  const long long i0 = blockIdx.y * 64ll, j0 = blockIdx.x * 64ll;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int c = 0; c < 2; ++c) wmma::fill_fragment(acc[r][c], 0.f);
  for (long long k0 = 0; k0 < p.k; k0 += BK) {
    for (int e = threadIdx.x; e < 64 * BK; e += 128) {
      const int kk = p.ta ? e / 64 : e % BK, ii = p.ta ? e % 64 : e / BK;
      As[ii * LDA + kk] = load_a<__nv_bfloat16>(p, i0 + ii, k0 + kk);
      const int kb = p.tb ? e % BK : e / 64, jj = p.tb ? e / BK : e % 64;
      Bs[kb * LDB + jj] = load_b<__nv_bfloat16>(p, k0 + kb, j0 + jj);
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) wmma::load_matrix_sync(fa[r], As + (wy * 32 + r * 16) * LDA + ks, LDA);
#pragma unroll
      for (int c = 0; c < 2; ++c) wmma::load_matrix_sync(fb[c], Bs + ks * LDB + wx * 32 + c * 16, LDB);
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int c = 0; c < 2; ++c) wmma::mma_sync(acc[r][c], fa[r], fb[c], acc[r][c]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int c = 0; c < 2; ++c)
      wmma::store_matrix_sync(Cs + (wy * 32 + r * 16) * LDC + wx * 32 + c * 16, acc[r][c], LDC, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < 64 * 64; e += 128) {
    const int ii = e / 64, jj = e % 64;
    store_c<TO>(p, i0 + ii, j0 + jj, Cs[ii * LDC + jj]);
  }
#endif
}

bool no_cublaslt_env() {
  static const bool v = [] {
    const char* e = std::getenv("QN_GEMM_NO_CUBLASLT");
    return e && e[0] && e[0] != '0';
  }();
  return v;
}

std::atomic<bool> g_fallback_only{false};

}  // namespace

// Testing hook: true routes every gemm to the kernels above (as without cuBLASLt).
void gemm_set_fallback_only(bool on) { g_fallback_only = on; }

void gemm(Context& ctx, const GemmArgs& g) {
  const GemmDims d = check_gemm(g);
  if (d.m == 0 || d.n == 0) return;
  if (!no_cublaslt_env() && !g_fallback_only && cublaslt_gemm(ctx, g, d)) return;
  GemmParams p{g.a.raw(), g.b.raw(), g.c.raw(), g.bias.defined() ? g.bias.raw() : nullptr,
               g.bias.defined() && g.bias.dtype() == DType::BF16, d.m, d.n, d.k, g.trans_a, g.trans_b, g.alpha, g.beta};
  const long long gy = (d.m + 63) / 64, gx = (d.n + 63) / 64;
  QN_CHECK(gy <= 65535, Shape, "gemm: M = " + std::to_string(d.m) + " is too large for the fallback kernels");
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  cudaStream_t s = stream_of(ctx);
  const bool out16 = g.c.dtype() == DType::BF16;
  if (g.a.dtype() == DType::BF16) {
    if (out16) gemm_bf16_wmma_kernel<__nv_bfloat16><<<grid, 128, 0, s>>>(p);
    else gemm_bf16_wmma_kernel<float><<<grid, 128, 0, s>>>(p);
    QN_CUDA_LAUNCHED("gemm_bf16_wmma_kernel", ctx);
  } else {
    if (out16) gemm_f32_kernel<__nv_bfloat16><<<grid, 256, 0, s>>>(p);
    else gemm_f32_kernel<float><<<grid, 256, 0, s>>>(p);
    QN_CUDA_LAUNCHED("gemm_f32_kernel", ctx);
  }
}

}  // namespace cuda
}  // namespace qn
