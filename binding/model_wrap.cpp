// ModelWrap (see model_wrap.h).
#include "model_wrap.h"
#include <cmath>
#include <cstring>
#include "args.h"
#include "errors.h"
#include "native_class.h"
#include "qn/dist.h"
#include "qn/memory_stats.h"
#include "session_wrap.h"

namespace qnb {

using qn::model::HostBatch;
using qn::model::Qwen2Model;

namespace {

// ---- option readers: each failure names the function and the key ------------------------------

[[noreturn]] void BadKey(Napi::Env env, const std::string& fn, const std::string& key, const std::string& want,
                         const Napi::Value& got) {
  Throw(env, "E_ARG", fn + ": option '" + key + "' must be " + want + ", got " + TypeOfValue(got));
}

double GetNumber(const Napi::Object& o, const std::string& fn, const char* key, const double* fallback = nullptr) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && fallback) return *fallback;
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) BadKey(o.Env(), fn, key, "a finite number", v);
  return v.As<Napi::Number>().DoubleValue();
}

int64_t GetInt(const Napi::Object& o, const std::string& fn, const char* key, int64_t lo, int64_t hi,
               const int64_t* fallback = nullptr) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && fallback) return *fallback;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    BadKey(o.Env(), fn, key, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", v);
  return static_cast<int64_t>(d);
}

bool GetBool(const Napi::Object& o, const std::string& fn, const char* key, const bool* fallback = nullptr) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && fallback) return *fallback;
  if (!v.IsBoolean()) BadKey(o.Env(), fn, key, "a boolean", v);
  return v.As<Napi::Boolean>().Value();
}

std::string GetString(const Napi::Object& o, const std::string& fn, const char* key, const char* fallback = nullptr) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && fallback) return fallback;
  if (!v.IsString()) BadKey(o.Env(), fn, key, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

Napi::Object GetObject(const Napi::Object& o, const std::string& fn, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsObject() || v.IsArray()) BadKey(o.Env(), fn, key, "an object", v);
  return v.As<Napi::Object>();
}

// Copies a typed array of the expected kind into a vector (values are copied on the JS thread so the
// queued work never touches JS memory). Callers copy right after reading the value, before any
// other getter of the options object could detach or shrink its buffer.
template <typename T>
std::vector<T> CopyTyped(const Napi::Value& v) {
  const HostArray a = TypedArrayBytes(v);
  std::vector<T> out(a.bytes / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), a.data, out.size() * sizeof(T));
  return out;
}

bool IsTyped(const Napi::Value& v, napi_typedarray_type t) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == t;
}

std::vector<int32_t> GetI32Array(const Napi::Object& o, const std::string& fn, const char* key, size_t n, bool optional,
                                 bool allow_u8 = false) {
  Napi::Value v = o.Get(key);
  if (optional && (v.IsUndefined() || v.IsNull())) return {};
  std::vector<int32_t> out;
  if (IsTyped(v, napi_int32_array)) {
    out = CopyTyped<int32_t>(v);
  } else if (allow_u8 && (IsTyped(v, napi_uint8_array) || IsTyped(v, napi_uint8_clamped_array))) {
    std::vector<uint8_t> u = CopyTyped<uint8_t>(v);
    out.assign(u.begin(), u.end());
  } else {
    BadKey(o.Env(), fn, key, allow_u8 ? "an Int32Array or Uint8Array" : "an Int32Array", v);
  }
  if (out.size() != n)
    Throw(o.Env(), "E_SHAPE", fn + ": '" + key + "' has " + std::to_string(out.size()) + " values, expected batchSize * seqLen = " +
                                  std::to_string(n));
  return out;
}

HostBatch ParseBatch(const Napi::Value& v, const std::string& fn, bool need_labels) {
  Napi::Env env = v.Env();
  if (!v.IsObject() || v.IsArray()) Throw(env, "E_ARG", fn + ": batch must be an object, got " + TypeOfValue(v));
  Napi::Object o = v.As<Napi::Object>();
  HostBatch b;
  b.batch = GetInt(o, fn, "batchSize", 1, 1 << 20);
  b.seq = GetInt(o, fn, "seqLen", 1, 1 << 24);
  const size_t n = static_cast<size_t>(b.batch * b.seq);
  b.ids = GetI32Array(o, fn, "inputIds", n, false);
  b.mask = GetI32Array(o, fn, "attentionMask", n, false, true);
  b.labels = GetI32Array(o, fn, "labels", n, !need_labels);
  b.positions = GetI32Array(o, fn, "positionIds", n, true);
  return b;
}

