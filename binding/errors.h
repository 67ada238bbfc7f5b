// Maps native failures to JavaScript QloraError objects (class registered from TypeScript with
// setErrorClass), each with a `code` such as E_ARG or E_OOM.
#pragma once
#include <napi.h>
#include <string>
#include "qn/error.h"

namespace qnb {

// Stores the JS QloraError constructor for this environment.
void SetErrorClass(Napi::Env env, Napi::Function ctor);
// An instance of the stored error class with .code set; a plain Error with .code when there is no
// class, or when constructing it failed (it threw, or is no constructor): errors must always come
// out, or a queued operation's promise would never settle.
Napi::Object MakeError(Napi::Env env, const std::string& code, const std::string& message);
[[noreturn]] void Throw(Napi::Env env, const std::string& code, const std::string& message);
// A TypeError with .code (an argument of the wrong kind of object, as better-sqlite3 does).
[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string& code, const std::string& message);
// Turns whatever is in flight (qn::Error, std::bad_alloc, std::exception) into a JS error object.
Napi::Object ErrorFromCurrentException(Napi::Env env, const std::exception_ptr& e);

// Runs fn; converts a qn::Error or std exception into a thrown QloraError.
template <typename F>
auto Guard(Napi::Env env, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw Napi::Error(env, ErrorFromCurrentException(env, std::current_exception()));
  }
}

}  // namespace qnb
