// Argument checks (see args.h).
#include "args.h"
#include <cmath>
#include "errors.h"
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
  return s;
}

qn::Tensor RequireTensor(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !TensorWrap::IsTensor(env, info[i]))
    Throw(env, "E_ARG", Where(fn, name) + " must be a Tensor, got " + TypeOfValue(info[i]));
  TensorWrap* w = TensorWrap::Unwrap(info[i].As<Napi::Object>());
  if (!w->tensor().defined()) Throw(env, "E_DISPOSED", Where(fn, name) + " is a disposed tensor");
  return w->tensor();
}

}  // namespace qnb
