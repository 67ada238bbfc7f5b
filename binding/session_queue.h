// The work queue of one session: a dedicated thread runs submitted tasks strictly in order (the
// host-side twin of the session's CUDA stream), and each task settles a JS promise on the main
// thread through a thread-safe function. The event loop stays free while native work runs.
#pragma once
#include <napi.h>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace qnb {

class SessionQueue {
 public:
  using Work = std::function<void()>;
  // Called on the JS thread after work() succeeded; returns the promise's value.
  using Done = std::function<Napi::Value(Napi::Env)>;

  explicit SessionQueue(Napi::Env env);
  ~SessionQueue();
  Napi::Promise Submit(Napi::Env env, Work work, Done done);
  // Runs the remaining tasks, then stops the thread. Safe to call twice. JS thread only.
  void Close();
  size_t Pending() const { return shared_->pending; }

 private:
  struct Task;
  // Outlives the queue while promises are still being settled on the JS thread.
  struct Shared {
    Napi::ThreadSafeFunction tsfn;
    size_t pending = 0;  // touched on the JS thread only
    bool released = false;
    bool finalized = false;  // Node freed the thread-safe function (environment teardown)
  };
  void Loop();
  static void Settle(Napi::Env env, Task* task);
  // Environment teardown: registered after the thread-safe function, so it runs before Node
  // tears that down (cleanup hooks run last-in first-out): stops the thread and releases the
  // function while both are still valid. A session never disposed (several of them, say) would
  // otherwise release a function Node had already freed when the garbage collector finally runs
  // its destructor, and the process aborted at exit.
  static void EnvCleanup(void* self);
  napi_env env_ = nullptr;
  bool hook_ = false;

  std::shared_ptr<Shared> shared_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task*> tasks_;
  bool closing_ = false;
  bool closed_ = false;
};

}  // namespace qnb
