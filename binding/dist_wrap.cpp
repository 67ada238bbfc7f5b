// `dist`: data-parallel plumbing over MPI for ts/dist.ts (qn/dist.h). Everything here is
// synchronous on the JS thread and small (scalars, a broadcast of a few bytes); the gradient
// all-reduce runs inside Model.trainStep on the session's queue (binding/model_wrap.cpp).
#include <napi.h>

#include "errors.h"
#include "qn/dist.h"

namespace qnb {
namespace {

Napi::Object InfoObject(Napi::Env env, const qn::dist::Info& i) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("active", i.active);
  o.Set("rank", i.rank);
  o.Set("worldSize", i.world_size);
  o.Set("localRank", i.local_rank);
  o.Set("library", i.library);
  o.Set("timeoutSeconds", qn::dist::timeout_seconds());
  return o;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&] { return InfoObject(info.Env(), qn::dist::init()); });
}

Napi::Value GetInfo(const Napi::CallbackInfo& info) { return InfoObject(info.Env(), qn::dist::info()); }

// allreduceSum(Float64Array | Float32Array, what?): in place
Napi::Value AllreduceSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) Throw(env, "E_ARG", "dist.allreduceSum: expected a Float64Array or Float32Array");
  const std::string what = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "allreduceSum";
  auto ta = info[0].As<Napi::TypedArray>();
  Guard(env, [&] {
    if (ta.TypedArrayType() == napi_float64_array) {
      auto a = ta.As<Napi::Float64Array>();
      qn::dist::allreduce_sum_f64(a.Data(), static_cast<int64_t>(a.ElementLength()), what.c_str());
    } else if (ta.TypedArrayType() == napi_float32_array) {
      auto a = ta.As<Napi::Float32Array>();
      qn::dist::allreduce_sum_f32(a.Data(), static_cast<int64_t>(a.ElementLength()), what.c_str());
    } else {
      qn::fail(qn::ErrorCode::DType, "dist.allreduceSum: expected a Float64Array or Float32Array");
    }
  });
  return info[0];
}

// broadcast(Uint8Array, root): in place
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsNumber()) Throw(env, "E_ARG", "dist.broadcast(bytes: Uint8Array, root: number)");
  auto a = info[0].As<Napi::Uint8Array>();
  const int root = info[1].As<Napi::Number>().Int32Value();
  Guard(env, [&] { qn::dist::broadcast(a.Data(), static_cast<int64_t>(a.ByteLength()), root, "broadcast"); });
  return info[0];
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  const std::string what = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "barrier";
  Guard(info.Env(), [&] { qn::dist::barrier(what.c_str()); });
  return info.Env().Undefined();
}

Napi::Value Abort(const Napi::CallbackInfo& info) {
  const std::string msg = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "aborted";
  const int code = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 1;
  qn::dist::abort_job(msg, code);
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Guard(info.Env(), [] { qn::dist::finalize(); });
  return info.Env().Undefined();
}

}  // namespace

void RegisterDist(Napi::Env env, Napi::Object exports) {
  Napi::Object d = Napi::Object::New(env);
  d.Set("init", Napi::Function::New(env, Init, "init"));
  d.Set("info", Napi::Function::New(env, GetInfo, "info"));
  d.Set("allreduceSum", Napi::Function::New(env, AllreduceSum, "allreduceSum"));
  d.Set("broadcast", Napi::Function::New(env, Broadcast, "broadcast"));
  d.Set("barrier", Napi::Function::New(env, Barrier, "barrier"));
  d.Set("abort", Napi::Function::New(env, Abort, "abort"));
  d.Set("finalize", Napi::Function::New(env, Finalize, "finalize"));
  exports.Set("dist", d);
}

}  // namespace qnb
