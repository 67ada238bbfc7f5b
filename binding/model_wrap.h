// JS class Model (native part): the Qwen2 graph of cuda/model on one session. Argument checks run
// synchronously (QloraError E_ARG / E_SHAPE / E_DTYPE ...); heavy calls run on the session's
// ordered queue and return promises. Typed in ts/model/native-model.ts.
#pragma once
#include <napi.h>
#include <memory>
#include <mutex>
#include "model/qwen2_model.h"

namespace qnb {

class SessionWrap;

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // Hides ObjectWrap::Unwrap (node-addon-api calls T::Unwrap for `this` of every method and
  // accessor): TypeError E_ARG unless o is a Model the addon made (native_class.h).
  static ModelWrap* Unwrap(Napi::Object o);
  explicit ModelWrap(const Napi::CallbackInfo& info);

 private:
  // Snapshot of the memory report, refreshed by each queued call (memoryReport() is synchronous
  // and must not touch the model while the queue thread runs it).
  struct Shared {
    std::shared_ptr<qn::model::Qwen2Model> model;
    std::mutex mu;
    qn::model::MemoryReport report;
    void refresh(const qn::model::Qwen2Model& model);
  };

  std::shared_ptr<Shared> Live(Napi::Env env, const char* fn);
  Napi::Value Submit(Napi::Env env, const char* fn, std::function<void(qn::model::Qwen2Model&)> work,
                     std::function<Napi::Value(Napi::Env)> done = nullptr);

  Napi::Value ParamCount(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value ExpectedWeights(const Napi::CallbackInfo& info);
  Napi::Value SetWeight(const Napi::CallbackInfo& info);
  Napi::Value SetNf4Weight(const Napi::CallbackInfo& info);
  Napi::Value FinalizeLoad(const Napi::CallbackInfo& info);
  Napi::Value InitLora(const Napi::CallbackInfo& info);
  Napi::Value SetLora(const Napi::CallbackInfo& info);
  Napi::Value GetLora(const Napi::CallbackInfo& info);
  Napi::Value LoraLayout(const Napi::CallbackInfo& info);
  Napi::Value GetGrads(const Napi::CallbackInfo& info);
  Napi::Value ZeroGrad(const Napi::CallbackInfo& info);
  Napi::Value Accumulate(const Napi::CallbackInfo& info);
  Napi::Value OptimizerStep(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value EvalLoss(const Napi::CallbackInfo& info);
  Napi::Value Logits(const Napi::CallbackInfo& info);
  Napi::Value GetOptimizerState(const Napi::CallbackInfo& info);
  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info);
  Napi::Value MemoryReport(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<Shared> shared_;
  SessionWrap* session_ = nullptr;
  Napi::ObjectReference session_ref_;  // keeps the session (and its queue) alive
  int64_t param_count_ = 0;
};

}  // namespace qnb
