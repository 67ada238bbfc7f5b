// Internals shared by the CPU NF4 files (nf4.cpp: the ops; nf4_panels.cpp: decoding into GEMM
// panels): a read-only host view of an Nf4Weight and the scale restore of double quantization.
#pragma once
#include <cstdint>
#include <string>
#include "qn/error.h"
#include "qn/ops/nf4.h"

namespace qn {
namespace cpu {
namespace nf4_host {

// Keeps a product in a register as a rounded float so the compiler cannot fuse it with a later
// add into an FMA (bitsandbytes and the fixtures round the product first).
inline float fp_barrier(float x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(x));
#else
  volatile float v = x;
  x = v;
#endif
  return x;
}

inline float restore_scale(float m, float nested, float offset) { return fp_barrier(m * nested) + offset; }

// Read-only view of an Nf4Weight on the host.
struct HostView {
  const uint8_t* codes;
  const float* absmax;
  const uint8_t* absmax_q;
  const float* nested_absmax;
  const float* nested_map;
  float offset;
  bool nested;
  int log2_bs, log2_nbs;
  int64_t n;

  float scale(int64_t b) const {
    if (!nested) return absmax[b];
    return restore_scale(nested_map[absmax_q[b]], nested_absmax[b >> log2_nbs], offset);
  }
};

inline HostView host_view(const Nf4Weight& w, const char* fn) {
  QN_CHECK(w.codes.defined(), Arg, std::string(fn) + ": weight codes are missing");
  QN_CHECK(w.codes.device().type == DeviceType::CPU, Device,
           std::string(fn) + ": the weight lives on " + w.codes.device().str() + ", not on the CPU");
  QN_CHECK(nf4_blocksize_ok(w.blocksize), Arg, std::string(fn) + ": bad weight blocksize " + std::to_string(w.blocksize));
  if (w.nested) {
    QN_CHECK(w.absmax_q.defined() && w.nested_absmax.defined() && w.nested_map.defined(), Arg,
             std::string(fn) + ": nested weight without absmax_q / nested_absmax / nested_map");
    QN_CHECK(nf4_blocksize_ok(w.nested_blocksize), Arg, std::string(fn) + ": bad nested blocksize");
  } else {
    QN_CHECK(w.absmax.defined(), Arg, std::string(fn) + ": weight absmax is missing");
  }
  HostView v{};
  fill_nf4_view(w, v);
  v.n = w.numel();
  return v;
}

}  // namespace nf4_host
}  // namespace cpu
}  // namespace qn
