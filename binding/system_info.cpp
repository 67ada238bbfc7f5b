// systemInfo(probeCublasLt), setNumThreads(n), numThreads(), memoryStats(device): what `doctor`
// reports and the process-wide CPU thread setting.
#include "system_info.h"
#include "args.h"
#include "errors.h"
#include "qn/context.h"
#include "qn/cpu_features.h"
#include "qn/cuda_info.h"
#include "qn/device.h"
#include "qn/memory_stats.h"
#include "qn/parallel.h"

namespace qnb {
namespace {

Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool probe = info.Length() > 0 && info[0].ToBoolean().Value();
  const qn::CpuFeatures& f = qn::cpu_features();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("brand", f.brand);
  cpu.Set("hardwareThreads", f.hardware_threads);
  cpu.Set("threads", qn::num_threads());
  Napi::Object feats = Napi::Object::New(env);
  feats.Set("avx2", f.avx2);
  feats.Set("fma", f.fma);
  feats.Set("f16c", f.f16c);
  feats.Set("avx512f", f.avx512f);
  feats.Set("avx512bw", f.avx512bw);
  feats.Set("avx512vl", f.avx512vl);
  feats.Set("avx512_bf16", f.avx512_bf16);
  feats.Set("amx_bf16", f.amx_bf16);
  cpu.Set("features", feats);

  const qn::CudaInfo c = qn::cuda_info(probe);
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", c.compiled);
  cuda.Set("available", c.available);
  cuda.Set("reason", c.reason);
  cuda.Set("driverVersion", c.driver_version);
  cuda.Set("runtimeVersion", c.runtime_version);
  cuda.Set("compiledArchs", c.compiled_archs);
  Napi::Array devs = Napi::Array::New(env);
  for (size_t i = 0; i < c.devices.size(); ++i) {
    const auto& d = c.devices[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("totalMemory", static_cast<double>(d.total_memory));
    o.Set("freeMemory", static_cast<double>(d.free_memory));
    o.Set("computeCapability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
    o.Set("multiprocessors", d.multiprocessors);
    devs.Set(static_cast<uint32_t>(i), o);
  }
  cuda.Set("devices", devs);
  Napi::Object lt = Napi::Object::New(env);
  lt.Set("built", c.cublaslt_header);
  lt.Set("probed", probe && c.available);
  lt.Set("found", c.cublaslt_found);
  lt.Set("path", c.cublaslt_path);
  lt.Set("error", c.cublaslt_error);
  lt.Set("version", c.cublaslt_version);
  cuda.Set("cublasLt", lt);

  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", cpu);
  out.Set("cuda", cuda);
  return out;
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  qn::set_num_threads(static_cast<int>(RequireInteger(info, 0, "setNumThreads", "threads", 0, 1024)));
  return info.Env().Undefined();
}

Napi::Value NumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), qn::num_threads()); }

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = RequireString(info, 0, "memoryStats", "device");
  // a device that does not exist throws what opening a session on it would (E_NO_DEVICE)
  const qn::Device d = Guard(env, [&] {
    const qn::Device d = qn::parse_device(name);
    qn::expect_device_present(d);
    return d;
  });
  const qn::MemoryStats s = qn::memory_stats(d);
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocated", static_cast<double>(s.allocated));
  o.Set("peak", static_cast<double>(s.peak));
  o.Set("allocations", static_cast<double>(s.allocations));
  return o;
}

}  // namespace

void RegisterSystemInfo(Napi::Env env, Napi::Object exports) {
  exports.Set("systemInfo", Napi::Function::New(env, SystemInfo, "systemInfo"));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads, "setNumThreads"));
  exports.Set("numThreads", Napi::Function::New(env, NumThreads, "numThreads"));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats, "memoryStats"));
}

}  // namespace qnb
