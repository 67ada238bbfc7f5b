// JS bindings of the linear-algebra ops (qn/ops/gemm.h). Returns a Promise.
//   gemm(a, b, c, { transA?, transB?, alpha?, beta?, bias? }) -> undefined
//     c = alpha * op(a) op(b) + beta * c (+ bias), row-major; a, b f32 or bf16 (same), c f32 or
//     bf16, bias [N] f32 or bf16; leading dims of a tensor fold into its rows. Defaults: no
//     transposes, alpha 1, beta 0 (c is not read), no bias.
#include <string>
#include "args.h"
#include "errors.h"
#include "op_bindings.h"
#include "op_submit.h"
#include "qn/ops/gemm.h"
#include "tensor_wrap.h"

namespace qnb {
namespace {

bool OptBool(Napi::Env env, const Napi::Object& o, const char* key, bool dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsBoolean()) Throw(env, "E_ARG", std::string("gemm: option '") + key + "' must be a boolean, got " + TypeOfValue(v));
  return v.As<Napi::Boolean>().Value();
}

float OptFloat(Napi::Env env, const Napi::Object& o, const char* key, float dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsNumber()) Throw(env, "E_ARG", std::string("gemm: option '") + key + "' must be a number, got " + TypeOfValue(v));
  return static_cast<float>(v.As<Napi::Number>().DoubleValue());
}

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  qn::GemmArgs a;
  a.a = RequireTensor(info, 0, "gemm", "a");
  a.b = RequireTensor(info, 1, "gemm", "b");
  a.c = RequireTensor(info, 2, "gemm", "c");
  if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
    const Napi::Object o = RequireObject(info, 3, "gemm", "options");
    a.trans_a = OptBool(env, o, "transA", false);
    a.trans_b = OptBool(env, o, "transB", false);
    a.alpha = OptFloat(env, o, "alpha", 1.f);
    a.beta = OptFloat(env, o, "beta", 0.f);
    const Napi::Value bias = o.Get("bias");
    if (!bias.IsUndefined() && !bias.IsNull()) {
      a.bias = TensorFromValue(env, bias, "gemm: option 'bias'");
    }
  }
  return SubmitOp(env, SessionOfTensor(info, 2, "gemm"), [&] { qn::check_gemm(a); },
                  [a](qn::Context& ctx) { qn::gemm(ctx, a); });
}

}  // namespace

void RegisterLinearOps(Napi::Env env, Napi::Object ops) { ops.Set("gemm", Napi::Function::New(env, Gemm, "gemm")); }

}  // namespace qnb
