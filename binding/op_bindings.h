// Each op family's binding file registers its functions on the `ops` object of the addon.
// Adding a family: write binding/ops_<family>.cpp with Register<Family>Ops and list it here and
// in addon.cpp.
#pragma once
#include <napi.h>

namespace qnb {

void RegisterElementwiseOps(Napi::Env env, Napi::Object ops);
void RegisterOptimOps(Napi::Env env, Napi::Object ops);
void RegisterModel(Napi::Env env, Napi::Object exports);  // class Model (binding/model_wrap.cpp)
void RegisterNf4Ops(Napi::Env env, Napi::Object ops);
void RegisterLinearOps(Napi::Env env, Napi::Object ops);
void RegisterDist(Napi::Env env, Napi::Object exports);  // `dist` (binding/dist_wrap.cpp)

}  // namespace qnb
