// MPI collectives loaded at run time (see qn/dist.h). Open MPI ABI only.
#include "qn/dist.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

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
bool g_finalized = false;  // MPI_Finalize ran: MPI cannot start again

// ---- heartbeat files: which collective each rank entered last (for the watchdog's message) ----
// Rank r keeps <dir>/rank-<r>: one fixed-size text record, rewritten in place with one pwrite (no
// fsync) as the rank enters each collective. <dir> is $QN_DIST_HEARTBEAT_DIR (else $TMPDIR, else
// /tmp) + /qn-heartbeat-<token>, the token rank 0's random number broadcast at init. Collectives
// are serialized and every rank makes them in the same order, so their numbers agree across ranks:
// when one times out, a rank whose last number is below ours never reached it. Any file error only
// switches the files off (one warning); the watchdog then says "another rank" as before.
constexpr size_t kRecord = 384;  // host <= 64, pidns <= 32, what <= 96 chars: a record always fits
constexpr char kDirPrefix[] = "qn-heartbeat-";
std::atomic<bool> g_hb_on{false};
int g_hb_fd = -1;
std::string g_hb_dir;                     // set at init, before any timeout can read it
char g_host[65] = "?", g_pidns[33] = "?";  // where this process runs (pid namespace: "pid:[N]")

struct Beat {
  bool valid = false, aborting = false;
  unsigned long long seq = 0;
  int pid = 0;
  std::string host, pidns, what;
};

void hb_warn(const std::string& why) {
  static std::atomic<bool> once{false};
  if (once.exchange(true)) return;
  std::fprintf(stderr, "qlora-native: rank %d: warning: heartbeat files off (%s); a collective timeout will not name the silent rank\n",
               g_info.rank, why.c_str());
}

std::string hb_path(const std::string& dir, int rank) { return dir + "/rank-" + std::to_string(rank); }

// aborting: this rank is ending the job (its own timeout, or a failure), so its process going away
// must not make the others name it.
void hb_write(unsigned long long seq, const char* what, bool aborting = false) {
  if (!g_hb_on.load(std::memory_order_relaxed)) return;
  char name[97];
  size_t n = 0;
  for (const char* p = what; *p && n < sizeof name - 1; ++p) name[n++] = static_cast<unsigned char>(*p) < 0x20 ? ' ' : *p;
  if (n == 0) name[n++] = '?';
  name[n] = 0;
  char rec[kRecord];
  std::memset(rec, ' ', sizeof rec);
  const int len = std::snprintf(rec, sizeof rec, "qn-heartbeat %llu rank %d pid %d host %s pidns %s state %s what %s\t%llu", seq,
                                g_info.rank, static_cast<int>(getpid()), g_host, g_pidns, aborting ? "aborting" : "entered", name, seq);
  if (len > 0 && len < static_cast<int>(kRecord)) rec[len] = ' ';  // snprintf's terminator
  rec[kRecord - 1] = '\n';
  if (pwrite(g_hb_fd, rec, kRecord, 0) != static_cast<ssize_t>(kRecord)) {
    const int e = errno;
    g_hb_on = false;
    hb_warn(hb_path(g_hb_dir, g_info.rank) + ": " + std::strerror(e));
  }
}

// A record; invalid when the file is missing or unreadable (one caught half-written is reread).
Beat hb_read(const std::string& file) {
  Beat b;
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return b;
      continue;
    }
    char rec[kRecord + 1];
    const ssize_t got = pread(fd, rec, kRecord, 0);
    close(fd);
    if (got != static_cast<ssize_t>(kRecord)) continue;
    rec[kRecord] = 0;
    unsigned long long seq = 0;
    int rank = 0, pid = 0, off = 0;
    char host[65], pidns[33], state[16];
    if (std::sscanf(rec, "qn-heartbeat %llu rank %d pid %d host %64s pidns %32s state %15s what %n", &seq, &rank, &pid, host, pidns, state, &off) != 6 ||
        off == 0)
      continue;
    const char* tab = std::strchr(rec + off, '\t');
    if (!tab || std::strtoull(tab + 1, nullptr, 10) != seq) continue;  // torn: a write in progress
    b.valid = true;
    b.aborting = std::strcmp(state, "aborting") == 0;
    b.seq = seq;
    b.pid = pid;
    b.host = host;
    b.pidns = pidns;
    b.what.assign(rec + off, static_cast<size_t>(tab - (rec + off)));
    return b;
  }
  return b;
}

