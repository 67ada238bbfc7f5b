// cuBLASLt loaded at run time with dlopen, so the addon loads on machines without it. Only the
// CUDA GEMM path calls cublaslt(); CPU-only use never touches the library.
#pragma once
#include <string>
#ifdef QN_HAVE_CUBLASLT
#include <cublasLt.h>
#endif

namespace qn {
namespace cuda {

struct CublasLtApi {
  bool loaded = false;
  std::string path;   // the file that was loaded
  std::string error;  // why loading failed
  size_t version = 0;
#ifdef QN_HAVE_CUBLASLT
  decltype(&cublasLtCreate) Create = nullptr;
  decltype(&cublasLtDestroy) Destroy = nullptr;
  decltype(&cublasLtGetVersion) GetVersion = nullptr;
  decltype(&cublasLtMatmul) Matmul = nullptr;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate = nullptr;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic = nullptr;
#endif
};

// Loads once (thread-safe); later calls return the same result. Search order: $QN_CUBLASLT_PATH,
// libcublasLt.so.13, .so.12, .so on the loader path, then $CUDA_HOME/lib64 and /usr/local/cuda/lib64.
const CublasLtApi& cublaslt();

}  // namespace cuda
}  // namespace qn
