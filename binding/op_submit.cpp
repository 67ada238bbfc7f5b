// Op submission helpers (see op_submit.h).
#include "op_submit.h"
#include "args.h"
#include "errors.h"
#include "session_wrap.h"
#include "tensor_wrap.h"

namespace qnb {

SessionWrap* SessionOfTensor(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  RequireTensor(info, i, fn, "tensor");
  // the session the tensor holds natively: a JS 'session' property could be anything
  return SessionWrap::FromValue(info.Env(), TensorWrap::Unwrap(info[i].As<Napi::Object>())->SessionObject(), fn);
}

Napi::Value SubmitOp(Napi::Env env, SessionWrap* session, const std::function<void()>& check,
                     std::function<void(qn::Context&)> op, std::function<Napi::Value(Napi::Env)> done) {
  auto ctx = session->Context(env);
  Guard(env, [&] {
    ctx->check_usable();
    check();
    return 0;
  });
  return session->Queue(env).Submit(env, [ctx, op = std::move(op)] { op(*ctx); }, std::move(done));
}

}  // namespace qnb
