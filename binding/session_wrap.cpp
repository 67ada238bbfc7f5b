// SessionWrap (see session_wrap.h).
#include "session_wrap.h"
#include <cstring>
#include "args.h"
#include "errors.h"
#include "instance_data.h"
#include "native_class.h"
#include "qn/memory_stats.h"
#include "tensor_wrap.h"

namespace qnb {

Napi::Function SessionWrap::Define(Napi::Env env) {
  Napi::Function cls = DefineClass(env, "NativeSession",
                                   {
                                       InstanceAccessor<&SessionWrap::Device>("device"),
                                       InstanceAccessor<&SessionWrap::Disposed>("disposed"),
                                       InstanceMethod<&SessionWrap::FromHost>("fromHost"),
                                       InstanceMethod<&SessionWrap::Empty>("empty"),
                                       InstanceMethod<&SessionWrap::Memory>("memory"),
                                       InstanceMethod<&SessionWrap::ResetPeak>("resetPeak"),
                                       InstanceMethod<&SessionWrap::Synchronize>("synchronize"),
                                       InstanceMethod<&SessionWrap::Dispose>("dispose"),
                                   });
  Instance(env).session_class = Napi::Persistent(cls);
  return cls;
}

namespace {
// what an open session is worth to V8's GC heuristics: its thread (stack, queue) and context
constexpr int64_t kSessionExternalBytes = 4 << 20;
}  // namespace

// new NativeSession(deviceName)
SessionWrap::SessionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SessionWrap>(info) {
  Napi::Env env = info.Env();
  const std::string name = RequireString(info, 0, "Session", "device");
  Guard(env, [&] {
    ctx_ = qn::open_context(qn::parse_device(name));
    return 0;
  });
  queue_ = std::make_unique<SessionQueue>(env);
  SetTypeTag(info.This().As<Napi::Object>(), kSessionTag);
  env_ = env;
  int64_t ignored = 0;
  counted_ = napi_adjust_external_memory(env, kSessionExternalBytes, &ignored) == napi_ok;
}

void SessionWrap::Uncount() {
  if (!counted_) return;
  counted_ = false;
  int64_t ignored = 0;
  napi_adjust_external_memory(env_, -kSessionExternalBytes, &ignored);
}

SessionWrap* SessionWrap::Unwrap(Napi::Object o) {
  RequireTypeTag(o, kSessionTag, "Session");
  return Napi::ObjectWrap<SessionWrap>::Unwrap(o);
}

SessionWrap::~SessionWrap() {
  if (queue_) queue_->Close();
  Uncount();
}

const std::shared_ptr<qn::Context>& SessionWrap::Context(Napi::Env env) const {
  if (!ctx_) Throw(env, "E_DISPOSED", "the session was disposed");
  return ctx_;
}

SessionQueue& SessionWrap::Queue(Napi::Env env) {
  if (!ctx_) Throw(env, "E_DISPOSED", "the session was disposed");
  return *queue_;
}

SessionWrap* SessionWrap::FromValue(Napi::Env env, const Napi::Value& v, const char* fn) {
  if (!HasTypeTag(v, kSessionTag)) ThrowNotInstance(env, v, Instance(env).session_class, std::string(fn) + ": expected a Session");
  return Unwrap(v.As<Napi::Object>());
}

Napi::Value SessionWrap::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), ctx_ ? ctx_->device().str() : "disposed");
}

Napi::Value SessionWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !ctx_); }

namespace {

bool TypedArrayMatches(napi_typedarray_type ta, qn::DType dt) {
  switch (dt) {
    case qn::DType::F32: return ta == napi_float32_array;
    case qn::DType::BF16:
    case qn::DType::F16: return ta == napi_uint16_array;
    case qn::DType::U8: return ta == napi_uint8_array || ta == napi_uint8_clamped_array;
    case qn::DType::I32: return ta == napi_int32_array;
  }
  return false;
}

const char* ExpectedArray(qn::DType dt) {
  switch (dt) {
    case qn::DType::F32: return "Float32Array";
    case qn::DType::BF16: return "Uint16Array (bf16 bits)";
    case qn::DType::F16: return "Uint16Array (f16 bits)";
    case qn::DType::U8: return "Uint8Array";
    case qn::DType::I32: return "Int32Array";
  }
  return "?";
}

}  // namespace

// fromHost(typedArray, dtype, shape): a new tensor holding a copy of the array.
Napi::Value SessionWrap::FromHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Context(env);  // E_DISPOSED first
  if (info.Length() < 1 || !info[0].IsTypedArray())
    Throw(env, "E_ARG", "fromHost: argument 'data' must be a typed array, got " + TypeOfValue(info[0]));
  const qn::DType dt = RequireDType(info, 1, "fromHost");
  const qn::Shape shape = RequireShape(info, 2, "fromHost");  // may run JS (element getters)
  // The array's length and memory are read only now, after the shape's getters (which may have
  // detached or shrunk its buffer); no JS runs from here to the copy.
  const auto ctx = Context(env);  // again: a getter may have disposed the session
  const HostArray src = TypedArrayBytes(info[0]);
  if (!TypedArrayMatches(src.type, dt))
    Throw(env, "E_DTYPE", std::string("fromHost: dtype ") + qn::dtype_name(dt) + " needs a " + ExpectedArray(dt));
  if (static_cast<int64_t>(src.length) != qn::shape_numel(shape))
    Throw(env, "E_SHAPE", "fromHost: shape " + qn::shape_str(shape) + " holds " + std::to_string(qn::shape_numel(shape)) +
                              " elements but the array has " + std::to_string(src.length));
  qn::Tensor t = Guard(env, [&] {
    qn::Tensor t = qn::Tensor::empty(ctx, dt, shape);
    if (t.nbytes()) ctx->copy_from_host(t.raw(), src.data, t.nbytes());
    return t;
  });
  return TensorWrap::NewInstance(env, std::move(t), Value());
}

// empty(dtype, shape): an uninitialized tensor on the session's device.
Napi::Value SessionWrap::Empty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Context(env);  // E_DISPOSED first
  const qn::DType dt = RequireDType(info, 0, "empty");
  const qn::Shape shape = RequireShape(info, 1, "empty");
  const auto ctx = Context(env);  // again: a shape getter may have disposed the session
  qn::Tensor t = Guard(env, [&] { return qn::Tensor::empty(ctx, dt, shape); });
  return TensorWrap::NewInstance(env, std::move(t), Value());
}

Napi::Value SessionWrap::Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const qn::MemoryStats s = qn::memory_stats(Context(env)->device());
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocated", static_cast<double>(s.allocated));
  o.Set("peak", static_cast<double>(s.peak));
  o.Set("allocations", static_cast<double>(s.allocations));
  return o;
}

Napi::Value SessionWrap::ResetPeak(const Napi::CallbackInfo& info) {
  qn::memory_reset_peak(Context(info.Env())->device());
  return info.Env().Undefined();
}

Napi::Value SessionWrap::Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ctx = Context(env);
  return Queue(env).Submit(env, [ctx] { ctx->synchronize(); }, nullptr);
}

Napi::Value SessionWrap::Dispose(const Napi::CallbackInfo& info) {
  if (queue_) queue_->Close();
  ctx_.reset();
  Uncount();
  return info.Env().Undefined();
}

}  // namespace qnb