qn::model::OptimOptions ParseOptim(const Napi::Value& v, const std::string& fn) {
  Napi::Env env = v.Env();
  if (!v.IsObject() || v.IsArray()) Throw(env, "E_ARG", fn + ": options must be an object, got " + TypeOfValue(v));
  Napi::Object o = v.As<Napi::Object>();
  qn::model::OptimOptions r;
  r.lr = GetNumber(o, fn, "lr");
  r.weight_decay = GetNumber(o, fn, "weightDecay");
  r.beta1 = GetNumber(o, fn, "beta1");
  r.beta2 = GetNumber(o, fn, "beta2");
  r.eps = GetNumber(o, fn, "eps");
  r.max_grad_norm = static_cast<float>(GetNumber(o, fn, "maxGradNorm"));
  if (!(r.lr >= 0)) Throw(env, "E_ARG", fn + ": lr must be >= 0");
  if (!(r.weight_decay >= 0)) Throw(env, "E_ARG", fn + ": weightDecay must be >= 0");
  if (!(r.beta1 >= 0 && r.beta1 < 1) || !(r.beta2 >= 0 && r.beta2 < 1)) Throw(env, "E_ARG", fn + ": beta1 and beta2 must be in [0, 1)");
  if (!(r.eps > 0)) Throw(env, "E_ARG", fn + ": eps must be > 0");
  const std::string opt = GetString(o, fn, "optim", "adamw_32bit");
  if (opt == "adamw_32bit" || opt == "adamw_torch") {
    r.kind = qn::OptimKind::AdamW32;
  } else if (opt == "paged_adamw_32bit") {
    r.kind = qn::OptimKind::AdamW32;
    r.paged = true;
  } else if (opt == "paged_adamw_8bit") {
    r.kind = qn::OptimKind::AdamW8;
    r.paged = true;
  } else if (opt == "adamw_8bit") {
    r.kind = qn::OptimKind::AdamW8;
  } else {
    Throw(env, "E_ARG", fn + ": optim must be \"adamw_32bit\", \"paged_adamw_32bit\" or \"paged_adamw_8bit\", got \"" + opt + "\"");
  }
  return r;
}

Napi::Object LossObject(Napi::Env env, const qn::model::LossResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("lossSum", r.loss_sum);
  o.Set("tokens", static_cast<double>(r.tokens));
  return o;
}

void PutStep(Napi::Object o, const qn::model::StepResult& s) {
  o.Set("gradNorm", s.grad_norm);
  o.Set("clipped", s.clipped);
  o.Set("nonFinite", s.nonfinite);
  o.Set("skipped", s.skipped);
}

Napi::Array ShapeArray(Napi::Env env, const qn::Shape& s) {
  Napi::Array a = Napi::Array::New(env, s.size());
  for (size_t i = 0; i < s.size(); ++i) a.Set(static_cast<uint32_t>(i), static_cast<double>(s[i]));
  return a;
}

Napi::Float32Array ToFloat32Array(Napi::Env env, const float* data, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), data, n * 4);
  return a;
}

}  // namespace

void ModelWrap::Shared::refresh(const qn::model::Qwen2Model& model) {
  qn::model::MemoryReport r = model.memory_report();
  std::lock_guard<std::mutex> g(mu);
  report = r;
}

Napi::Function ModelWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceAccessor<&ModelWrap::ParamCount>("paramCount"),
                         InstanceAccessor<&ModelWrap::Disposed>("disposed"),
                         InstanceMethod<&ModelWrap::ExpectedWeights>("expectedWeights"),
                         InstanceMethod<&ModelWrap::SetWeight>("setWeight"),
                         InstanceMethod<&ModelWrap::SetNf4Weight>("setNf4Weight"),
                         InstanceMethod<&ModelWrap::FinalizeLoad>("finalizeLoad"),
                         InstanceMethod<&ModelWrap::InitLora>("initLora"),
                         InstanceMethod<&ModelWrap::SetLora>("setLora"),
                         InstanceMethod<&ModelWrap::GetLora>("getLora"),
                         InstanceMethod<&ModelWrap::LoraLayout>("loraLayout"),
                         InstanceMethod<&ModelWrap::GetGrads>("getGrads"),
                         InstanceMethod<&ModelWrap::ZeroGrad>("zeroGrad"),
                         InstanceMethod<&ModelWrap::Accumulate>("accumulate"),
                         InstanceMethod<&ModelWrap::OptimizerStep>("optimizerStep"),
                         InstanceMethod<&ModelWrap::TrainStep>("trainStep"),
                         InstanceMethod<&ModelWrap::EvalLoss>("evalLoss"),
                         InstanceMethod<&ModelWrap::Logits>("logits"),
                         InstanceMethod<&ModelWrap::GetOptimizerState>("getOptimizerState"),
                         InstanceMethod<&ModelWrap::SetOptimizerState>("setOptimizerState"),
                         InstanceMethod<&ModelWrap::MemoryReport>("memoryReport"),
                         InstanceMethod<&ModelWrap::Dispose>("dispose"),
                     });
}

