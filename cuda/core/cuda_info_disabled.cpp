// cuda_info for builds without the CUDA backend.
#include "qn/cuda_info.h"

namespace qn {

#ifndef QN_WITH_CUDA
CudaInfo cuda_info(bool) {
  CudaInfo info;
  info.reason = "this build has no CUDA backend (nvcc was not found or -DQN_CUDA=OFF)";
  return info;
}
#endif

}  // namespace qn
