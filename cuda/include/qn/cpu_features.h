// x86 SIMD features detected at run time (cpuid), so one build runs everywhere and picks the
// fastest kernels the machine supports.
#pragma once
#include <string>

namespace qn {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512_bf16 = false;
  bool amx_bf16 = false;
  std::string brand;
  int hardware_threads = 1;
};

const CpuFeatures& cpu_features();

}  // namespace qn