// new Model(session, options)
ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
  Napi::Env env = info.Env();
  const std::string fn = "Model";
  if (info.Length() < 1) Throw(env, "E_ARG", "Model: expected (session, options)");
  session_ = SessionWrap::FromValue(env, info[0], "Model");
  session_->Context(env);  // E_DISPOSED first
  Napi::Object o = RequireObject(info, 1, "Model", "options");
  qn::model::ModelConfig c;
  const int64_t big = int64_t(1) << 31;
  c.hidden = GetInt(o, fn, "hiddenSize", 1, big);
  c.intermediate = GetInt(o, fn, "intermediateSize", 1, big);
  c.layers = GetInt(o, fn, "numLayers", 1, 4096);
  c.heads = GetInt(o, fn, "numHeads", 1, 4096);
  c.kv_heads = GetInt(o, fn, "numKvHeads", 1, 4096);
  c.head_dim = GetInt(o, fn, "headDim", 1, 65536);
  c.vocab = GetInt(o, fn, "vocabSize", 1, big);
  c.rms_eps = static_cast<float>(GetNumber(o, fn, "rmsNormEps"));
  c.rope_theta = GetNumber(o, fn, "ropeTheta");
  c.tie_embeddings = GetBool(o, fn, "tieWordEmbeddings");
  c.qkv_bias = GetBool(o, fn, "qkvBias");
  const std::string cd = GetString(o, fn, "computeDtype");
  if (cd == "f32" || cd == "float32") c.compute = qn::DType::F32;
  else if (cd == "bf16" || cd == "bfloat16") c.compute = qn::DType::BF16;
  else Throw(env, "E_ARG", "Model: option 'computeDtype' must be \"f32\" or \"bf16\", got \"" + cd + "\"");
  const std::string q = GetString(o, fn, "quantization");
  if (q != "nf4" && q != "none") Throw(env, "E_ARG", "Model: option 'quantization' must be \"nf4\" or \"none\", got \"" + q + "\"");
  c.nf4 = q == "nf4";
  const int64_t bs64 = 64;
  c.blocksize = static_cast<int>(GetInt(o, fn, "quantBlocksize", 32, 4096, &bs64));
  const bool yes = true, no = false;
  c.double_quant = GetBool(o, fn, "doubleQuant", &yes);
  c.grad_checkpointing = GetBool(o, fn, "gradientCheckpointing", &no);
  Napi::Object lo = GetObject(o, fn, "lora");
  const std::string lf = "Model: lora";
  c.lora.r = GetInt(lo, lf, "r", 1, 4096);
  c.lora.alpha = GetNumber(lo, lf, "alpha");
  const double zero = 0;
  c.lora.dropout = static_cast<float>(GetNumber(lo, lf, "dropout", &zero));
  c.lora.rslora = GetBool(lo, lf, "useRslora", &no);
  const int64_t seed0 = 0;
  c.lora.seed = static_cast<uint64_t>(GetInt(lo, lf, "seed", 0, (int64_t(1) << 53), &seed0));
  Napi::Value tv = lo.Get("targets");
  if (!tv.IsArray()) BadKey(env, lf, "targets", "an array of module names", tv);
  Napi::Array ta = tv.As<Napi::Array>();
  c.lora.targets = 0;
  for (uint32_t i = 0; i < ta.Length(); ++i) {
    Napi::Value e = ta.Get(i);
    int m = -1;
    if (!e.IsString() || !qn::model::parse_module(e.As<Napi::String>().Utf8Value(), &m))
      Throw(env, "E_ARG", "Model: lora.targets[" + std::to_string(i) + "] must be one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
    c.lora.targets |= 1u << m;
  }
  auto ctx = session_->Context(env);  // again: an option getter may have disposed the session
  shared_ = std::make_shared<Shared>();
  shared_->model = Guard(env, [&] { return std::make_shared<Qwen2Model>(ctx, c); });
  shared_->refresh(*shared_->model);
  param_count_ = shared_->model->param_count();
  session_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
  SetTypeTag(info.This().As<Napi::Object>(), kModelTag);
}