// "stopped" or "exited" for a process of this node (same host name and pid namespace), else ""
// (running, or not visible from here).
const char* proc_state(const Beat& b) {
  if (b.pid <= 0 || b.host != g_host || b.pidns != g_pidns || std::strcmp(g_pidns, "?") == 0) return "";
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", b.pid);
  FILE* f = std::fopen(path, "r");
  if (!f) return "exited";
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');  // "pid (comm) S ...": comm may hold spaces and ')'
  if (!p || p[1] != ' ') return "";
  if (p[2] == 'T' || p[2] == 't') return "stopped";
  if (p[2] == 'Z' || p[2] == 'X') return "exited";
  return "";
}

std::string heartbeat_base() {
  const char* d = std::getenv("QN_DIST_HEARTBEAT_DIR");
  const char* t = std::getenv("TMPDIR");
  return d && *d ? d : t && *t ? t : "/tmp";
}

// The process that wrote a heartbeat file (only the record's head is read, so files of other
// versions of this code are recognized too).
bool hb_owner(const std::string& file, Beat* b) {
  FILE* f = std::fopen(file.c_str(), "r");
  if (!f) return false;
  char host[65], pidns[33];
  const bool ok = std::fscanf(f, "qn-heartbeat %*s rank %*d pid %d host %64s pidns %32s", &b->pid, host, pidns) == 3;
  std::fclose(f);
  if (!ok) return false;
  b->host = host;
  b->pidns = pidns;
  return true;
}

// Directories of jobs that ended without dist finalize (aborted, killed): every file is a record of
// a process of this node that no longer exists. Swept by each node's local rank 0 at init, so
// aborted runs leave at most their last directory behind.
void hb_sweep(const std::string& base) {
  DIR* d = opendir(base.c_str());
  if (!d) return;
  std::vector<std::string> dirs;
  while (dirent* e = readdir(d))
    if (std::strncmp(e->d_name, kDirPrefix, sizeof kDirPrefix - 1) == 0) dirs.push_back(base + "/" + e->d_name);
  closedir(d);
  for (const std::string& dir : dirs) {
    struct stat st;
    if (dir == g_hb_dir || lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) continue;
    DIR* dd = opendir(dir.c_str());
    if (!dd) continue;
    std::vector<std::string> files;
    bool stale = true;
    while (dirent* e = readdir(dd)) {
      if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
      files.push_back(dir + "/" + e->d_name);
      Beat b;
      if (std::strncmp(e->d_name, "rank-", 5) != 0 || !hb_owner(files.back(), &b) || std::strcmp(proc_state(b), "exited") != 0) {
        stale = false;
        break;
      }
    }
    closedir(dd);
    if (!stale || files.empty()) continue;
    for (const std::string& f : files) unlink(f.c_str());
    rmdir(dir.c_str());
  }
}

