// JS class Session (native part): one device context (a CUDA stream on GPU) and the ordered work
// queue its asynchronous calls run on. Tensors are created through a session and remember it.
#pragma once
#include <napi.h>
#include <memory>
#include "qn/context.h"
#include "session_queue.h"

namespace qnb {

class SessionWrap : public Napi::ObjectWrap<SessionWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // Hides ObjectWrap::Unwrap (node-addon-api calls T::Unwrap for `this` of every method and
  // accessor): TypeError E_ARG unless o is a Session the addon made (native_class.h).
  static SessionWrap* Unwrap(Napi::Object o);
  explicit SessionWrap(const Napi::CallbackInfo& info);
  ~SessionWrap() override;

  // Throws E_DISPOSED after dispose().
  const std::shared_ptr<qn::Context>& Context(Napi::Env env) const;
  SessionQueue& Queue(Napi::Env env);
  static SessionWrap* FromValue(Napi::Env env, const Napi::Value& v, const char* fn);

 private:
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value FromHost(const Napi::CallbackInfo& info);
  Napi::Value Empty(const Napi::CallbackInfo& info);
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value ResetPeak(const Napi::CallbackInfo& info);
  Napi::Value Synchronize(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<qn::Context> ctx_;
  std::unique_ptr<SessionQueue> queue_;
  // A session's thread reported to V8 as external memory while the session is open, so dropped,
  // undisposed sessions are collected (and their threads ended) before thousands pile up.
  napi_env env_ = nullptr;
  bool counted_ = false;
  void Uncount();
};

}  // namespace qnb
