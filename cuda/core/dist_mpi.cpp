// MPI collectives loaded at run time (see qn/dist.h). Open MPI ABI only.
#include "qn/dist.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "qn/error.h"

namespace qn {
namespace dist {
namespace {

using Handle = void*;  // MPI_Comm / MPI_Datatype / MPI_Op are pointers in Open MPI
#define QN_MPI_IN_PLACE reinterpret_cast<void*>(1)
constexpr int kThreadSerialized = 2;

struct Api {
  int (*Init_thread)(int*, char***, int, int*) = nullptr;
  int (*Initialized)(int*) = nullptr;
  int (*Finalized)(int*) = nullptr;
  int (*Finalize)() = nullptr;
  int (*Comm_rank)(Handle, int*) = nullptr;
  int (*Comm_size)(Handle, int*) = nullptr;
  int (*Allreduce)(const void*, void*, int, Handle, Handle, Handle) = nullptr;
  int (*Bcast)(void*, int, Handle, int, Handle) = nullptr;
  int (*Barrier)(Handle) = nullptr;
  int (*Abort)(Handle, int) = nullptr;
  Handle comm_world = nullptr, t_float = nullptr, t_double = nullptr, t_byte = nullptr, op_sum = nullptr;
};

Api g_api;
Info g_info;
std::mutex g_init_mu;

// ---- watchdog: one thread, one collective in flight at a time (calls are serialized) ----
// heap objects that are never destroyed: a static condition_variable's destructor at exit would
// wait for the (detached) watchdog thread blocked on it
std::mutex& g_wd_mu = *new std::mutex;
std::condition_variable& g_wd_cv = *new std::condition_variable;
bool g_wd_busy = false;
uint64_t g_wd_seq = 0;
const char* g_wd_what = "";
std::chrono::steady_clock::time_point g_wd_deadline;
std::thread* g_wd_thread = nullptr;

void watchdog_loop() {
  std::unique_lock<std::mutex> lk(g_wd_mu);
  for (;;) {
    if (!g_wd_busy) {
      g_wd_cv.wait(lk);
      continue;
    }
    const uint64_t seq = g_wd_seq;
    if (g_wd_cv.wait_until(lk, g_wd_deadline, [&] { return !g_wd_busy || g_wd_seq != seq; })) continue;
    // timed out
    char msg[640];
    char who[64] = "another rank";
    if (g_info.world_size == 2) std::snprintf(who, sizeof who, "rank %d", 1 - g_info.rank);
    std::snprintf(msg, sizeof msg,
                  "qlora-native: rank %d of %d: collective '%s' (#%llu) did not complete within %.0f s: %s "
                  "died or hangs; aborting the job (QN_DIST_TIMEOUT_S sets the limit)",
                  g_info.rank, g_info.world_size, g_wd_what, static_cast<unsigned long long>(seq), timeout_seconds(), who);
    lk.unlock();
    abort_job(msg, 3);
  }
}

struct Guard {
  explicit Guard(const char* what) {
    std::lock_guard<std::mutex> lk(g_wd_mu);
    g_wd_busy = true;
    ++g_wd_seq;
    g_wd_what = what;
    g_wd_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds() * 1000));
    g_wd_cv.notify_all();
  }
  ~Guard() {
    std::lock_guard<std::mutex> lk(g_wd_mu);
    g_wd_busy = false;
    g_wd_cv.notify_all();
  }
};

template <typename F>
bool bind(void* lib, const char* name, F* out, std::string* missing) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out) *missing += std::string(missing->empty() ? "" : ", ") + name;
  return *out != nullptr;
}

void check(int rc, const char* fn, const char* what) {
  if (rc != 0) fail(ErrorCode::Internal, std::string("MPI_") + fn + " failed (code " + std::to_string(rc) + ") in " + what);
}

void require_active(const char* what) {
  if (!g_info.active) fail(ErrorCode::NoDevice, std::string("dist: ") + what + ": MPI is not initialized (call dist init first)");
}

}  // namespace

double timeout_seconds() {
  static const double t = [] {
    const char* s = std::getenv("QN_DIST_TIMEOUT_S");
    const double v = s ? std::atof(s) : 0.0;
    return v > 0 ? v : 300.0;
  }();
  return t;
}

const Info& info() { return g_info; }

