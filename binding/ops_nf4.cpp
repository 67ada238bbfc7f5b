// JS bindings of the nf4 ops (qn/ops/nf4.h). All but nf4Tables return Promises settled on the
// session queue (SubmitOp), and validate their arguments synchronously first.
//   nf4Tables(): { codes: Float32Array(16), thresholds: Float32Array(15), dynamicMap: Float32Array(256) }
//   nf4Quantize(src, codes, absmax, blocksize, name?): Promise<void>
//   nf4DoubleQuant(absmax, absmaxQ, nestedAbsmax, nestedBlocksize = 256): Promise<number>  (the offset)
//   nf4DoubleDequant(absmaxQ, nestedAbsmax, nestedMap, offset, absmaxOut, nestedBlocksize = 256): Promise<void>
//   nf4Dequantize(weight: Nf4WeightDesc, out): Promise<void>
//   nf4QuantizeWeight(w, blocksize = 64, doubleQuant = true, name = ""): Promise<Nf4WeightDesc>
// Nf4WeightDesc = { rows, cols, blocksize, nested, codes: Tensor, absmax?: Tensor (plain),
//                   absmaxQ?: Tensor, nestedAbsmax?: Tensor, nestedMap?: Tensor, nestedOffset?: number,
//                   nestedBlocksize?: number (nested) }
#include <memory>
#include "args.h"
#include "errors.h"
#include "op_bindings.h"
#include "op_submit.h"
#include "qn/ops/nf4.h"
#include "session_wrap.h"
#include "tensor_wrap.h"

