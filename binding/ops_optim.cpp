// JS bindings of the optimizer ops (qn/ops/optim.h). Every function returns a Promise.
//   optimStateCreate(session, n, kind = "adamw_32bit" | "adamw_8bit", { paged? })
//       -> { kind, paged, n, m, v, absmaxM?, absmaxV?, qmap? } (NativeTensors, zero state)
//   adamwStep(param, grad, state, { step, lr, beta1?, beta2?, eps?, weightDecay?, gradScale?,
//             normSq?, maxGradNorm? }) -> undefined
//   gradNormSq(grad, out?, flag?) -> { normSq, nonfinite } (read back after the op ran)
//   nonfinite(x) -> boolean
//   optimStateWrite(tensor, bytes) -> undefined (restores a state tensor from a checkpoint)
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>
#include "args.h"
#include "errors.h"
#include "op_bindings.h"
#include "op_submit.h"
#include "qn/ops/optim.h"
#include "session_wrap.h"
#include "tensor_wrap.h"

namespace qnb {
namespace {

double OptNumber(Napi::Env env, const Napi::Object& o, const char* key, double dflt, const char* fn) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsNumber()) Throw(env, "E_ARG", std::string(fn) + ": option '" + key + "' must be a number, got " + TypeOfValue(v));
  return v.As<Napi::Number>().DoubleValue();
}

// A live tensor stored in an object field, belonging to `session` (E_ARG / E_DISPOSED / E_DEVICE).
qn::Tensor FieldTensor(Napi::Env env, const Napi::Object& o, const char* key, const Napi::Value& session,
                       const char* fn, bool required = true) {
  Napi::Value v = o.Get(key);
  if (!required && (v.IsUndefined() || v.IsNull())) return qn::Tensor();
  qn::Tensor t = TensorFromValue(env, v, std::string(fn) + ": '" + key + "'");
  if (!TensorWrap::Unwrap(v.As<Napi::Object>())->SessionObject().StrictEquals(session))
    Throw(env, "E_DEVICE", std::string(fn) + ": '" + key + "' belongs to another session");
  return t;
}

// The C++ state from the object optimStateCreate returned.
qn::OptimState StateFromJs(Napi::Env env, const Napi::Value& v, const Napi::Value& session,
                           const std::shared_ptr<qn::Context>& owner, const char* fn) {
  if (!v.IsObject()) Throw(env, "E_ARG", std::string(fn) + ": 'state' must be the object optimStateCreate returned");
  Napi::Object o = v.As<Napi::Object>();
  qn::OptimState s;
  Napi::Value kind = o.Get("kind");
  if (!kind.IsString() || !qn::parse_optim_kind(kind.As<Napi::String>().Utf8Value(), &s.kind))
    Throw(env, "E_ARG", std::string(fn) + ": state.kind must be \"adamw_32bit\" or \"adamw_8bit\"");
  s.paged = o.Get("paged").ToBoolean().Value();
  const double n = OptNumber(env, o, "n", -1, fn);
  s.n = std::isfinite(n) && std::fabs(n) < 9.007199254740992e15 ? static_cast<int64_t>(n) : -1;  // checked by check_adamw
  s.owner = owner;
  s.m = FieldTensor(env, o, "m", session, fn);
  s.v = FieldTensor(env, o, "v", session, fn);
  if (s.kind == qn::OptimKind::AdamW8) {
    s.absmax_m = FieldTensor(env, o, "absmaxM", session, fn);
    s.absmax_v = FieldTensor(env, o, "absmaxV", session, fn);
    s.qmap = FieldTensor(env, o, "qmap", session, fn);
  }
  return s;
}

Napi::Value Resolved(Napi::Env env, Napi::Value v) {
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Resolve(v);
  return d.Promise();
}

Napi::Value OptimStateCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "optimStateCreate";
  SessionWrap* session = SessionWrap::FromValue(env, info[0], fn);
  const int64_t n = RequireInteger(info, 1, fn, "n", 0, int64_t(1) << 50);
  qn::OptimKind kind = qn::OptimKind::AdamW32;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    const std::string k = RequireString(info, 2, fn, "kind");
    if (!qn::parse_optim_kind(k, &kind))
      Throw(env, "E_ARG", std::string(fn) + ": kind must be \"adamw_32bit\" or \"adamw_8bit\", got \"" + k + "\"");
  }
  bool paged = false;
  if (info.Length() > 3 && info[3].IsObject()) paged = info[3].As<Napi::Object>().Get("paged").ToBoolean().Value();
  const auto& ctx = session->Context(env);
  // Allocated and zeroed here (like Session.empty): the new memory is not used by queued work.
  qn::OptimState s = Guard(env, [&] { return qn::optim_state_create(ctx, n, kind, paged); });
  Napi::Object sess = info[0].As<Napi::Object>();
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", qn::optim_kind_name(s.kind));
  o.Set("paged", s.paged);
  o.Set("n", static_cast<double>(s.n));
  o.Set("m", TensorWrap::NewInstance(env, s.m, sess));
  o.Set("v", TensorWrap::NewInstance(env, s.v, sess));
  if (s.kind == qn::OptimKind::AdamW8) {
    o.Set("absmaxM", TensorWrap::NewInstance(env, s.absmax_m, sess));
    o.Set("absmaxV", TensorWrap::NewInstance(env, s.absmax_v, sess));
    o.Set("qmap", TensorWrap::NewInstance(env, s.qmap, sess));
  }
  return Resolved(env, o);
}

Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "adamwStep";
  SessionWrap* session = SessionOfTensor(info, 0, fn);
  const Napi::Value sess = session->Value();
  qn::AdamWArgs a;
  a.param = RequireTensor(info, 0, fn, "param");
  a.grad = RequireTensor(info, 1, fn, "grad");
  a.state = StateFromJs(env, info[2], sess, session->Context(env), fn);
  Napi::Object o = RequireObject(info, 3, fn, "options");
  const double step = OptNumber(env, o, "step", -1, fn);
  if (!(step >= 1 && step <= 9.007199254740992e15) || std::floor(step) != step)
    Throw(env, "E_ARG", std::string(fn) + ": option 'step' must be an integer >= 1 (1 for the first update)");
  a.step = static_cast<int64_t>(step);
  if (!o.Get("lr").IsNumber()) Throw(env, "E_ARG", std::string(fn) + ": option 'lr' (a number) is required");
  a.lr = OptNumber(env, o, "lr", 0, fn);
  a.beta1 = OptNumber(env, o, "beta1", 0.9, fn);
  a.beta2 = OptNumber(env, o, "beta2", 0.999, fn);
  a.eps = OptNumber(env, o, "eps", 1e-8, fn);
  a.weight_decay = OptNumber(env, o, "weightDecay", 0.0, fn);
  a.grad_scale = static_cast<float>(OptNumber(env, o, "gradScale", 1.0, fn));
  a.max_grad_norm = static_cast<float>(OptNumber(env, o, "maxGradNorm", 0.0, fn));
  a.norm_sq = FieldTensor(env, o, "normSq", sess, fn, /*required=*/false);
  return SubmitOp(env, session, [&] { qn::check_adamw(a); }, [a](qn::Context& ctx) { qn::adamw_step(ctx, a); });
}