ModelWrap* ModelWrap::Unwrap(Napi::Object o) {
  RequireTypeTag(o, kModelTag, "Model");
  return Napi::ObjectWrap<ModelWrap>::Unwrap(o);
}

std::shared_ptr<ModelWrap::Shared> ModelWrap::Live(Napi::Env env, const char* fn) {
  if (!shared_ || !shared_->model) Throw(env, "E_DISPOSED", std::string("Model.") + fn + ": the model was disposed");
  session_->Context(env);  // E_DISPOSED when the session is gone
  return shared_;
}

Napi::Value ModelWrap::Submit(Napi::Env env, const char* fn, std::function<void(Qwen2Model&)> work,
                              std::function<Napi::Value(Napi::Env)> done) {
  auto sh = Live(env, fn);
  auto ctx = session_->Context(env);
  Guard(env, [&] {
    ctx->check_usable();
    return 0;
  });
  std::shared_ptr<Qwen2Model> model = sh->model;  // queued work keeps the model alive past dispose()
  return session_->Queue(env).Submit(
      env,
      [sh, model, work = std::move(work)] {
        try {
          work(*model);
        } catch (...) {
          sh->refresh(*model);
          throw;
        }
        sh->refresh(*model);
      },
      std::move(done));
}

Napi::Value ModelWrap::ParamCount(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(param_count_)); }

Napi::Value ModelWrap::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !shared_ || !shared_->model);
}

Napi::Value ModelWrap::ExpectedWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto sh = Live(env, "expectedWeights");
  std::vector<qn::model::WeightSpec> w = sh->model->expected_weights();
  Napi::Array out = Napi::Array::New(env, w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", w[i].name);
    o.Set("shape", ShapeArray(env, w[i].shape));
    o.Set("linear", w[i].linear);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// setWeight(hfName, dtype, shape, data: Uint8Array)
Napi::Value ModelWrap::SetWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "setWeight");
  const std::string name = RequireString(info, 0, "Model.setWeight", "hfName");
  const qn::DType dt = RequireDType(info, 1, "Model.setWeight");
  if (dt != qn::DType::F32 && dt != qn::DType::BF16 && dt != qn::DType::F16)
    Throw(env, "E_DTYPE", "Model.setWeight: " + name + ": dtype " + qn::dtype_name(dt) + " is not supported (f32, bf16, f16)");
  const qn::Shape shape = RequireShape(info, 2, "Model.setWeight");
  if (info.Length() < 4 || !info[3].IsTypedArray())
    Throw(env, "E_ARG", "Model.setWeight: " + name + ": argument 'data' must be a Uint8Array, got " + TypeOfValue(info[3]));
  const HostArray arr = TypedArrayBytes(info[3]);  // after the shape's getters; copied before any JS runs
  const size_t want = static_cast<size_t>(qn::shape_numel(shape)) * qn::dtype_size(dt);
  if (arr.bytes != want)
    Throw(env, "E_SHAPE", "Model.setWeight: " + name + ": " + std::to_string(arr.bytes) + " bytes for " +
                              qn::dtype_name(dt) + " " + qn::shape_str(shape) + " (expected " + std::to_string(want) + ")");
  auto bytes = std::make_shared<std::vector<uint8_t>>(want);
  if (want) std::memcpy(bytes->data(), arr.data, want);
  return Submit(env, "setWeight", [name, dt, shape, bytes](Qwen2Model& m) { m.set_weight(name, dt, shape, bytes->data()); });
}

