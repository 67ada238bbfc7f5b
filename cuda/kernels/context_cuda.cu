// CUDA session: one non-blocking stream per session, stream-ordered allocations (cudaMallocAsync)
// with per-device accounting, and the sticky-error bookkeeping behind check().
#include <mutex>
#include <set>
#include <memory>
#include <string>
#include "cuda_common.cuh"
#include "qn/memory_stats.h"

namespace qn {
namespace cuda {
namespace {

std::mutex g_poison_mu;
std::string g_poison[64];

bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorLaunchTimeout:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool device_poisoned(int device, std::string* why) {
  std::lock_guard<std::mutex> g(g_poison_mu);
  const std::string& s = g_poison[device & 63];
  if (s.empty()) return false;
  if (why) *why = s;
  return true;
}

void check(cudaError_t err, const char* what, int device) {
  if (err == cudaSuccess) return;
  const std::string msg = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err) + " (in " + what + ")";
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: clear it
    fail(ErrorCode::Oom, "out of GPU memory on cuda:" + std::to_string(device) + ": " + msg);
  }
  if (is_sticky(err)) {
    std::lock_guard<std::mutex> g(g_poison_mu);
    if (g_poison[device & 63].empty()) g_poison[device & 63] = msg;
    fail(ErrorCode::Cuda, "sticky CUDA error on cuda:" + std::to_string(device) + ": " + msg +
                              "; this device can run no more work in this process: save what you can and restart it");
  }
  cudaGetLastError();
  fail(ErrorCode::Cuda, "CUDA error on cuda:" + std::to_string(device) + ": " + msg);
}

void check_launch(const char* kernel, int device) { check(cudaGetLastError(), kernel, device); }

class CudaContext final : public Context {
 public:
  explicit CudaContext(int index) : index_(index) {
    check(cudaSetDevice(index_), "cudaSetDevice", index_);
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate", index_);
    // Keep freed blocks in the stream-ordered pool across synchronizations (the default threshold
    // of 0 hands them back to the driver at every sync, and per-step workspaces are reallocated).
    cudaMemPool_t pool = nullptr;
    if (cudaDeviceGetDefaultMemPool(&pool, index_) == cudaSuccess) {
      uint64_t threshold = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
    }
    cudaGetLastError();
  }
  ~CudaContext() override {
    cudaSetDevice(index_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  Device device() const override { return Device{DeviceType::CUDA, index_}; }
  void* stream() const override { return stream_; }

  void check_usable() const override {
    std::string why;
    if (device_poisoned(index_, &why))
      fail(ErrorCode::Cuda, "cuda:" + std::to_string(index_) + " is unusable after an earlier sticky CUDA error (" + why +
                                "); restart the process");
  }

  void* alloc(size_t bytes) override {
    check_usable();
    select();
    void* p = nullptr;
    const cudaError_t e = cudaMallocAsync(&p, bytes ? bytes : 1, stream_);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail(ErrorCode::Oom, "out of GPU memory on cuda:" + std::to_string(index_) + ": asked for " +
                               std::to_string(bytes) + " bytes, " + std::to_string(free_b) + " of " +
                               std::to_string(total_b) + " free");
    }
    check(e, "cudaMallocAsync", index_);
    memory_on_alloc(device(), bytes);
    return p;
  }

  void free(void* ptr, size_t bytes) noexcept override {
    cudaSetDevice(index_);
    cudaFreeAsync(ptr, stream_);
    // A free cannot throw; a non-sticky error it left must not be reported later as the failure of
    // an unrelated launch (sticky errors stay and poison the device as usual).
    (void)cudaGetLastError();
    memory_on_free(device(), bytes);
  }

  void copy_from_host(void* dst, const void* src, size_t bytes) override {
    check_usable();
    select();
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync H2D", index_);
    // The source is pageable host memory owned by the caller: finish before returning.
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", index_);
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    check_usable();
    select();
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync D2H", index_);
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", index_);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    check_usable();
    select();
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync D2D", index_);
  }
  void memset(void* dst, int value, size_t bytes) override {
    check_usable();
    select();
    check(cudaMemsetAsync(dst, value, bytes, stream_), "cudaMemsetAsync", index_);
  }
  void synchronize() override {
    check_usable();
    select();
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", index_);
  }

 private:
  // Makes this context's device the calling thread's current one (work arrives on session queue
  // threads, whose current device starts at 0; a stream of cuda:1 cannot be used from cuda:0).
  void select() const {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != index_) check(cudaSetDevice(index_), "cudaSetDevice", index_);
  }

  int index_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace cuda

void expect_cuda_device(int index) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    int driver = 0;
    cudaDriverGetVersion(&driver);
    fail(ErrorCode::NoDevice, "cannot open cuda:" + std::to_string(index) + ": " +
                                  (driver == 0 ? std::string("no NVIDIA driver found")
                                               : std::string("no usable GPU (") + cudaGetErrorString(e) + ")"));
  }
  if (index < 0 || index >= count)
    fail(ErrorCode::NoDevice, "cannot open cuda:" + std::to_string(index) + ": this machine has " +
                                  std::to_string(count) + " CUDA device(s)");
}

std::shared_ptr<Context> open_cuda_context(int index) {
  expect_cuda_device(index);
  return std::make_shared<cuda::CudaContext>(index);
}

}  // namespace qn
