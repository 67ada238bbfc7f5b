// A small persistent thread pool. Workers sleep on a condition variable between jobs; a job is a
// range split into chunks taken with an atomic counter, so uneven chunks balance themselves.
#include "qn/parallel.h"
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace qn {
namespace {

thread_local bool t_in_parallel = false;

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
      pending_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
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
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return quit_ || generation_ != seen; });
        if (quit_ && index >= 0) return;
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> g(mu_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  void ensure_workers() {
    const int want = size() - 1;
    if (static_cast<int>(workers_.size()) == want) return;
    stop();
    quit_ = false;
    const uint64_t gen = generation_;  // read before the next job bumps it
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
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool quit_ = false;
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