namespace qnb {
namespace {

std::string OptionalString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return "";
  return RequireString(info, i, fn, name);
}

int64_t OptionalInteger(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int64_t dflt,
                        int64_t lo, int64_t hi) {
  if (info.Length() <= i || info[i].IsUndefined()) return dflt;
  return RequireInteger(info, i, fn, name, lo, hi);
}

Napi::Float32Array Floats(Napi::Env env, const float* v, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  for (size_t i = 0; i < n; ++i) a[i] = v[i];
  return a;
}

Napi::Value Nf4Tables(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("codes", Floats(env, qn::kNf4Codes, 16));
  o.Set("thresholds", Floats(env, qn::kNf4Thresholds, 15));
  o.Set("dynamicMap", Floats(env, qn::kDynamicMap8, 256));
  return o;
}

// A member of a weight description object.
qn::Tensor MemberTensor(Napi::Env env, const Napi::Object& o, const char* key, const char* fn) {
  return TensorFromValue(env, o.Get(key), std::string(fn) + ": weight." + key);
}

// An integer member is in [0, hi] (hi below 2^53; blocksizes must fit an int).
double MemberNumber(Napi::Env env, const Napi::Object& o, const char* key, const char* fn, bool integer, double dflt,
                    bool required, double hi = 9.007199254740991e15) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && !required) return dflt;
  if (!v.IsNumber()) Throw(env, "E_ARG", std::string(fn) + ": weight." + key + " must be a number, got " + TypeOfValue(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (integer && (!(d >= 0 && d <= hi) || d != static_cast<double>(static_cast<int64_t>(d))))
    Throw(env, "E_ARG", std::string(fn) + ": weight." + key + " must be an integer in [0, " + std::to_string(static_cast<int64_t>(hi)) +
                            "], got " + std::to_string(d));
  return d;
}

qn::Nf4Weight RequireWeight(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  Napi::Env env = info.Env();
  Napi::Object o = RequireObject(info, i, fn, "weight");
  qn::Nf4Weight w;
  w.rows = static_cast<int64_t>(MemberNumber(env, o, "rows", fn, true, 0, true));
  w.cols = static_cast<int64_t>(MemberNumber(env, o, "cols", fn, true, 0, true));
  w.blocksize = static_cast<int>(MemberNumber(env, o, "blocksize", fn, true, 64, false, 1 << 30));
  w.codes = MemberTensor(env, o, "codes", fn);
  Napi::Value nested = o.Get("nested");
  w.nested = nested.IsUndefined() ? o.Get("absmaxQ").IsObject() : nested.ToBoolean().Value();
  if (w.nested) {
    w.absmax_q = MemberTensor(env, o, "absmaxQ", fn);
    w.nested_absmax = MemberTensor(env, o, "nestedAbsmax", fn);
    w.nested_map = MemberTensor(env, o, "nestedMap", fn);
    w.nested_offset = static_cast<float>(MemberNumber(env, o, "nestedOffset", fn, false, 0, true));
    w.nested_blocksize = static_cast<int>(MemberNumber(env, o, "nestedBlocksize", fn, true, 256, false, 1 << 30));
  } else {
    w.absmax = MemberTensor(env, o, "absmax", fn);
  }
  return w;
}

Napi::Value Nf4Quantize(const Napi::CallbackInfo& info) {
  const char* fn = "nf4Quantize";
  qn::Nf4QuantizeArgs a;
  a.src = RequireTensor(info, 0, fn, "src");
  a.codes = RequireTensor(info, 1, fn, "codes");
  a.absmax = RequireTensor(info, 2, fn, "absmax");
  a.blocksize = static_cast<int>(RequireInteger(info, 3, fn, "blocksize", 0, 1 << 30));
  a.name = OptionalString(info, 4, fn, "name");
  return SubmitOp(info.Env(), SessionOfTensor(info, 0, fn), [&] { qn::check_nf4_quantize(a); },
                  [a](qn::Context& ctx) { qn::nf4_quantize(ctx, a); });
}

Napi::Value Nf4DoubleQuant(const Napi::CallbackInfo& info) {
  const char* fn = "nf4DoubleQuant";
  qn::Nf4DoubleQuantArgs a;
  a.absmax = RequireTensor(info, 0, fn, "absmax");
  a.absmax_q = RequireTensor(info, 1, fn, "absmaxQ");
  a.nested_absmax = RequireTensor(info, 2, fn, "nestedAbsmax");
  a.nested_blocksize = static_cast<int>(OptionalInteger(info, 3, fn, "nestedBlocksize", 256, 0, 1 << 30));
  SessionWrap* s = SessionOfTensor(info, 0, fn);
  a.offset = Guard(info.Env(), [&] { return qn::Tensor::empty(a.absmax.ctx_ptr(), qn::DType::F32, {1}); });
  auto result = std::make_shared<float>(0.f);
  return SubmitOp(
      info.Env(), s, [&] { qn::check_nf4_double_quant(a); },
      [a, result](qn::Context& ctx) {
        qn::nf4_double_quant(ctx, a);
        ctx.copy_to_host(result.get(), a.offset.raw(), sizeof(float));
      },
      [result](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *result); });
}

Napi::Value Nf4DoubleDequant(const Napi::CallbackInfo& info) {
  const char* fn = "nf4DoubleDequant";
  qn::Nf4DoubleDequantArgs a;
  a.absmax_q = RequireTensor(info, 0, fn, "absmaxQ");
  a.nested_absmax = RequireTensor(info, 1, fn, "nestedAbsmax");
  a.nested_map = RequireTensor(info, 2, fn, "nestedMap");
  a.offset = static_cast<float>(RequireNumber(info, 3, fn, "offset"));
  a.absmax = RequireTensor(info, 4, fn, "absmaxOut");
  a.nested_blocksize = static_cast<int>(OptionalInteger(info, 5, fn, "nestedBlocksize", 256, 0, 1 << 30));
  return SubmitOp(info.Env(), SessionOfTensor(info, 0, fn), [&] { qn::check_nf4_double_dequant(a); },
                  [a](qn::Context& ctx) { qn::nf4_double_dequant(ctx, a); });
}

Napi::Value Nf4Dequantize(const Napi::CallbackInfo& info) {
  const char* fn = "nf4Dequantize";
  qn::Nf4DequantizeArgs a;
  a.w = RequireWeight(info, 0, fn);
  a.out = RequireTensor(info, 1, fn, "out");
  return SubmitOp(info.Env(), SessionOfTensor(info, 1, fn), [&] { qn::check_nf4_dequantize(a); },
                  [a](qn::Context& ctx) { qn::nf4_dequantize(ctx, a); });
}

