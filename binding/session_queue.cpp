// SessionQueue (see session_queue.h).
#include "session_queue.h"
#include "errors.h"
#include <string>
#include <system_error>

namespace qnb {

struct SessionQueue::Task {
  Work work;
  Done done;
  Napi::Promise::Deferred deferred;
  std::exception_ptr error;
  std::shared_ptr<SessionQueue::Shared> shared;
};

SessionQueue::SessionQueue(Napi::Env env) {
  shared_ = std::make_shared<Shared>();
  std::weak_ptr<Shared> weak = shared_;
  shared_->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                               "qlora-native session", 0, 1, [weak](Napi::Env) {
                                                 if (auto sh = weak.lock()) sh->finalized = true;
                                               });
  shared_->tsfn.Unref(env);
  env_ = env;
  hook_ = napi_add_env_cleanup_hook(env, &SessionQueue::EnvCleanup, this) == napi_ok;
  try {
    thread_ = std::thread([this] { Loop(); });
  } catch (const std::exception& e) {  // std::system_error, or std::bad_alloc
    // out of threads or memory (e.g. thousands of undisposed sessions): an error, not an abort
    if (hook_) napi_remove_env_cleanup_hook(env, &SessionQueue::EnvCleanup, this);
    hook_ = false;
    closed_ = true;
    shared_->released = true;
    shared_->tsfn.Release();
    Throw(env, "E_OOM", std::string("cannot start the session's worker thread (") + e.what() +
                            "); too many sessions alive at once? dispose() the ones you no longer need");
  }
}

void SessionQueue::EnvCleanup(void* self) {
  auto* q = static_cast<SessionQueue*>(self);
  q->hook_ = false;  // running now: Close() must not unregister it
  q->Close();
}

SessionQueue::~SessionQueue() { Close(); }

Napi::Promise SessionQueue::Submit(Napi::Env env, Work work, Done done) {
  auto* task = new Task{std::move(work), std::move(done), Napi::Promise::Deferred::New(env), nullptr, shared_};
  Napi::Promise promise = task->deferred.Promise();
  {
    std::lock_guard<std::mutex> g(mu_);
    if (closing_) {
      delete task;
      Throw(env, "E_DISPOSED", "the session was disposed");
    }
    tasks_.push_back(task);
  }
  if (shared_->pending++ == 0) shared_->tsfn.Ref(env);  // keep the process alive while work is queued
  cv_.notify_one();
  return promise;
}

void SessionQueue::Loop() {
  for (;;) {
    Task* task = nullptr;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return closing_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      task = tasks_.front();
      tasks_.pop_front();
    }
    try {
      task->work();
    } catch (...) {
      task->error = std::current_exception();
    }
    if (shared_->tsfn.BlockingCall(task, [](Napi::Env env, Napi::Function, Task* t) { Settle(env, t); }) != napi_ok) {
      delete task;  // the environment is shutting down: nobody is waiting any more
    }
  }
}

void SessionQueue::Settle(Napi::Env env, Task* task) {
  std::unique_ptr<Task> owned(task);
  if (env == nullptr) return;
  Napi::HandleScope scope(env);
  try {
    if (task->error) {
      task->deferred.Reject(ErrorFromCurrentException(env, task->error));
    } else {
      try {
        task->deferred.Resolve(task->done ? task->done(env) : env.Undefined());
      } catch (const Napi::Error& e) {
        task->deferred.Reject(e.Value());
      } catch (...) {
        task->deferred.Reject(ErrorFromCurrentException(env, std::current_exception()));
      }
    }
  } catch (...) {
    // Not even an error object could be made: settle with a bare one. Either way the pending
    // count must drop below, or the process would stay alive forever.
    try {
      task->deferred.Reject(Napi::Error::New(env, "qlora-native: could not build the error of a failed operation").Value());
    } catch (...) {
    }
  }
  Shared& sh = *task->shared;
  if (--sh.pending == 0 && !sh.released) sh.tsfn.Unref(env);
}

void SessionQueue::Close() {
  if (hook_) {
    napi_remove_env_cleanup_hook(env_, &SessionQueue::EnvCleanup, this);
    hook_ = false;
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    if (closed_) return;
    closing_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  closed_ = true;
  shared_->released = true;
  if (!shared_->finalized) shared_->tsfn.Release();
}

}  // namespace qnb