void hb_open(unsigned long long token) {
  const std::string base = heartbeat_base();
  if (gethostname(g_host, sizeof g_host - 1) != 0 || !g_host[0]) std::strcpy(g_host, "?");
  for (char* p = g_host; *p; ++p)
    if (static_cast<unsigned char>(*p) <= ' ') *p = '_';
  const ssize_t n = readlink("/proc/self/ns/pid", g_pidns, sizeof g_pidns - 1);
  g_pidns[n > 0 ? n : 0] = 0;
  if (n <= 0 || std::strchr(g_pidns, ' ')) std::strcpy(g_pidns, "?");
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", token);
  g_hb_dir = base + "/" + kDirPrefix + hex;
  mkdir(base.c_str(), 0777);  // $QN_DIST_HEARTBEAT_DIR may not exist yet (one level)
  struct stat st;
  if (mkdir(g_hb_dir.c_str(), 0700) != 0 && errno != EEXIST) return hb_warn(g_hb_dir + ": " + std::strerror(errno));
  if (lstat(g_hb_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
    return hb_warn(g_hb_dir + " is not a directory of this user");
  g_hb_fd = open(hb_path(g_hb_dir, g_info.rank).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (g_hb_fd < 0) return hb_warn(hb_path(g_hb_dir, g_info.rank) + ": " + std::strerror(errno));
  g_hb_on = true;
  if (g_info.local_rank == 0) hb_sweep(base);
}

// At finalize: this rank's file goes, and the directory with the last rank to leave (rmdir fails
// while other files remain).
void hb_close() {
  g_hb_on = false;
  if (g_hb_fd < 0) return;
  close(g_hb_fd);
  g_hb_fd = -1;
  unlink(hb_path(g_hb_dir, g_info.rank).c_str());
  rmdir(g_hb_dir.c_str());
}

// "rank 3, 5-7" / "ranks 3, 5-7"
std::string rank_list(const std::vector<int>& r) {
  std::string s = r.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < r.size();) {
    size_t j = i;
    while (j + 1 < r.size() && r[j + 1] == r[j] + 1) ++j;
    s += (i ? ", " : "") + std::to_string(r[i]) + (j > i ? (j == i + 1 ? ", " : "-") + std::to_string(r[j]) : "");
    i = j + 1;
  }
  return s;
}

// Who left collective #seq waiting, from the heartbeat files: "rank 2 died or hangs: it did not
// reach this collective (...)", or "" when the files cannot tell (off, or our own record unreadable).
std::string silent_ranks(unsigned long long seq) {
  if (!g_hb_on) return "";
  const Beat self = hb_read(hb_path(g_hb_dir, g_info.rank));
  if (!self.valid || self.seq != seq) return "";
  struct Suspect {
    int rank;
    std::string why;
  };
  std::vector<Suspect> suspects, unseen;
  for (int r = 0; r < g_info.world_size; ++r) {
    if (r == g_info.rank) continue;
    const Beat b = hb_read(hb_path(g_hb_dir, r));
    if (b.valid && b.aborting) continue;  // it timed out too (or failed) and is ending the job
    if (!b.valid) {
      unseen.push_back({r, "has no heartbeat file here (it died before its first collective, already finished, or runs on another "
                           "node without a shared QN_DIST_HEARTBEAT_DIR)"});
      continue;
    }
    const char* st = proc_state(b);
    const std::string proc = *st ? std::string("its process (pid ") + std::to_string(b.pid) + " on this node) " +
                                       (st[0] == 's' ? "is stopped" : "has exited")
                                 : "";
    if (b.seq < seq)
      suspects.push_back({r, "did not reach this collective (the last one it entered was #" + std::to_string(b.seq) + " '" + b.what + "')" +
                                 (proc.empty() ? "" : "; " + proc)});
    else if (b.seq == seq && *st)
      suspects.push_back({r, "entered this collective, but " + proc});
  }
  std::string note;
  if (suspects.empty()) {
    suspects.swap(unseen);
  } else if (!unseen.empty()) {
    std::vector<int> r;
    for (const Suspect& u : unseen) r.push_back(u.rank);
    note = " (no heartbeat file here for " + rank_list(r) + ": other nodes without a shared QN_DIST_HEARTBEAT_DIR, or not started)";
  }
  if (suspects.empty())
    return g_info.world_size == 2 ? "rank " + std::to_string(1 - g_info.rank) + " died or hangs: it entered this collective too and stalled inside it (or the interconnect failed)"
                                  : "another rank died or hangs: every rank entered this collective, so one stalled inside it (or the interconnect failed)";
  if (suspects.size() == 1) return "rank " + std::to_string(suspects[0].rank) + " died or hangs: it " + suspects[0].why + note;
  std::vector<int> r;
  for (const Suspect& s : suspects) r.push_back(s.rank);
  std::string out = rank_list(r) + " died or hang:";
  constexpr size_t kDetails = 8;
  for (size_t i = 0; i < suspects.size() && i < kDetails; ++i)
    out += (i ? "; rank " : " rank ") + std::to_string(suspects[i].rank) + " " + suspects[i].why;
  if (suspects.size() > kDetails) out += "; and " + std::to_string(suspects.size() - kDetails) + " more";
  return out + note;
}

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
    // timed out: name the silent rank(s) from the heartbeat files, else the old wording
    const std::string what = g_wd_what;
    lk.unlock();
    std::string who = silent_ranks(seq);
    if (who.empty())
      who = (g_info.world_size == 2 ? "rank " + std::to_string(1 - g_info.rank) : std::string("another rank")) + " died or hangs";
    char head[512];
    std::snprintf(head, sizeof head, "qlora-native: rank %d of %d: collective '%s' (#%llu) did not complete within %.0f s: ", g_info.rank,
                  g_info.world_size, what.c_str(), static_cast<unsigned long long>(seq), timeout_seconds());
    abort_job(head + who + "; aborting the job (QN_DIST_TIMEOUT_S sets the limit)", 3);
  }
}

