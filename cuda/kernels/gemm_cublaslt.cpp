// gemm through cuBLASLt (loaded at run time, cublaslt_loader.h). Row-major C[M,N] = op(A) op(B) is
// computed as the column-major C^T[N,M] = op(B)^T op(A)^T, so B is cuBLASLt's first operand.
// Compute type fp32 (CUBLAS_COMPUTE_32F: no TF32 for f32 inputs), scale type fp32; bias through
// the BIAS epilogue (D = alpha op(A)op(B) + beta C + bias). Supported: bf16 x bf16 -> bf16 / f32,
// f32 x f32 -> f32. Anything cuBLASLt does not offer (f32 inputs with a bf16 C, K = 0, no
// algorithm) returns false and gemm.cu runs its own kernels.
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include "cublaslt_loader.h"
#include "cuda_common.cuh"
#include "qn/ops/gemm.h"

namespace qn {
namespace cuda {

#ifndef QN_HAVE_CUBLASLT

bool cublaslt_gemm(Context&, const GemmArgs&, const GemmDims&) { return false; }
const char* cublaslt_status() { return cublaslt().error.c_str(); }

#else

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

std::mutex g_mu;
std::map<int, cublasLtHandle_t> g_handles;
using AlgoKey = std::tuple<int, int64_t, int64_t, int64_t, int, int, int, int, int, int>;
std::map<AlgoKey, cublasLtMatmulAlgo_t> g_algos;
std::set<AlgoKey> g_refused;  // no algorithm offered / matmul refused: our kernels, no new heuristic query

cublasLtHandle_t handle_for(int device) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = g_handles.find(device);
  if (it != g_handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  const cublasStatus_t st = cublaslt().Create(&h);
  QN_CHECK(st == CUBLAS_STATUS_SUCCESS, Cuda, "cublasLtCreate failed (status " + std::to_string(int(st)) + ")");
  g_handles[device] = h;
  return h;
}

uint32_t alignment_of(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && (v % a) != 0) a >>= 1;
  return a;
}

// RAII for the cuBLASLt descriptors of one call.
struct Descs {
  const CublasLtApi& api;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  explicit Descs(const CublasLtApi& a) : api(a) {}
  ~Descs() {
    if (pref) api.MatmulPreferenceDestroy(pref);
    if (lc) api.MatrixLayoutDestroy(lc);
    if (lb) api.MatrixLayoutDestroy(lb);
    if (la) api.MatrixLayoutDestroy(la);
    if (op) api.MatmulDescDestroy(op);
  }
};

}  // namespace

const char* cublaslt_status() { return cublaslt().loaded ? "loaded" : cublaslt().error.c_str(); }

