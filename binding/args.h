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
// The same for any value (an option or object member); `what` names it ("gemm: option 'bias'").
qn::Tensor TensorFromValue(Napi::Env env, const Napi::Value& v, const std::string& what);

// A typed array's element type, element count, byte length and first byte, read at the moment of
// the call (works for ArrayBuffer and SharedArrayBuffer backing). Take it after every other
// argument was read, and copy before any JS runs again: a getter may detach or shrink the buffer.
struct HostArray {
  napi_typedarray_type type;
  size_t length;  // elements
  size_t bytes;
  const uint8_t* data;  // null when empty or detached
};
HostArray TypedArrayBytes(const Napi::Value& typed_array);

}  // namespace qnb
