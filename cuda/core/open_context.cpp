// open_context: the one place that turns a Device into a session of the right backend.
#include <memory>
#include "cpu/context_cpu.h"
#include "qn/context.h"
#include "qn/error.h"

namespace qn {

#ifdef QN_WITH_CUDA
std::shared_ptr<Context> open_cuda_context(int index);  // cuda/kernels/context_cuda.cu
void expect_cuda_device(int index);                     // open_cuda_context's checks alone
#else
[[noreturn]] static void fail_no_cuda(const Device& device) {
  fail(ErrorCode::NoDevice, "cannot open " + device.str() + ": this build has no CUDA backend (rebuild with nvcc on PATH and -DQN_CUDA=ON)");
}
#endif

std::shared_ptr<Context> open_context(const Device& device) {
  if (device.type == DeviceType::CPU) return std::make_shared<CpuContext>();
#ifdef QN_WITH_CUDA
  return open_cuda_context(device.index);
#else
  fail_no_cuda(device);
#endif
}

void expect_device_present(const Device& device) {
  if (device.type == DeviceType::CPU) return;
#ifdef QN_WITH_CUDA
  expect_cuda_device(device.index);
#else
  fail_no_cuda(device);
#endif
}

}  // namespace qn
