// Per-environment state of the addon (worker threads may create several Node environments).
#pragma once
#include <napi.h>

namespace qnb {

struct InstanceData {
  Napi::FunctionReference error_class;
  Napi::FunctionReference tensor_class;
  Napi::FunctionReference session_class;
};

InstanceData& Instance(Napi::Env env);

}  // namespace qnb
