// Helpers shared by every CUDA kernel file: error checks that keep the sticky-error state of the
// device, the session stream, and grid-size arithmetic.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <string>
#include "qn/context.h"
#include "qn/error.h"

namespace qn {
namespace cuda {

// Raises E_CUDA (E_OOM for allocation failures). Sticky errors (illegal address, launch failure,
// ...) poison the device so that every later call refuses work with a clear message.
void check(cudaError_t err, const char* what, int device);
// After a kernel launch: reports launch errors (bad configuration) without synchronizing.
void check_launch(const char* kernel, int device);
bool device_poisoned(int device, std::string* why);

// The session stream, with the calling thread's current device made the session's (a launch into
// a stream of another device fails; a session queue thread on cuda:N may launch before anything
// else set its device). cudaGetDevice is a thread-local read in the runtime.
inline cudaStream_t stream_of(const Context& ctx) {
  int cur = -1;
  if (cudaGetDevice(&cur) != cudaSuccess || cur != ctx.device().index) cudaSetDevice(ctx.device().index);
  return static_cast<cudaStream_t>(ctx.stream());
}
inline int device_of(const Context& ctx) { return ctx.device().index; }

inline unsigned blocks_for(long long n, int threads, unsigned cap = 65535u * 8u) {
  long long b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b < cap ? b : cap);
}

}  // namespace cuda
}  // namespace qn

#define QN_CUDA(expr, ctx) ::qn::cuda::check((expr), #expr, ::qn::cuda::device_of(ctx))
#define QN_CUDA_LAUNCHED(name, ctx) ::qn::cuda::check_launch(name, ::qn::cuda::device_of(ctx))
