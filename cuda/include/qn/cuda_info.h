// What the CUDA backend can see: compiled in or not, driver and runtime versions, devices, and
// whether cuBLASLt could be loaded. Never throws; reasons are reported as strings.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace qn {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  size_t total_memory = 0;
  size_t free_memory = 0;  // only with the full probe (cuda_info(true)); 0 otherwise
  int cc_major = 0;
  int cc_minor = 0;
  int multiprocessors = 0;
};

struct CudaInfo {
  bool compiled = false;       // the CUDA backend is part of this build
  bool available = false;      // a driver and at least one device are usable
  std::string reason;          // why not available
  int driver_version = 0;      // e.g. 13000
  int runtime_version = 0;
  std::vector<CudaDeviceInfo> devices;
  std::string compiled_archs;  // e.g. "sm_80 sm_90 compute_90"
  bool cublaslt_header = false;  // built with the cuBLASLt path
  bool cublaslt_found = false;   // only probed when a device is usable
  std::string cublaslt_path;
  std::string cublaslt_error;
  int cublaslt_version = 0;
};

// probe_cublaslt: the full probe (doctor): also dlopen cuBLASLt and read each device's free memory
// (which creates a context on every device); false: names and sizes only, no context.
CudaInfo cuda_info(bool probe_cublaslt);

}  // namespace qn