Napi::Value Nf4QuantizeWeight(const Napi::CallbackInfo& info) {
  const char* fn = "nf4QuantizeWeight";
  Napi::Env env = info.Env();
  const qn::Tensor w = RequireTensor(info, 0, fn, "w");
  const int bs = static_cast<int>(OptionalInteger(info, 1, fn, "blocksize", 64, 0, 1 << 30));
  const bool dq = info.Length() <= 2 || info[2].IsUndefined() ? true : info[2].ToBoolean().Value();
  const std::string name = OptionalString(info, 3, fn, "name");
  SessionWrap* s = SessionOfTensor(info, 0, fn);
  Napi::Object session = s->Value();
  auto result = std::make_shared<qn::Nf4Weight>();
  auto session_ref = std::make_shared<Napi::ObjectReference>(Napi::Persistent(session));
  return SubmitOp(
      env, s,
      [&] {
        QN_CHECK(w.ndim() == 1 || w.ndim() == 2, Shape,
                 std::string(fn) + ": w must be 1-D or 2-D, got " + qn::shape_str(w.shape()));
        QN_CHECK(qn::nf4_blocksize_ok(bs), Arg,
                 std::string(fn) + ": blocksize must be a power of two in [32, 4096], got " + std::to_string(bs));
        const int64_t n = w.numel();
        QN_CHECK(n >= 1, Shape, std::string(fn) + ": w is empty");
        const qn::DType d = w.dtype();
        QN_CHECK(d == qn::DType::F32 || d == qn::DType::BF16 || d == qn::DType::F16, DType,
                 std::string(fn) + ": w must be f32, bf16 or f16, got " + qn::dtype_name(d));
      },
      [w, bs, dq, name, result](qn::Context&) { *result = qn::nf4_quantize_weight(w, bs, dq, name); },
      [result, session_ref](Napi::Env env) -> Napi::Value {
        const qn::Nf4Weight& q = *result;
        Napi::Object session = session_ref->Value();
        Napi::Object o = Napi::Object::New(env);
        o.Set("rows", static_cast<double>(q.rows));
        o.Set("cols", static_cast<double>(q.cols));
        o.Set("blocksize", q.blocksize);
        o.Set("nested", q.nested);
        o.Set("codes", TensorWrap::NewInstance(env, q.codes, session));
        if (q.nested) {
          o.Set("absmaxQ", TensorWrap::NewInstance(env, q.absmax_q, session));
          o.Set("nestedAbsmax", TensorWrap::NewInstance(env, q.nested_absmax, session));
          o.Set("nestedMap", TensorWrap::NewInstance(env, q.nested_map, session));
          o.Set("nestedOffset", static_cast<double>(q.nested_offset));
          o.Set("nestedBlocksize", q.nested_blocksize);
        } else {
          o.Set("absmax", TensorWrap::NewInstance(env, q.absmax, session));
        }
        return o;
      });
}

}  // namespace

void RegisterNf4Ops(Napi::Env env, Napi::Object ops) {
  ops.Set("nf4Tables", Napi::Function::New(env, Nf4Tables, "nf4Tables"));
  ops.Set("nf4Quantize", Napi::Function::New(env, Nf4Quantize, "nf4Quantize"));
  ops.Set("nf4DoubleQuant", Napi::Function::New(env, Nf4DoubleQuant, "nf4DoubleQuant"));
  ops.Set("nf4DoubleDequant", Napi::Function::New(env, Nf4DoubleDequant, "nf4DoubleDequant"));
  ops.Set("nf4Dequantize", Napi::Function::New(env, Nf4Dequantize, "nf4Dequantize"));
  ops.Set("nf4QuantizeWeight", Napi::Function::New(env, Nf4QuantizeWeight, "nf4QuantizeWeight"));
}

}  // namespace qnb
