// Argument checks for calls from JavaScript: each failure throws a QloraError with code E_ARG (or
// E_DTYPE / E_SHAPE) naming the function, the argument and what was expected.
#pragma once
#include <napi.h>
#include <string>
#include "qn/dtype.h"
#include "qn/tensor.h"

namespace qnb {

std::string TypeOfValue(const Napi::Value& v);
std::string RequireString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name);
double RequireNumber(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name);
int64_t RequireInteger(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int64_t lo, int64_t hi);
Napi::Object RequireObject(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name);
qn::DType RequireDType(const Napi::CallbackInfo& info, size_t i, const char* fn);
qn::Shape RequireShape(const Napi::CallbackInfo& info, size_t i, const char* fn);
// A live tensor argument (E_ARG when not a Tensor, E_DISPOSED when disposed).
qn::Tensor RequireTensor(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name);

}  // namespace qnb