// TEST ONLY (test/dist.test.mjs): QN_DIST_TEST_HANG_RANK=r with QN_DIST_TEST_HANG_AT=n makes rank
// r stop for good (alive, asleep) just before it enters collective #n, so the test can check that
// the others name it. Unset, as everywhere else: one comparison per collective.
void test_hang_hook(uint64_t next) {
  static const long long rank = std::getenv("QN_DIST_TEST_HANG_RANK") ? std::atoll(std::getenv("QN_DIST_TEST_HANG_RANK")) : -1;
  static const long long at = std::getenv("QN_DIST_TEST_HANG_AT") ? std::atoll(std::getenv("QN_DIST_TEST_HANG_AT")) : -1;
  if (at <= 0 || rank != g_info.rank || next != static_cast<uint64_t>(at)) return;
  std::fprintf(stderr, "qlora-native: rank %d: test hook: hanging before collective #%llu (QN_DIST_TEST_HANG_AT)\n", g_info.rank,
               static_cast<unsigned long long>(next));
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(60));
}

struct Guard {
  explicit Guard(const char* what) {
    uint64_t next;
    {
      std::lock_guard<std::mutex> lk(g_wd_mu);
      next = g_wd_seq + 1;
    }
    test_hang_hook(next);
    std::lock_guard<std::mutex> lk(g_wd_mu);
    g_wd_busy = true;
    ++g_wd_seq;
    g_wd_what = what;
    g_wd_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds() * 1000));
    hb_write(g_wd_seq, what);
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
  // MPI cannot start again in a process once finalized (MPI_Init would abort it)
  if (g_finalized) fail(ErrorCode::Arg, "dist: init after finalize: MPI cannot be started twice in one process");
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
  g_wd_thread = new std::thread(watchdog_loop);
  g_wd_thread->detach();
  // collective #1: rank 0's job token names the heartbeat directory
  unsigned long long token = 0;
  if (g_info.rank == 0) {
    token = static_cast<unsigned long long>(getpid()) << 40 ^
            static_cast<unsigned long long>(std::chrono::system_clock::now().time_since_epoch().count());
    try {
      std::random_device rd;
      token ^= static_cast<unsigned long long>(rd()) << 32 | rd();
    } catch (...) {
    }
  }
  {
    Guard g("dist init");
    check(a.Bcast(&token, static_cast<int>(sizeof token), a.t_byte, 0, a.comm_world), "Bcast", "init");
  }
  hb_open(token);
  {
    std::lock_guard<std::mutex> wl(g_wd_mu);
    hb_write(g_wd_seq, "dist init");
  }
  g_info.active = true;
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
  // an invalid root makes MPI's error handler end the process: refuse it here
  if (root < 0 || root >= g_info.world_size)
    fail(ErrorCode::Arg, std::string("dist: ") + what + ": root " + std::to_string(root) + " is not a rank of this job (0.." +
                             std::to_string(g_info.world_size - 1) + ")");
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
  if (g_hb_on) {
    std::lock_guard<std::mutex> lk(g_wd_mu);
    hb_write(g_wd_seq, g_wd_busy ? g_wd_what : "none in flight", true);
  }
  if (g_api.Abort) g_api.Abort(g_api.comm_world, code);
  std::_Exit(code);
}

void finalize() {
  std::lock_guard<std::mutex> lk(g_init_mu);
  if (!g_info.active) return;
  hb_close();
  int fin = 0;
  g_api.Finalized(&fin);
  if (!fin) g_api.Finalize();
  g_info.active = false;
  g_finalized = true;
}

}  // namespace dist
}  // namespace qn