// setNf4Weight(hfName, parts)
Napi::Value ModelWrap::SetNf4Weight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "setNf4Weight");
  const std::string name = RequireString(info, 0, "Model.setNf4Weight", "hfName");
  Napi::Object o = RequireObject(info, 1, "Model.setNf4Weight", "parts");
  const std::string fn = "Model.setNf4Weight(" + name + ")";
  qn::model::Nf4HostParts p;
  Napi::Value sv = o.Get("shape");
  if (!sv.IsArray()) BadKey(env, fn, "shape", "an array", sv);
  Napi::Array sa = sv.As<Napi::Array>();
  for (uint32_t i = 0; i < sa.Length(); ++i) {
    Napi::Value e = sa.Get(i);
    const double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 9.007199254740991e15) || std::floor(d) != d) BadKey(env, fn, "shape", "an array of non-negative integers", sv);
    p.shape.push_back(static_cast<int64_t>(d));
  }
  p.blocksize = static_cast<int>(GetInt(o, fn, "blocksize", 32, 4096));
  Napi::Value codes = o.Get("codes");
  if (!IsTyped(codes, napi_uint8_array)) BadKey(env, fn, "codes", "a Uint8Array", codes);
  p.codes = CopyTyped<uint8_t>(codes);
  // double quant: absmaxQ (u8 codes; or a Uint8Array `absmax`) + nestedAbsmax/nestedMap/nestedOffset;
  // plain: absmax f32 (ts/nf4 Nf4HostWeight field names)
  Napi::Value am = o.Get("absmaxQ");
  if (am.IsUndefined() || am.IsNull()) am = o.Get("absmax");
  if (IsTyped(am, napi_float32_array)) {
    p.nested = false;
    p.absmax = CopyTyped<float>(am);
  } else if (IsTyped(am, napi_uint8_array)) {
    p.nested = true;
    p.absmax_q = CopyTyped<uint8_t>(am);
    Napi::Value na = o.Get("nestedAbsmax"), nm = o.Get("nestedMap");
    if (!IsTyped(na, napi_float32_array)) BadKey(env, fn, "nestedAbsmax", "a Float32Array (double quant)", na);
    if (!IsTyped(nm, napi_float32_array)) BadKey(env, fn, "nestedMap", "a Float32Array (double quant)", nm);
    p.nested_absmax = CopyTyped<float>(na);
    p.nested_map = CopyTyped<float>(nm);
    const double z = 0;
    p.nested_offset = static_cast<float>(GetNumber(o, fn, "nestedOffset", &z));
    const int64_t nbs = 256;
    p.nested_blocksize = static_cast<int>(GetInt(o, fn, "nestedBlocksize", 1, 1 << 20, &nbs));
  } else {
    BadKey(env, fn, "absmax", "a Float32Array, or (double quant) absmaxQ as a Uint8Array", am);
  }
  Napi::Value qm = o.Get("quantMap");
  if (!qm.IsUndefined() && !qm.IsNull()) {
    if (!IsTyped(qm, napi_float32_array)) BadKey(env, fn, "quantMap", "a Float32Array", qm);
    p.quant_map = CopyTyped<float>(qm);
  }
  auto parts = std::make_shared<qn::model::Nf4HostParts>(std::move(p));
  return Submit(env, "setNf4Weight", [name, parts](Qwen2Model& m) { m.set_nf4_weight(name, *parts); });
}

Napi::Value ModelWrap::FinalizeLoad(const Napi::CallbackInfo& info) {
  return Submit(info.Env(), "finalizeLoad", [](Qwen2Model& m) { m.finalize_load(); });
}

Napi::Value ModelWrap::InitLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "initLora");
  const uint64_t seed = static_cast<uint64_t>(RequireInteger(info, 0, "Model.initLora", "seed", 0, int64_t(1) << 53));
  return Submit(env, "initLora", [seed](Qwen2Model& m) { m.init_lora(seed); });
}

// setLora(peftKey, Float32Array)
Napi::Value ModelWrap::SetLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto sh = Live(env, "setLora");
  const std::string key = RequireString(info, 0, "Model.setLora", "peftKey");
  if (info.Length() < 2 || !IsTyped(info[1], napi_float32_array))
    Throw(env, "E_ARG", "Model.setLora: " + key + ": argument 'data' must be a Float32Array, got " + TypeOfValue(info[1]));
  // validate the key and size now, synchronously
  const auto& layout = sh->model->lora_layout();
  const qn::model::LoraEntry* entry = nullptr;
  for (const auto& e : layout)
    if (e.key == key) entry = &e;
  if (!entry) Throw(env, "E_ARG", "Model.setLora: unknown LoRA key \"" + key + "\" (not a target of this model)");
  auto data = std::make_shared<std::vector<float>>(CopyTyped<float>(info[1]));
  if (static_cast<int64_t>(data->size()) != qn::shape_numel(entry->shape))
    Throw(env, "E_SHAPE", "Model.setLora: " + key + " needs " + std::to_string(qn::shape_numel(entry->shape)) + " values " +
                              qn::shape_str(entry->shape) + ", got " + std::to_string(data->size()));
  return Submit(env, "setLora", [key, data](Qwen2Model& m) { m.set_lora(key, data->data(), static_cast<int64_t>(data->size())); });
}

