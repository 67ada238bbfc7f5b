// JS class Tensor (native part): a handle on device memory. Data reaches the host only through
// toHost(). dispose() frees at once (unless an op still queued on the session uses the tensor);
// the garbage-collector finalizer frees as a safety net.
#pragma once
#include <napi.h>
#include <memory>
#include "qn/tensor.h"

namespace qnb {

class SessionWrap;

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // v is a Tensor the addon made (its type tag, see native_class.h; not instanceof).
  static bool IsTensor(Napi::Env env, const Napi::Value& v);
  // Hides ObjectWrap::Unwrap (node-addon-api calls T::Unwrap for `this` of every method and
  // accessor): TypeError E_ARG unless o is a Tensor the addon made.
  static TensorWrap* Unwrap(Napi::Object o);
  static Napi::Object NewInstance(Napi::Env env, qn::Tensor t, Napi::Object session);

  explicit TensorWrap(const Napi::CallbackInfo& info);
  const qn::Tensor& tensor() const { return tensor_; }
  // The session object the tensor was made by (the native reference, not the JS property).
  Napi::Object SessionObject() const { return session_.Value(); }

 private:
  Napi::Value DType(const Napi::CallbackInfo& info);
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Nbytes(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value ToHost(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Session(const Napi::CallbackInfo& info);

  qn::Tensor tensor_;
  Napi::ObjectReference session_;  // keeps the session object (and its queue) alive
};

}  // namespace qnb
