// Module entry: registers the classes (NativeSession, NativeTensor), the ops object, system
// information, and setErrorClass (called once by ts/native.ts with QloraError).
#include <napi.h>
#include "args.h"
#include "errors.h"
#include "instance_data.h"
#include "op_bindings.h"
#include "session_wrap.h"
#include "system_info.h"
#include "tensor_wrap.h"

namespace qnb {

InstanceData& Instance(Napi::Env env) { return *env.GetInstanceData<InstanceData>(); }

namespace {

// A class or function that `new` works on: Reflect.construct(Object, [], v) throws a TypeError
// for anything else (arrow functions, methods, bound non-constructors) without running v.
bool IsConstructor(Napi::Env env, const Napi::Value& v) {
  if (!v.IsFunction()) return false;
  try {
    Napi::Object reflect = env.Global().Get("Reflect").As<Napi::Object>();
    reflect.Get("construct").As<Napi::Function>().Call(reflect, {env.Global().Get("Object"), Napi::Array::New(env), v});
    return true;
  } catch (const Napi::Error&) {
    return false;
  }
}

// setErrorClass(ctor): ctor(code, message) builds every error the addon throws or rejects with.
Napi::Value SetErrorClassJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !IsConstructor(env, info[0]))
    ThrowTypeError(env, "E_ARG", "setErrorClass: argument 'ctor' must be a constructor (a class), got " +
                                     (info.Length() < 1           ? std::string("undefined")
                                      : info[0].IsFunction() ? std::string("a function that cannot be called with new")
                                                             : TypeOfValue(info[0])));
  SetErrorClass(env, info[0].As<Napi::Function>());
  return env.Undefined();
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
