// Shared plumbing for op bindings: find the session of a tensor argument, validate on the JS
// thread (so bad calls throw at once), then run the op on the session's ordered queue.
#pragma once
#include <napi.h>
#include <functional>
#include "qn/context.h"
#include "qn/tensor.h"

namespace qnb {

class SessionWrap;

// The session object a tensor argument was created by (E_ARG / E_DISPOSED as RequireTensor).
SessionWrap* SessionOfTensor(const Napi::CallbackInfo& info, size_t i, const char* fn);

// Validates with check() synchronously, then runs op(ctx) on the session queue; resolves to
// undefined (or to done(env) when given).
Napi::Value SubmitOp(Napi::Env env, SessionWrap* session, const std::function<void()>& check,
                     std::function<void(qn::Context&)> op,
                     std::function<Napi::Value(Napi::Env)> done = nullptr);

}  // namespace qnb
