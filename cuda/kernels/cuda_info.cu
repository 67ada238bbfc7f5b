// Reports the CUDA driver, runtime, devices and cuBLASLt availability for `doctor`.
#include <cuda_runtime.h>
#include "cublaslt_loader.h"
#include "qn/cuda_info.h"

namespace qn {

CudaInfo cuda_info(bool probe_cublaslt) {
  CudaInfo info;
  info.compiled = true;
  info.compiled_archs = QN_CUDA_ARCHS_STRING;
#ifdef QN_HAVE_CUBLASLT
  info.cublaslt_header = true;
#endif
  cudaDriverGetVersion(&info.driver_version);
  cudaRuntimeGetVersion(&info.runtime_version);
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    info.reason = info.driver_version == 0 ? std::string("no NVIDIA driver found (libcuda could not be loaded)")
                                           : std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    return info;
  }
  if (count == 0) {
    info.reason = "no CUDA devices";
    return info;
  }
  // Free memory needs a context on each device (cudaMemGetInfo), so only the full probe (doctor)
  // asks for it; a plain device lookup (every session open, one per data-parallel rank) must not
  // create contexts on the other ranks' GPUs (exclusive-process mode refuses them).
  int prev = -1;
  if (probe_cublaslt) cudaGetDevice(&prev);
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    CudaDeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.total_memory = p.totalGlobalMem;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    if (probe_cublaslt && cudaSetDevice(i) == cudaSuccess) cudaMemGetInfo(&d.free_memory, &d.total_memory);
    cudaGetLastError();
    info.devices.push_back(d);
  }
  if (prev >= 0) cudaSetDevice(prev);
  cudaGetLastError();
  info.available = !info.devices.empty();
  if (probe_cublaslt && info.available) {
    const auto& api = cuda::cublaslt();
    info.cublaslt_found = api.loaded;
    info.cublaslt_path = api.path;
    info.cublaslt_error = api.error;
    info.cublaslt_version = static_cast<int>(api.version);
  }
  return info;
}

}  // namespace qn