struct NormResult {
  float norm_sq = 0;
  int32_t flag = 0;
};

Napi::Value GradNormSq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "gradNormSq";
  SessionWrap* session = SessionOfTensor(info, 0, fn);
  qn::GradNormSqArgs a;
  a.grad = RequireTensor(info, 0, fn, "grad");
  const auto& ctx = session->Context(env);
  a.out = info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()
              ? RequireTensor(info, 1, fn, "out")
              : Guard(env, [&] { return qn::Tensor::empty(ctx, qn::DType::F32, {1}); });
  a.flag = info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()
               ? RequireTensor(info, 2, fn, "flag")
               : Guard(env, [&] { return qn::Tensor::empty(ctx, qn::DType::I32, {1}); });
  auto r = std::make_shared<NormResult>();
  return SubmitOp(
      env, session, [&] { qn::check_grad_norm_sq(a); },
      [a, r](qn::Context& c) {
        qn::grad_norm_sq(c, a);
        c.copy_to_host(&r->norm_sq, a.out.raw(), sizeof(float));
        c.copy_to_host(&r->flag, a.flag.raw(), sizeof(int32_t));
      },
      [r](Napi::Env e) {
        Napi::Object o = Napi::Object::New(e);
        o.Set("normSq", static_cast<double>(r->norm_sq));
        o.Set("nonfinite", r->flag != 0);
        return o;
      });
}

Napi::Value Nonfinite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "nonfinite";
  SessionWrap* session = SessionOfTensor(info, 0, fn);
  qn::NonfiniteArgs a;
  a.x = RequireTensor(info, 0, fn, "x");
  const auto& ctx = session->Context(env);
  a.flag = Guard(env, [&] { return qn::Tensor::empty(ctx, qn::DType::I32, {1}); });
  auto r = std::make_shared<int32_t>(0);
  return SubmitOp(
      env, session, [&] { qn::check_nonfinite(a); },
      [a, r](qn::Context& c) {
        qn::nonfinite(c, a);
        c.copy_to_host(r.get(), a.flag.raw(), sizeof(int32_t));
      },
      [r](Napi::Env e) { return Napi::Boolean::New(e, *r != 0); });
}

Napi::Value OptimStateWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "optimStateWrite";
  SessionWrap* session = SessionOfTensor(info, 0, fn);
  qn::Tensor t = RequireTensor(info, 0, fn, "tensor");
  if (info.Length() < 2 || !info[1].IsTypedArray())
    Throw(env, "E_ARG", std::string(fn) + ": 'data' must be a typed array, got " + TypeOfValue(info[1]));
  // Read last (no JS runs between this and the copy), and copied now, so the caller may reuse
  // its array before the queued write runs.
  const HostArray arr = TypedArrayBytes(info[1]);
  if (arr.bytes != t.nbytes())
    Throw(env, "E_SHAPE", std::string(fn) + ": the tensor holds " + std::to_string(t.nbytes()) + " bytes, the data " +
                              std::to_string(arr.bytes));
  auto bytes = std::make_shared<std::vector<uint8_t>>(arr.data, arr.data + arr.bytes);
  return SubmitOp(env, session, [] {}, [t, bytes](qn::Context&) {
    if (!bytes->empty()) t.ctx().copy_from_host(t.raw(), bytes->data(), bytes->size());
  });
}

}  // namespace

void RegisterOptimOps(Napi::Env env, Napi::Object ops) {
  ops.Set("optimStateCreate", Napi::Function::New(env, OptimStateCreate, "optimStateCreate"));
  ops.Set("adamwStep", Napi::Function::New(env, AdamwStep, "adamwStep"));
  ops.Set("gradNormSq", Napi::Function::New(env, GradNormSq, "gradNormSq"));
  ops.Set("nonfinite", Napi::Function::New(env, Nonfinite, "nonfinite"));
  ops.Set("optimStateWrite", Napi::Function::New(env, OptimStateWrite, "optimStateWrite"));
}

}  // namespace qnb
