// TensorWrap (see tensor_wrap.h).
#include "tensor_wrap.h"
#include "errors.h"
#include "instance_data.h"
#include "native_class.h"
#include "session_wrap.h"

namespace qnb {

Napi::Function TensorWrap::Define(Napi::Env env) {
  Napi::Function cls = DefineClass(env, "NativeTensor",
                                   {
                                       InstanceAccessor<&TensorWrap::DType>("dtype"),
                                       InstanceAccessor<&TensorWrap::Shape>("shape"),
                                       InstanceAccessor<&TensorWrap::Device>("device"),
                                       InstanceAccessor<&TensorWrap::Nbytes>("nbytes"),
                                       InstanceAccessor<&TensorWrap::Disposed>("disposed"),
                                       InstanceAccessor<&TensorWrap::Session>("session"),
                                       InstanceMethod<&TensorWrap::ToHost>("toHost"),
                                       InstanceMethod<&TensorWrap::Dispose>("dispose"),
                                   });
  Instance(env).tensor_class = Napi::Persistent(cls);
  return cls;
}

bool TensorWrap::IsTensor(Napi::Env, const Napi::Value& v) { return HasTypeTag(v, kTensorTag); }

TensorWrap* TensorWrap::Unwrap(Napi::Object o) {
  RequireTypeTag(o, kTensorTag, "Tensor");
  return Napi::ObjectWrap<TensorWrap>::Unwrap(o);
}

Napi::Object TensorWrap::NewInstance(Napi::Env env, qn::Tensor t, Napi::Object session) {
  Napi::Object obj = Instance(env).tensor_class.New({Napi::External<void>::New(env, nullptr)});
  TensorWrap* w = Unwrap(obj);
  w->tensor_ = std::move(t);
  w->session_ = Napi::Persistent(session);
  return obj;
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    Throw(info.Env(), "E_ARG", "Tensor cannot be constructed directly: use session.fromHost() or session.empty()");
  SetTypeTag(info.This().As<Napi::Object>(), kTensorTag);
}

Napi::Value TensorWrap::DType(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), tensor_.defined() ? qn::dtype_name(tensor_.dtype()) : "disposed");
}

Napi::Value TensorWrap::Shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env);
  if (tensor_.defined())
    for (size_t i = 0; i < tensor_.shape().size(); ++i) a.Set(static_cast<uint32_t>(i), static_cast<double>(tensor_.shape()[i]));
  return a;
}

Napi::Value TensorWrap::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), tensor_.defined() ? tensor_.device().str() : "disposed");
}

Napi::Value TensorWrap::Nbytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), tensor_.defined() ? static_cast<double>(tensor_.nbytes()) : 0);
}

Napi::Value TensorWrap::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !tensor_.defined());
}

Napi::Value TensorWrap::Session(const Napi::CallbackInfo& info) {
  return session_.IsEmpty() ? info.Env().Undefined() : session_.Value();
}

Napi::Value TensorWrap::ToHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tensor_.defined()) Throw(env, "E_DISPOSED", "toHost: the tensor was disposed");
  SessionWrap* s = SessionWrap::Unwrap(session_.Value());
  auto t = tensor_;
  auto host = std::make_shared<std::vector<uint8_t>>();
  return s->Queue(env).Submit(
      env,
      [t, host] {
        host->resize(t.nbytes());
        if (!host->empty()) t.ctx().copy_to_host(host->data(), t.raw(), t.nbytes());
      },
      [t, host](Napi::Env env) -> Napi::Value {
        const size_t n = host->size();
        Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, n);
        if (n) std::memcpy(buf.Data(), host->data(), n);
        const size_t count = static_cast<size_t>(t.numel());
        switch (t.dtype()) {
          case qn::DType::F32: return Napi::Float32Array::New(env, count, buf, 0);
          case qn::DType::BF16:
          case qn::DType::F16: return Napi::Uint16Array::New(env, count, buf, 0);
          case qn::DType::U8: return Napi::Uint8Array::New(env, count, buf, 0);
          case qn::DType::I32: return Napi::Int32Array::New(env, count, buf, 0);
        }
        return env.Undefined();
      });
}

Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  tensor_ = qn::Tensor();
  return info.Env().Undefined();
}

}  // namespace qnb