bool cublaslt_gemm(Context& ctx, const GemmArgs& g, const GemmDims& d) {
  const CublasLtApi& api = cublaslt();
  if (!api.loaded || d.k == 0) return false;
  const bool in16 = g.a.dtype() == DType::BF16, out16 = g.c.dtype() == DType::BF16;
  if (!in16 && out16) return false;
  const cudaDataType_t tin = in16 ? CUDA_R_16BF : CUDA_R_32F, tout = out16 ? CUDA_R_16BF : CUDA_R_32F;
  const int bias_kind = !g.bias.defined() ? 0 : g.bias.dtype() == DType::BF16 ? 1 : 2;
  if (bias_kind == 1 && !out16) return false;  // a bf16 bias with an f32 D: not offered
  const cudaDataType_t tbias = bias_kind == 1 ? CUDA_R_16BF : CUDA_R_32F;
  const int device = device_of(ctx);
  // The session's device current before the handle is created and the heuristic asked (both act on
  // the calling thread's device; a cuda:1 queue thread starts on device 0).
  cudaStream_t stream = stream_of(ctx);
  cublasLtHandle_t h = handle_for(device);

  Descs ds(api);
  auto ok = [](cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; };
  if (!ok(api.MatmulDescCreate(&ds.op, CUBLAS_COMPUTE_32F, CUDA_R_32F))) return false;
  const cublasOperation_t opa = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt "A" = our B
  const cublasOperation_t opb = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt "B" = our A
  api.MatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
  api.MatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
  if (bias_kind) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const void* bp = g.bias.raw();
    if (!ok(api.MatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi)) ||
        !ok(api.MatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp)) ||
        !ok(api.MatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &tbias, sizeof tbias)))
      return false;
  }
  const uint64_t M = d.m, N = d.n, K = d.k;
  // Our B: trans_b ? stored [N, K] (column-major K x N, ld K) : stored [K, N] (column-major N x K, ld N).
  if (!ok(api.MatrixLayoutCreate(&ds.la, tin, g.trans_b ? K : N, g.trans_b ? N : K, g.trans_b ? K : N))) return false;
  // Our A: trans_a ? stored [K, M] (column-major M x K, ld M) : stored [M, K] (column-major K x M, ld K).
  if (!ok(api.MatrixLayoutCreate(&ds.lb, tin, g.trans_a ? M : K, g.trans_a ? K : M, g.trans_a ? M : K))) return false;
  if (!ok(api.MatrixLayoutCreate(&ds.lc, tout, N, M, N))) return false;

  const uint32_t al_a = alignment_of(g.b.raw()), al_b = alignment_of(g.a.raw()), al_c = alignment_of(g.c.raw());
  const uint32_t al_bias = bias_kind ? alignment_of(g.bias.raw()) : 256;
  // The bias epilogue reads the vector with wide loads (misaligned-address errors, which are sticky,
  // are reported for biases below 16 bytes of alignment): such a bias goes to our kernels.
  if (al_bias < 16) return false;
  const AlgoKey key{device, d.m, d.n, d.k, g.trans_a * 2 + g.trans_b, in16 * 2 + out16, bias_kind,
                    int(al_a), int(al_b), int(std::min(al_c, al_bias))};
  cublasLtMatmulAlgo_t algo;
  bool have = false;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    if (g_refused.count(key)) return false;
    auto it = g_algos.find(key);
    if (it != g_algos.end()) algo = it->second, have = true;
  }
  if (!have) {
    if (!ok(api.MatmulPreferenceCreate(&ds.pref))) return false;
    const uint64_t ws = kWorkspaceBytes;
    api.MatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    api.MatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
    api.MatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
    api.MatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
    api.MatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    if (!ok(api.MatmulAlgoGetHeuristic(h, ds.op, ds.la, ds.lb, ds.lc, ds.lc, ds.pref, 1, &res, &found)) || found < 1 ||
        res.state != CUBLAS_STATUS_SUCCESS) {
      std::lock_guard<std::mutex> lk(g_mu);
      g_refused.insert(key);
      return false;
    }
    algo = res.algo;
    std::lock_guard<std::mutex> lk(g_mu);
    g_algos[key] = algo;
  }
  // Workspace from the session's stream-ordered pool: freed after the launch, in stream order.
  Tensor ws = Tensor::empty(g.c.ctx_ptr(), DType::U8, {static_cast<int64_t>(kWorkspaceBytes)});
  const float alpha = g.alpha, beta = g.beta;
  const cublasStatus_t st = api.Matmul(h, ds.op, &alpha, g.b.raw(), ds.la, g.a.raw(), ds.lb, &beta, g.c.raw(), ds.lc,
                                       g.c.raw(), ds.lc, &algo, ws.raw(), kWorkspaceBytes, stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
    // Refused before launching (an algorithm/attribute combination it does not take): forget the
    // algorithm and let gemm.cu run its own kernels.
    std::lock_guard<std::mutex> lk(g_mu);
    g_algos.erase(key);
    g_refused.insert(key);
    return false;
  }
  QN_CHECK(st == CUBLAS_STATUS_SUCCESS, Cuda,
           "cublasLtMatmul failed (status " + std::to_string(int(st)) + ") for gemm " + std::to_string(d.m) + " x " +
               std::to_string(d.n) + " x " + std::to_string(d.k));
  return true;
}

#endif

}  // namespace cuda
}  // namespace qn
