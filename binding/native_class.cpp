// Type tags of the addon classes (see native_class.h).
#include "native_class.h"
#include "errors.h"

namespace qnb {

// Random values; only their distinctness matters.
const napi_type_tag kTensorTag = {0x6f3c2a91d4b85e07ULL, 0x9a1e4c7b2d8f6035ULL};
const napi_type_tag kSessionTag = {0x2b7e9d14a6c3f058ULL, 0x51d8a2e7c90b4f36ULL};
const napi_type_tag kModelTag = {0xc4a1f7302e9b6d85ULL, 0x0e6b3d9a71c5f248ULL};

void SetTypeTag(const Napi::Object& o, const napi_type_tag& tag) { o.TypeTag(&tag); }

bool HasTypeTag(const Napi::Value& v, const napi_type_tag& tag) {
  return v.IsObject() && v.As<Napi::Object>().CheckTypeTag(&tag);
}

void RequireTypeTag(const Napi::Value& v, const napi_type_tag& tag, const char* cls) {
  if (!HasTypeTag(v, tag))
    ThrowTypeError(v.Env(), "E_ARG", std::string("expected a ") + cls + " made by the addon, got " +
                                         (v.IsObject() ? "an object of another class (or without a native part)" : "a non-object"));
}

void ThrowNotInstance(Napi::Env env, const Napi::Value& v, const Napi::FunctionReference& cls_ref, const std::string& message) {
  if (v.IsObject() && !cls_ref.IsEmpty() && v.As<Napi::Object>().InstanceOf(cls_ref.Value()))
    ThrowTypeError(env, "E_ARG", message + " (an object of another class, or without a native part)");
  Throw(env, "E_ARG", message);
}

}  // namespace qnb