Napi::Value ModelWrap::GetLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto sh = Live(env, "getLora");
  auto host = std::make_shared<std::vector<float>>();
  auto layout = std::make_shared<std::vector<qn::model::LoraEntry>>(sh->model->lora_layout());
  return Submit(
      env, "getLora", [host](Qwen2Model& m) { *host = m.get_params(); },
      [host, layout](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        for (const auto& e : *layout) {
          Napi::Object t = Napi::Object::New(env);
          t.Set("shape", ShapeArray(env, e.shape));
          t.Set("data", ToFloat32Array(env, host->data() + e.offset, static_cast<size_t>(qn::shape_numel(e.shape))));
          out.Set(e.key, t);
        }
        return out;
      });
}

Napi::Value ModelWrap::LoraLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto sh = Live(env, "loraLayout");
  const auto& layout = sh->model->lora_layout();
  Napi::Array out = Napi::Array::New(env, layout.size());
  for (size_t i = 0; i < layout.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("key", layout[i].key);
    o.Set("shape", ShapeArray(env, layout[i].shape));
    o.Set("offset", static_cast<double>(layout[i].offset));
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

Napi::Value ModelWrap::GetGrads(const Napi::CallbackInfo& info) {
  auto host = std::make_shared<std::vector<float>>();
  return Submit(
      info.Env(), "getGrads", [host](Qwen2Model& m) { *host = m.get_grads(); },
      [host](Napi::Env env) -> Napi::Value { return ToFloat32Array(env, host->data(), host->size()); });
}

Napi::Value ModelWrap::ZeroGrad(const Napi::CallbackInfo& info) {
  return Submit(info.Env(), "zeroGrad", [](Qwen2Model& m) { m.zero_grad(); });
}

static float RequireScale(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  const double s = RequireNumber(info, i, fn, "gradScale");
  if (!std::isfinite(s)) Throw(info.Env(), "E_ARG", std::string(fn) + ": gradScale must be finite");
  return static_cast<float>(s);
}

// accumulate(batch, gradScale) -> {lossSum, tokens}
Napi::Value ModelWrap::Accumulate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "accumulate");
  auto b = std::make_shared<HostBatch>(ParseBatch(info[0], "Model.accumulate", true));
  const float scale = RequireScale(info, 1, "Model.accumulate");
  auto res = std::make_shared<qn::model::LossResult>();
  return Submit(
      env, "accumulate", [b, scale, res](Qwen2Model& m) { *res = m.accumulate(*b, scale); },
      [res](Napi::Env env) -> Napi::Value { return LossObject(env, *res); });
}

Napi::Value ModelWrap::OptimizerStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "optimizerStep");
  const auto opt = ParseOptim(info.Length() ? info[0] : env.Undefined(), "Model.optimizerStep");
  auto res = std::make_shared<qn::model::StepResult>();
  return Submit(
      env, "optimizerStep", [opt, res](Qwen2Model& m) { *res = m.optimizer_step(opt); },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        PutStep(o, *res);
        return o;
      });
}

// Sums the gradient buffer and the loss scalars over the MPI ranks (qn/dist.h). CPU: in place.
// CUDA: NCCL on the session stream when every rank has it, else staged through host memory.
static void AllreduceGrads(Qwen2Model& m, qn::model::LossResult* loss) {
  const qn::Tensor& g = m.grads();
  if (g.device().type == qn::DeviceType::CPU) {
    qn::dist::allreduce_sum_f32(g.data<float>(), g.numel(), "gradient all-reduce");
  } else {
    g.ctx().synchronize();  // the backward is done and the rank's device is current on this thread
    if (qn::dist::nccl_allreduce_sum_f32(g.data<float>(), g.numel(), g.ctx().stream(), "gradient all-reduce (NCCL)")) {
      qn::dist::guarded("gradient all-reduce (NCCL) wait", [&g] { g.ctx().synchronize(); });
    } else {
      std::vector<float> host(static_cast<size_t>(g.numel()));
      g.ctx().copy_to_host(host.data(), g.raw(), g.nbytes());
      qn::dist::allreduce_sum_f32(host.data(), g.numel(), "gradient all-reduce");
      g.ctx().copy_from_host(g.raw(), host.data(), g.nbytes());
    }
  }
  double s[2] = {loss->loss_sum, static_cast<double>(loss->tokens)};
  qn::dist::allreduce_sum_f64(s, 2, "loss all-reduce");
  loss->loss_sum = s[0];
  loss->tokens = static_cast<int64_t>(s[1]);
}

