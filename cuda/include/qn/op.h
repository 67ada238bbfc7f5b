// One declaration per op. QN_DECLARE_OP(name, Args) declares cpu::name and cuda::name (defined in
// cuda/cpu/<family>.cpp and cuda/kernels/<family>.cu) and an inline dispatcher qn::name that picks
// the implementation from the Context's device. Without the CUDA backend compiled in, a CUDA
// context cannot exist, and the dispatcher reports E_NO_DEVICE rather than failing to link.
#pragma once
#include "qn/context.h"
#include "qn/error.h"
#include "qn/tensor.h"

#ifdef QN_WITH_CUDA
#define QN_DISPATCH_CUDA(name, ctx, a) cuda::name(ctx, a)
#else
#define QN_DISPATCH_CUDA(name, ctx, a) \
  ::qn::fail(::qn::ErrorCode::NoDevice, "CUDA backend not compiled into this build (" #name ")")
#endif

#define QN_DECLARE_OP(name, Args)                                   \
  namespace cpu {                                                   \
  void name(::qn::Context& ctx, const Args& a);                     \
  }                                                                 \
  namespace cuda {                                                  \
  void name(::qn::Context& ctx, const Args& a);                     \
  }                                                                 \
  inline void name(::qn::Context& ctx, const Args& a) {             \
    ctx.check_usable();                                             \
    if (ctx.device().type == ::qn::DeviceType::CPU) cpu::name(ctx, a); \
    else QN_DISPATCH_CUDA(name, ctx, a);                            \
  }
