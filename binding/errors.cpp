// QloraError construction and exception translation.
#include "errors.h"
#include <new>
#include "instance_data.h"

namespace qnb {

void SetErrorClass(Napi::Env env, Napi::Function ctor) {
  Instance(env).error_class = Napi::Persistent(ctor);
}

Napi::Object MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  auto& inst = Instance(env);
  if (!inst.error_class.IsEmpty()) {
    try {
      Napi::Object err = inst.error_class.New({Napi::String::New(env, code), Napi::String::New(env, message)});
      err.Set("code", Napi::String::New(env, code));
      return err;
    } catch (const Napi::Error&) {
      // the class threw (node-addon-api already cleared the pending exception): plain Error below
    }
  }
  Napi::Object err = Napi::Error::New(env, message).Value();
  err.Set("code", Napi::String::New(env, code));
  return err;
}

void Throw(Napi::Env env, const std::string& code, const std::string& message) {
  throw Napi::Error(env, MakeError(env, code, message));
}

void ThrowTypeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::TypeError err = Napi::TypeError::New(env, message);
  err.Value().Set("code", Napi::String::New(env, code));
  throw err;
}

Napi::Object ErrorFromCurrentException(Napi::Env env, const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const qn::Error& err) {
    return MakeError(env, qn::error_code_name(err.code()), err.what());
  } catch (const std::bad_alloc&) {
    return MakeError(env, "E_OOM", "out of host memory");
  } catch (const std::exception& err) {
    return MakeError(env, "E_INTERNAL", err.what());
  } catch (...) {
    return MakeError(env, "E_INTERNAL", "unknown native exception");
  }
}

}  // namespace qnb
