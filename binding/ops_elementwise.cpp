// JS bindings of the elementwise ops: cast(src, dst), fill(dst, value), axpby(x, y, alpha, beta).
#include "args.h"
#include "op_bindings.h"
#include "op_submit.h"
#include "qn/ops/elementwise.h"

namespace qnb {
namespace {

Napi::Value Cast(const Napi::CallbackInfo& info) {
  qn::CastArgs a{RequireTensor(info, 0, "cast", "src"), RequireTensor(info, 1, "cast", "dst")};
  return SubmitOp(info.Env(), SessionOfTensor(info, 0, "cast"), [&] { qn::check_cast(a); },
                  [a](qn::Context& ctx) { qn::cast(ctx, a); });
}

Napi::Value Fill(const Napi::CallbackInfo& info) {
  qn::FillArgs a{RequireTensor(info, 0, "fill", "dst"), RequireNumber(info, 1, "fill", "value")};
  return SubmitOp(info.Env(), SessionOfTensor(info, 0, "fill"), [&] { qn::check_fill(a); },
                  [a](qn::Context& ctx) { qn::fill(ctx, a); });
}

Napi::Value Axpby(const Napi::CallbackInfo& info) {
  qn::AxpbyArgs a{RequireTensor(info, 0, "axpby", "x"), RequireTensor(info, 1, "axpby", "y"),
                  static_cast<float>(RequireNumber(info, 2, "axpby", "alpha")),
                  static_cast<float>(RequireNumber(info, 3, "axpby", "beta"))};
  return SubmitOp(info.Env(), SessionOfTensor(info, 1, "axpby"), [&] { qn::check_axpby(a); },
                  [a](qn::Context& ctx) { qn::axpby(ctx, a); });
}

}  // namespace

void RegisterElementwiseOps(Napi::Env env, Napi::Object ops) {
  ops.Set("cast", Napi::Function::New(env, Cast, "cast"));
  ops.Set("fill", Napi::Function::New(env, Fill, "fill"));
  ops.Set("axpby", Napi::Function::New(env, Axpby, "axpby"));
}

}  // namespace qnb
