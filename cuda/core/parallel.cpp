// A small persistent thread pool. A job is a range split into chunks taken with an atomic counter,
// so uneven chunks balance themselves. Between jobs a worker first spins for a short while
// (QN_SPIN_US, default 200 us, when the pool has no more threads than the machine) watching for
// the next job, then sleeps on a condition variable; the caller likewise spins briefly before
// sleeping while it waits for the workers to finish. A training step runs thousands of short
// parallel regions (several per GEMM), and waking a sleeping thread took 50-100 us on the 2-core VMs
// we measured: longer than many of the regions themselves.
#include "qn/parallel.h"
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace qn {
namespace {

thread_local bool t_in_parallel = false;

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

int64_t spin_ns_from_env() {
  const char* e = std::getenv("QN_SPIN_US");
  const long us = e ? std::atol(e) : 200;
  return us > 0 ? static_cast<int64_t>(us) * 1000 : 0;
}

// Spins until done() or until `ns` nanoseconds have passed; returns done().
template <typename F>
bool spin_until(int64_t ns, F done) {
  if (ns <= 0) return done();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) == 0 &&
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count() > ns)
      return done();
  }
}

class Pool {
 public:
  ~Pool() { stop(); }

  int size() {
    std::lock_guard<std::mutex> g(config_mu_);
    return wanted_;
  }

  void resize(int n) {
    std::lock_guard<std::mutex> g(config_mu_);
    wanted_ = n > 0 ? n : std::max(1u, std::thread::hardware_concurrency());
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> run_guard(run_mu_);  // one job at a time
    ensure_workers();
    const int threads = static_cast<int>(workers_.size()) + 1;
    grain = std::max<int64_t>(grain, 1);
    int64_t chunk = std::max<int64_t>(grain, (n + threads * 4 - 1) / (threads * 4));
    {
      std::lock_guard<std::mutex> g(mu_);
      fn_ = &fn;
      n_ = n;
      chunk_ = chunk;
      next_.store(0);
      pending_.store(static_cast<int>(workers_.size()));
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleeping_.load() > 0) cv_.notify_all();
    work();
    if (!spin_until(spin_ns_, [&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return pending_.load() == 0; });
    }
    fn_ = nullptr;
    std::exception_ptr e;
    {
      std::lock_guard<std::mutex> g(mu_);
      std::swap(e, error_);
    }
    if (e) std::rethrow_exception(e);
  }

 private:
  void work() {
    t_in_parallel = true;
    for (;;) {
      const int64_t b = next_.fetch_add(chunk_);
      if (b >= n_) break;
      try {
        (*fn_)(b, std::min(n_, b + chunk_));
      } catch (...) {
        std::lock_guard<std::mutex> g(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
    t_in_parallel = false;
  }

  void worker_loop(int index, uint64_t seen) {
    for (;;) {
      if (!spin_until(spin_ns_, [&] {
            return quit_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
          })) {
        std::unique_lock<std::mutex> lk(mu_);
        sleeping_.fetch_add(1);
        cv_.wait(lk, [&] { return quit_.load() || generation_.load() != seen; });
        sleeping_.fetch_sub(1);
      }
      if (quit_.load() && index >= 0) return;
      seen = generation_.load(std::memory_order_acquire);
      work();
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> g(mu_);  // the caller may be between its check and its wait
        done_cv_.notify_all();
      }
    }
  }

  void ensure_workers() {
    const int want = size() - 1;
    if (static_cast<int>(workers_.size()) == want) return;
    stop();
    quit_ = false;
    // Spinning only pays while every thread has a core of its own.
    spin_ns_ = want + 1 <= static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) ? spin_ns_from_env() : 0;
    const uint64_t gen = generation_.load();  // read before the next job bumps it
    for (int i = 0; i < want; ++i) workers_.emplace_back([this, i, gen] { worker_loop(i, gen); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> g(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::mutex config_mu_;
  int wanted_ = std::max(1u, std::thread::hardware_concurrency());
  std::mutex run_mu_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleeping_{0};  // workers waiting on cv_
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> quit_{false};
  int64_t spin_ns_ = 0;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destruction order
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (t_in_parallel || n <= grain || num_threads() == 1) {
    fn(0, n);
    return;
  }
  pool().run(n, grain, fn);
}

}  // namespace qn
