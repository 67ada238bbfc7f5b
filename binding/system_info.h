// Registers systemInfo / thread settings / memory statistics on the addon exports.
#pragma once
#include <napi.h>

namespace qnb {
void RegisterSystemInfo(Napi::Env env, Napi::Object exports);
}
