// Module entry: registers the classes (NativeSession, NativeTensor), the ops object, system
// information, and setErrorClass (called once by ts/native.ts with QloraError).
#include <napi.h>
#include "errors.h"
#include "instance_data.h"
#include "op_bindings.h"
#include "session_wrap.h"
#include "system_info.h"
#include "tensor_wrap.h"

namespace qnb {

InstanceData& Instance(Napi::Env env) { return *env.GetInstanceData<InstanceData>(); }

namespace {

Napi::Value SetErrorClassJs(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction())
    Throw(info.Env(), "E_ARG", "setErrorClass: expected a constructor");
  SetErrorClass(info.Env(), info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new InstanceData());
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClassJs, "setErrorClass"));
  exports.Set("Session", SessionWrap::Define(env));
  exports.Set("Tensor", TensorWrap::Define(env));
  RegisterSystemInfo(env, exports);
  RegisterModel(env, exports);
  RegisterDist(env, exports);
  Napi::Object ops = Napi::Object::New(env);
  RegisterElementwiseOps(env, ops);
  RegisterOptimOps(env, ops);
  RegisterNf4Ops(env, ops);
  RegisterLinearOps(env, ops);
  exports.Set("ops", ops);
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

}  // namespace qnb

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return qnb::Init(env, exports); }
NODE_API_MODULE(qlora_native, InitAddon)