const Info& init() {
  std::lock_guard<std::mutex> lk(g_init_mu);
  if (g_info.active) return g_info;
  std::string tried;
  void* lib = nullptr;
  std::string path;
  std::string candidates[] = {std::getenv("QN_MPI_LIB") ? std::getenv("QN_MPI_LIB") : "", "libmpi.so.40", "libmpi.so"};
  for (const std::string& c : candidates) {
    if (c.empty()) continue;
    // RTLD_GLOBAL: Open MPI's plugins (mca components) resolve libmpi/libopen-pal symbols globally.
    lib = dlopen(c.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (lib) {
      path = c;
      break;
    }
    tried += (tried.empty() ? "" : ", ") + c + " (" + dlerror() + ")";
  }
  if (!lib)
    fail(ErrorCode::NoDevice, "data parallel needs Open MPI: libmpi not found (tried " + tried +
                                  "); install openmpi-bin and libopenmpi-dev (Debian) or set QN_MPI_LIB");
  Api a;
  std::string missing;
  bind(lib, "MPI_Init_thread", &a.Init_thread, &missing);
  bind(lib, "MPI_Initialized", &a.Initialized, &missing);
  bind(lib, "MPI_Finalized", &a.Finalized, &missing);
  bind(lib, "MPI_Finalize", &a.Finalize, &missing);
  bind(lib, "MPI_Comm_rank", &a.Comm_rank, &missing);
  bind(lib, "MPI_Comm_size", &a.Comm_size, &missing);
  bind(lib, "MPI_Allreduce", &a.Allreduce, &missing);
  bind(lib, "MPI_Bcast", &a.Bcast, &missing);
  bind(lib, "MPI_Barrier", &a.Barrier, &missing);
  bind(lib, "MPI_Abort", &a.Abort, &missing);
  bind(lib, "ompi_mpi_comm_world", &a.comm_world, &missing);
  bind(lib, "ompi_mpi_float", &a.t_float, &missing);
  bind(lib, "ompi_mpi_double", &a.t_double, &missing);
  bind(lib, "ompi_mpi_byte", &a.t_byte, &missing);
  bind(lib, "ompi_mpi_op_sum", &a.op_sum, &missing);
  if (!missing.empty())
    fail(ErrorCode::NoDevice, path + " is not Open MPI (only Open MPI's ABI is supported): missing " + missing);
  int inited = 0;
  a.Initialized(&inited);
  if (!inited) {
    int provided = 0;
    check(a.Init_thread(nullptr, nullptr, kThreadSerialized, &provided), "Init_thread", "init");
    if (provided < kThreadSerialized)
      fail(ErrorCode::NoDevice, "MPI provides thread level " + std::to_string(provided) + " < MPI_THREAD_SERIALIZED");
  }
  g_api = a;
  check(a.Comm_rank(a.comm_world, &g_info.rank), "Comm_rank", "init");
  check(a.Comm_size(a.comm_world, &g_info.world_size), "Comm_size", "init");
  const char* lr = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  g_info.local_rank = lr ? std::atoi(lr) : g_info.rank;
  g_info.library = path;
  g_info.active = true;
  g_wd_thread = new std::thread(watchdog_loop);
  g_wd_thread->detach();
  return g_info;
}

namespace {
template <typename T>
void allreduce_sum(T* data, int64_t n, Handle type, const char* what) {
  require_active(what);
  Guard g(what);
  for (int64_t off = 0; off < n; off += INT_MAX / 2) {
    const int c = static_cast<int>(std::min<int64_t>(INT_MAX / 2, n - off));
    check(g_api.Allreduce(QN_MPI_IN_PLACE, data + off, c, type, g_api.op_sum, g_api.comm_world), "Allreduce", what);
  }
}
}  // namespace

void allreduce_sum_f32(float* data, int64_t n, const char* what) { allreduce_sum(data, n, g_api.t_float, what); }
void allreduce_sum_f64(double* data, int64_t n, const char* what) { allreduce_sum(data, n, g_api.t_double, what); }

void broadcast(void* data, int64_t bytes, int root, const char* what) {
  require_active(what);
  Guard g(what);
  char* p = static_cast<char*>(data);
  for (int64_t off = 0; off < bytes; off += INT_MAX / 2) {
    const int c = static_cast<int>(std::min<int64_t>(INT_MAX / 2, bytes - off));
    check(g_api.Bcast(p + off, c, g_api.t_byte, root, g_api.comm_world), "Bcast", what);
  }
}

void guarded(const char* what, const std::function<void()>& fn) {
  require_active(what);
  Guard g(what);
  fn();
}

void barrier(const char* what) {
  require_active(what);
  Guard g(what);
  check(g_api.Barrier(g_api.comm_world), "Barrier", what);
}

void abort_job(const std::string& message, int code) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  if (g_api.Abort) g_api.Abort(g_api.comm_world, code);
  std::_Exit(code);
}

void finalize() {
  std::lock_guard<std::mutex> lk(g_init_mu);
  if (!g_info.active) return;
  int fin = 0;
  g_api.Finalized(&fin);
  if (!fin) g_api.Finalize();
  g_info.active = false;
}

}  // namespace dist
}  // namespace qn
