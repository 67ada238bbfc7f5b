// dlopen-based loader for cuBLASLt (see cublaslt_loader.h).
#include "cublaslt_loader.h"
#include <dlfcn.h>
#include <cstdlib>
#include <vector>

namespace qn {
namespace cuda {
namespace {

#ifdef QN_HAVE_CUBLASLT
template <typename F>
bool bind(void* lib, const char* name, F* out, std::string* err) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out) *err = std::string("symbol ") + name + " missing";
  return *out != nullptr;
}

CublasLtApi load() {
  CublasLtApi api;
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("QN_CUBLASLT_PATH")) candidates.push_back(p);
  for (const char* n : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"}) candidates.push_back(n);
  for (const char* env : {"CUDA_HOME", "CUDA_PATH"})
    if (const char* h = std::getenv(env)) {
      candidates.push_back(std::string(h) + "/lib64/libcublasLt.so.13");
      candidates.push_back(std::string(h) + "/lib64/libcublasLt.so.12");
    }
  candidates.push_back("/usr/local/cuda/lib64/libcublasLt.so.13");
  candidates.push_back("/usr/local/cuda/lib64/libcublasLt.so.12");
  std::string tried;
  void* lib = nullptr;
  for (const auto& c : candidates) {
    lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      api.path = c;
      break;
    }
    tried += (tried.empty() ? "" : ", ") + c;
  }
  if (!lib) {
    api.error = "cuBLASLt not found (tried " + tried + "); set QN_CUBLASLT_PATH to libcublasLt.so";
    return api;
  }
  std::string err;
  bool ok = bind(lib, "cublasLtCreate", &api.Create, &err) && bind(lib, "cublasLtDestroy", &api.Destroy, &err) &&
            bind(lib, "cublasLtGetVersion", &api.GetVersion, &err) && bind(lib, "cublasLtMatmul", &api.Matmul, &err) &&
            bind(lib, "cublasLtMatmulDescCreate", &api.MatmulDescCreate, &err) &&
            bind(lib, "cublasLtMatmulDescDestroy", &api.MatmulDescDestroy, &err) &&
            bind(lib, "cublasLtMatmulDescSetAttribute", &api.MatmulDescSetAttribute, &err) &&
            bind(lib, "cublasLtMatrixLayoutCreate", &api.MatrixLayoutCreate, &err) &&
            bind(lib, "cublasLtMatrixLayoutDestroy", &api.MatrixLayoutDestroy, &err) &&
            bind(lib, "cublasLtMatmulPreferenceCreate", &api.MatmulPreferenceCreate, &err) &&
            bind(lib, "cublasLtMatmulPreferenceDestroy", &api.MatmulPreferenceDestroy, &err) &&
            bind(lib, "cublasLtMatmulPreferenceSetAttribute", &api.MatmulPreferenceSetAttribute, &err) &&
            bind(lib, "cublasLtMatmulAlgoGetHeuristic", &api.MatmulAlgoGetHeuristic, &err);
  if (!ok) {
    api.error = api.path + ": " + err;
    dlclose(lib);
    return api;
  }
  api.version = api.GetVersion();
  api.loaded = true;
  return api;
}
#else
CublasLtApi load() {
  CublasLtApi api;
  api.error = "this build has no cuBLASLt path (cublasLt.h was not found at configure time)";
  return api;
}
#endif

}  // namespace

const CublasLtApi& cublaslt() {
  static const CublasLtApi api = load();
  return api;
}

}  // namespace cuda
}  // namespace qn
