// Argument checks (see args.h).
#include "args.h"
#include <cmath>
#include "errors.h"
#include "instance_data.h"
#include "native_class.h"
#include "tensor_wrap.h"

namespace qnb {

std::string TypeOfValue(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return "boolean";
  if (v.IsNumber()) return "number";
  if (v.IsString()) return "string";
  if (v.IsBigInt()) return "bigint";
  if (v.IsArray()) return "array";
  if (v.IsTypedArray()) return "typed array";
  if (v.IsFunction()) return "function";
  return "object";
}

static std::string Where(const char* fn, const char* name) { return std::string(fn) + ": argument '" + name + "'"; }

std::string RequireString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (info.Length() <= i || !info[i].IsString())
    Throw(info.Env(), "E_ARG", Where(fn, name) + " must be a string, got " + TypeOfValue(info[i]));
  return info[i].As<Napi::String>().Utf8Value();
}

double RequireNumber(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber())
    Throw(info.Env(), "E_ARG", Where(fn, name) + " must be a number, got " + TypeOfValue(info[i]));
  return info[i].As<Napi::Number>().DoubleValue();
}

int64_t RequireInteger(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int64_t lo, int64_t hi) {
  const double d = RequireNumber(info, i, fn, name);
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    Throw(info.Env(), "E_ARG", Where(fn, name) + " must be an integer in [" + std::to_string(lo) + ", " +
                                   std::to_string(hi) + "], got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

Napi::Object RequireObject(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (info.Length() <= i || !info[i].IsObject() || info[i].IsArray())
    Throw(info.Env(), "E_ARG", Where(fn, name) + " must be an object, got " + TypeOfValue(info[i]));
  return info[i].As<Napi::Object>();
}

qn::DType RequireDType(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  const std::string s = RequireString(info, i, fn, "dtype");
  qn::DType t;
  if (!qn::parse_dtype(s, &t))
    Throw(info.Env(), "E_DTYPE", std::string(fn) + ": unknown dtype '" + s + "' (expected f32, bf16, f16, u8 or i32)");
  return t;
}

qn::Shape RequireShape(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  if (info.Length() <= i || !info[i].IsArray())
    Throw(info.Env(), "E_SHAPE", std::string(fn) + ": shape must be an array of integers, got " + TypeOfValue(info[i]));
  Napi::Array a = info[i].As<Napi::Array>();
  if (a.Length() > 8) Throw(info.Env(), "E_SHAPE", std::string(fn) + ": at most 8 dimensions are supported");
  qn::Shape s;
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!v.IsNumber() || !std::isfinite(d) || d < 0 || std::floor(d) != d || d > 9.007199254740991e15)
      Throw(info.Env(), "E_SHAPE", std::string(fn) + ": shape[" + std::to_string(k) + "] must be a non-negative integer, got " +
                                       (v.IsNumber() ? std::to_string(d) : TypeOfValue(v)));
    s.push_back(static_cast<int64_t>(d));
  }
  // the element count must fit in 2^62 (as in Tensor::empty), so shape_numel() cannot wrap
  int64_t n = 1;
  for (int64_t d : s) {
    if (d != 0 && n > (int64_t(1) << 62) / d)
      Throw(info.Env(), "E_SHAPE", std::string(fn) + ": shape " + qn::shape_str(s) + " has too many elements");
    n *= d;
  }
  return s;
}

qn::Tensor TensorFromValue(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!TensorWrap::IsTensor(env, v))
    ThrowNotInstance(env, v, Instance(env).tensor_class, what + " must be a Tensor, got " + TypeOfValue(v));
  TensorWrap* w = TensorWrap::Unwrap(v.As<Napi::Object>());
  if (!w->tensor().defined()) Throw(env, "E_DISPOSED", what + " is a disposed tensor");
  return w->tensor();
}

qn::Tensor RequireTensor(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  return TensorFromValue(info.Env(), info.Length() > i ? info[i] : info.Env().Undefined(), Where(fn, name));
}

static size_t ElementSize(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array: return 1;
    case napi_int16_array:
    case napi_uint16_array: return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array: return 4;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array: return 8;
    default: return 2;  // napi_float16_array
  }
}

HostArray TypedArrayBytes(const Napi::Value& typed_array) {
  HostArray h{};
  void* data = nullptr;
  // napi_get_typedarray_info's data already includes the view's byte offset
  const napi_status st = napi_get_typedarray_info(typed_array.Env(), typed_array, &h.type, &h.length, &data, nullptr, nullptr);
  if (st != napi_ok) Throw(typed_array.Env(), "E_ARG", "expected a typed array");
  h.bytes = h.length * ElementSize(h.type);
  h.data = h.bytes ? static_cast<const uint8_t*>(data) : nullptr;
  return h;
}

}  // namespace qnb
