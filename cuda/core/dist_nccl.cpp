// NCCL all-reduce for data parallel on GPUs, loaded at run time (dlopen of libnccl.so.2, or
// $QN_NCCL_LIB) like cuBLASLt, so the addon loads and runs without NCCL. The communicator is made
// on first use: every rank says whether it could load NCCL (an MPI sum, so all ranks take the same
// path), rank 0 makes the unique id, MPI broadcasts it, ncclCommInitRank joins. The caller must
// have made the rank's device current on this thread (Context::synchronize does).
// Declarations are written out here (NCCL 2.x C ABI: ncclUniqueId is 128 bytes, ncclFloat32 = 7,
// ncclSum = 0, ncclSuccess = 0), so no NCCL header is needed to build.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "qn/dist.h"
#include "qn/error.h"

namespace qn {
namespace dist {
namespace {

struct NcclId {
  char internal[128];
};
using Comm = void*;

struct Nccl {
  int (*GetUniqueId)(NcclId*) = nullptr;
  int (*CommInitRank)(Comm*, int, NcclId, int) = nullptr;
  int (*AllReduce)(const void*, void*, size_t, int, int, Comm, void*) = nullptr;
  const char* (*GetErrorString)(int) = nullptr;
  Comm comm = nullptr;
  bool decided = false, use = false;
  std::string why;
};

Nccl g_nccl;
std::mutex g_nccl_mu;
constexpr int kFloat32 = 7, kSum = 0;

bool load(Nccl* n) {
  const char* env = std::getenv("QN_NCCL_LIB");
  void* lib = dlopen(env ? env : "libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    n->why = std::string("libnccl not loadable: ") + dlerror();
    return false;
  }
  n->GetUniqueId = reinterpret_cast<decltype(n->GetUniqueId)>(dlsym(lib, "ncclGetUniqueId"));
  n->CommInitRank = reinterpret_cast<decltype(n->CommInitRank)>(dlsym(lib, "ncclCommInitRank"));
  n->AllReduce = reinterpret_cast<decltype(n->AllReduce)>(dlsym(lib, "ncclAllReduce"));
  n->GetErrorString = reinterpret_cast<decltype(n->GetErrorString)>(dlsym(lib, "ncclGetErrorString"));
  if (!n->GetUniqueId || !n->CommInitRank || !n->AllReduce || !n->GetErrorString) {
    n->why = "libnccl lacks ncclGetUniqueId/ncclCommInitRank/ncclAllReduce/ncclGetErrorString";
    return false;
  }
  return true;
}

void check(int rc, const char* fn) {
  if (rc != 0) fail(ErrorCode::Cuda, std::string(fn) + " failed: " + (g_nccl.GetErrorString ? g_nccl.GetErrorString(rc) : "?") + " (code " + std::to_string(rc) + ")");
}

}  // namespace

bool nccl_allreduce_sum_f32(float* device_data, int64_t n, void* stream, const char* what) {
  std::lock_guard<std::mutex> lk(g_nccl_mu);
  if (!g_nccl.decided) {
    const bool mine = std::getenv("QN_DIST_NO_NCCL") == nullptr && load(&g_nccl);
    double ok = mine ? 1.0 : 0.0;
    allreduce_sum_f64(&ok, 1, "NCCL availability");
    g_nccl.decided = true;
    g_nccl.use = ok == static_cast<double>(info().world_size);
    if (g_nccl.use) {
      NcclId id;
      std::memset(&id, 0, sizeof id);
      if (info().rank == 0) check(g_nccl.GetUniqueId(&id), "ncclGetUniqueId");
      broadcast(&id, sizeof id, 0, "NCCL unique id");
      guarded("ncclCommInitRank", [&] { check(g_nccl.CommInitRank(&g_nccl.comm, info().world_size, id, info().rank), "ncclCommInitRank"); });
    } else if (info().rank == 0) {
      std::fprintf(stderr, "qlora-native: NCCL is not used on every rank (%s); gradients are all-reduced through host memory over MPI\n",
                   mine ? "another rank could not load it" : g_nccl.why.c_str());
    }
  }
  if (!g_nccl.use) return false;
  check(g_nccl.AllReduce(device_data, device_data, static_cast<size_t>(n), kFloat32, kSum, g_nccl.comm, stream), what);
  return true;
}

}  // namespace dist
}  // namespace qn
