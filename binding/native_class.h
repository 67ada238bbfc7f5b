// Which addon class a JS object really is. `instanceof` can be fooled (Object.setPrototypeOf,
// Object.create(Cls.prototype)), and an object that passed it would be unwrapped as the wrong C++
// class. So each class's constructor tags its objects with a 128-bit napi type tag of its own, and
// the tag is checked wherever a native object is unwrapped: arguments (RequireTensor,
// SessionWrap::FromValue ...) and the `this` of every method and accessor (each class hides
// ObjectWrap::Unwrap, which node-addon-api calls for them, with a checked one).
#pragma once
#include <napi.h>
#include <string>

namespace qnb {

extern const napi_type_tag kTensorTag;
extern const napi_type_tag kSessionTag;
extern const napi_type_tag kModelTag;

// Tags a new object of a class (its constructor, once).
void SetTypeTag(const Napi::Object& o, const napi_type_tag& tag);
// v is an object that a constructor of the class with that tag made.
bool HasTypeTag(const Napi::Value& v, const napi_type_tag& tag);
// TypeError E_ARG unless HasTypeTag(v, tag); cls names the class ("Tensor").
void RequireTypeTag(const Napi::Value& v, const napi_type_tag& tag, const char* cls);
// Throws E_ARG for a value that is no object of class `cls_ref`, with `message`: a TypeError when it
// passes `instanceof` all the same (another addon object with a swapped prototype, or
// Object.create(Cls.prototype), which has no native part), the usual QloraError otherwise.
[[noreturn]] void ThrowNotInstance(Napi::Env env, const Napi::Value& v, const Napi::FunctionReference& cls_ref,
                                   const std::string& message);

}  // namespace qnb