// trainStep(microBatches[], gradScale, optimOptions): zeroGrad + accumulate all + optimizerStep.
// With a 4th argument {allreduce: true} the gradients are summed across MPI ranks first; then
// microBatches may be empty (a rank whose shard ran out at the end of an epoch, see
// ts/data/sampler.ts): it contributes zero gradients and still joins the all-reduce and the
// update, so the ranks stay in lockstep.
Napi::Value ModelWrap::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "trainStep");
  if (info.Length() < 1 || !info[0].IsArray())
    Throw(env, "E_ARG", "Model.trainStep: argument 'microBatches' must be an array, got " + TypeOfValue(info[0]));
  Napi::Array arr = info[0].As<Napi::Array>();
  // 4th argument {allreduce: true}: data parallel. The gradient buffer (one contiguous f32
  // buffer) and the loss sum / token count are summed across MPI ranks between the last
  // accumulate and the optimizer step, so the grad norm and the update see the global gradient.
  const bool allreduce = info.Length() > 3 && info[3].IsObject() && info[3].As<Napi::Object>().Get("allreduce").ToBoolean().Value();
  if (arr.Length() == 0 && !allreduce)
    Throw(env, "E_ARG", "Model.trainStep: microBatches is empty (only a data-parallel step, {allreduce: true}, may have no batches on a rank)");
  if (allreduce && !qn::dist::info().active)
    Throw(env, "E_ARG", "Model.trainStep: {allreduce: true} needs data parallel started (dist.init() under mpirun) before the step");
  auto batches = std::make_shared<std::vector<HostBatch>>();
  for (uint32_t i = 0; i < arr.Length(); ++i)
    batches->push_back(ParseBatch(arr.Get(i), "Model.trainStep(microBatches[" + std::to_string(i) + "])", true));
  const float scale = RequireScale(info, 1, "Model.trainStep");
  const auto opt = ParseOptim(info.Length() > 2 ? info[2] : env.Undefined(), "Model.trainStep");
  struct Out {
    qn::model::LossResult loss;
    qn::model::StepResult step;
  };
  auto res = std::make_shared<Out>();
  return Submit(
      env, "trainStep",
      [batches, scale, opt, res, allreduce](Qwen2Model& m) {
        m.zero_grad();
        for (const HostBatch& b : *batches) {
          qn::model::LossResult r = m.accumulate(b, scale);
          res->loss.loss_sum += r.loss_sum;
          res->loss.tokens += r.tokens;
        }
        if (allreduce) AllreduceGrads(m, &res->loss);
        res->step = m.optimizer_step(opt);
      },
      [res](Napi::Env env) -> Napi::Value {
        Napi::Object o = LossObject(env, res->loss);
        PutStep(o, res->step);
        return o;
      });
}

Napi::Value ModelWrap::EvalLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "evalLoss");
  auto b = std::make_shared<HostBatch>(ParseBatch(info[0], "Model.evalLoss", true));
  auto res = std::make_shared<qn::model::LossResult>();
  return Submit(
      env, "evalLoss", [b, res](Qwen2Model& m) { *res = m.eval_loss(*b); },
      [res](Napi::Env env) -> Napi::Value { return LossObject(env, *res); });
}

Napi::Value ModelWrap::Logits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "logits");
  auto b = std::make_shared<HostBatch>(ParseBatch(info[0], "Model.logits", false));
  auto sh = Live(env, "logits");  // after the batch's getters (which may dispose the model)
  const double n = static_cast<double>(b->batch) * b->seq * sh->model->config().vocab;
  if (n > 1.5e9 / 4) Throw(env, "E_ARG", "Model.logits: " + std::to_string(n) + " logits is too many for one host array (parity tests only)");
  auto out = std::make_shared<std::vector<float>>();
  return Submit(
      env, "logits", [b, out](Qwen2Model& m) { *out = m.logits(*b); },
      [out](Napi::Env env) -> Napi::Value { return ToFloat32Array(env, out->data(), out->size()); });
}

// getOptimizerState() -> {step, optim, tensors: {m, v, [absmax_m, absmax_v]}}
Napi::Value ModelWrap::GetOptimizerState(const Napi::CallbackInfo& info) {
  struct Out {
    int64_t step = 0;
    qn::OptimKind kind = qn::OptimKind::AdamW32;
    std::map<std::string, std::vector<uint8_t>> tensors;
  };
  auto out = std::make_shared<Out>();
  return Submit(
      info.Env(), "getOptimizerState",
      [out](Qwen2Model& m) {
        out->step = m.optimizer_step_count();
        out->tensors = m.get_optimizer_state(&out->kind);
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("step", static_cast<double>(out->step));
        if (!out->tensors.empty()) o.Set("optim", qn::optim_kind_name(out->kind));
        Napi::Object t = Napi::Object::New(env);
        for (auto& kv : out->tensors) {
          Napi::Uint8Array a = Napi::Uint8Array::New(env, kv.second.size());
          if (!kv.second.empty()) std::memcpy(a.Data(), kv.second.data(), kv.second.size());
          t.Set(kv.first, a);
        }
        o.Set("tensors", t);
        return o;
      });
}

// setOptimizerState({step, tensors, optim?})
Napi::Value ModelWrap::SetOptimizerState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Live(env, "setOptimizerState");
  const std::string fn = "Model.setOptimizerState";
  Napi::Object o = RequireObject(info, 0, fn.c_str(), "state");
  const int64_t step = GetInt(o, fn, "step", 0, int64_t(1) << 53);
  Napi::Object t = GetObject(o, fn, "tensors");
  auto tensors = std::make_shared<std::map<std::string, std::vector<uint8_t>>>();
  Napi::Array keys = t.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    const std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
    Napi::Value v = t.Get(k);
    if (!IsTyped(v, napi_uint8_array)) BadKey(env, fn, ("tensors." + k).c_str(), "a Uint8Array", v);
    (*tensors)[k] = CopyTyped<uint8_t>(v);
  }
  qn::OptimKind kind = qn::OptimKind::AdamW32;
  Napi::Value ov = o.Get("optim");
  auto sh = Live(env, "setOptimizerState");  // after the getters (which may dispose the model)
  const int64_t n = sh->model->param_count();
  if (ov.IsString()) {
    std::string s = ov.As<Napi::String>().Utf8Value();
    if (s.rfind("paged_", 0) == 0) s = s.substr(6);
    if (!qn::parse_optim_kind(s, &kind)) Throw(env, "E_ARG", fn + ": unknown optim \"" + s + "\"");
  } else if (tensors->count("m") && n > 0 && static_cast<int64_t>((*tensors)["m"].size()) == n) {
    kind = qn::OptimKind::AdamW8;  // one byte per parameter (f32 state has 4)
  }
  if (tensors->empty()) {  // {step: 0, tensors: {}}: a fresh optimizer
    if (step != 0) Throw(env, "E_ARG", fn + ": tensors are missing (only step 0 may come without a state)");
    return Submit(env, "setOptimizerState", [](Qwen2Model& m) { m.reset_optimizer(); });
  }
  return Submit(env, "setOptimizerState", [step, kind, tensors](Qwen2Model& m) { m.set_optimizer_state(step, kind, *tensors); });
}

Napi::Value ModelWrap::MemoryReport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto sh = Live(env, "memoryReport");
  qn::model::MemoryReport r;
  {
    std::lock_guard<std::mutex> g(sh->mu);
    r = sh->report;
  }
  r.peak = qn::memory_stats(session_->Context(env)->device()).peak;
  Napi::Object o = Napi::Object::New(env);
  o.Set("weights", static_cast<double>(r.weights));
  o.Set("adapters", static_cast<double>(r.adapters));
  o.Set("optimizer", static_cast<double>(r.optimizer));
  o.Set("activations", static_cast<double>(r.activations));
  o.Set("peak", static_cast<double>(r.peak));
  return o;
}

Napi::Value ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  // Queued work keeps its own reference; memory is freed when the last queued call finished.
  if (shared_) {
    std::shared_ptr<Qwen2Model> m;
    {
      std::lock_guard<std::mutex> g(shared_->mu);
      m.swap(shared_->model);
    }
    shared_.reset();
  }
  return info.Env().Undefined();
}

}  // namespace qnb

namespace qnb {

void RegisterModel(Napi::Env env, Napi::Object exports) { exports.Set("Model", ModelWrap::Define(env)); }

}  // namespace qnb
