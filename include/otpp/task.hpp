#pragma once
// otpp::task<R>: Elixir's Task. A process that runs one function and
// delivers its result to whoever started it.
//
//   auto t = otpp::task_async([] { return expensive(); });   // Task.async
//   ...
//   auto v = otpp::await(t);                                  // Task.await (5 s)
//
// Started from a process, the task is linked to it: a task that crashes
// takes its caller down (unless the caller traps exits), and a caller that
// dies takes its tasks with it. Started from a plain thread, nothing is
// linked (a thread cannot be). await gives the result, or throws exit_error
// with the task's exit reason; past the timeout it kills the task and
// throws `timeout`. yield waits without giving up; shutdown stops it.
// In a coroutine handler, `co_await t.async_await()` waits without holding
// the worker. The function may itself be a coroutine returning async<R>.

#include <chrono>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "async.hpp"
#include "async_call.hpp"
#include "gen_server.hpp"
#include "process.hpp"
#include "runtime.hpp"

namespace otpp {

template <class R>
class task;

namespace detail {

template <class F>
using task_result_t = unwrap_async_t<std::invoke_result_t<F&>>;

/// A reference to a result slot given to a task's constructor, which says
/// it took it: if the constructor never ran (the runtime stopped) or threw,
/// the starter still holds it.
template <class R>
struct slot_grant {
  reply_slot<R>* slot;
  bool* taken;
};

/// The task's process: runs `fn` first thing, hands the result over (if
/// anyone wants it: `slot` may be null), exits. A non-empty `owner` is
/// linked from inside the task, before it runs: a task started by a
/// supervisor on someone's behalf dies with its owner, and an owner already
/// gone fails the start (noproc) instead of leaving an orphan.
template <class R, class F>
class task_server : public gen_server<task_server<R, F>> {
 public:
  struct run {};
  task_server(F fn, reply_slot<R>* slot, pid owner = {}) : fn_{std::move(fn)}, slot_{slot}, owner_{std::move(owner)} {
    if (slot_) slot_->add_ref();
  }
  task_server(F fn, slot_grant<R> g) : fn_{std::move(fn)}, slot_{g.slot} { *g.taken = true; }
  task_server(const task_server&) = delete;
  task_server& operator=(const task_server&) = delete;
  ~task_server() {
    if (slot_ && !tracked_) slot_->release();
  }

  init_result init() {
    if (owner_) otpp::link(owner_);
    // However the task ends, its exit fails the result with the final
    // reason unless it was delivered (as a deferred call's would be). The
    // process's list of deferred replies takes our reference over: it is
    // dropped after this object is gone.
    if (slot_) {
      process_of<task_server>::from_impl(this)->adopt_deferred(slot_);
      tracked_ = true;
    }
    return this->continue_with(run{});
  }

  auto handle_continue(run) {
    if constexpr (is_async_v<std::invoke_result_t<F&>>) {
      return run_async();
    } else {
      if constexpr (std::is_void_v<R>) {
        fn_();
        if (slot_) slot_->set_value();
      } else {
        if (slot_) {
          slot_->set_value(fn_());
        } else {
          (void)fn_();
        }
      }
      this->stop();
    }
  }

 private:
  async<void> run_async() {
    if constexpr (std::is_void_v<R>) {
      co_await fn_();
      if (slot_) slot_->set_value();
    } else {
      auto v = co_await fn_();
      if (slot_) slot_->set_value(std::move(v));
    }
    this->stop();
  }

  F fn_;
  reply_slot<R>* slot_;  // a reference (ours until tracked_), or null: nobody waits for the result
  pid owner_;
  bool tracked_ = false;
};

struct task_access;

[[noreturn]] void throw_task_error(const exit_reason& reason, const pid& task, std::string_view operation,
                                   steady::duration timeout);

}  // namespace detail

/// A running (or finished) task: its pid and its result to come. Move-only;
/// dropping it leaves the task running and its result unread, as in Elixir.
template <class R>
class [[nodiscard]] task {
 public:
  /// Takes over the task's result.
  task(task&& o) noexcept : pid_{std::move(o.pid_)}, slot_{std::exchange(o.slot_, nullptr)} {}
  /// Drops its own result (the task keeps running) and takes over `o`'s.
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      if (slot_) slot_->release();
      pid_ = std::move(o.pid_);
      slot_ = std::exchange(o.slot_, nullptr);
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() {
    if (slot_) slot_->release();
  }

  /// The task's process.
  [[nodiscard]] const otpp::pid& pid() const noexcept { return pid_; }

  class awaitable;

  /// In a coroutine handler: `co_await t.async_await(timeout)` gives the
  /// result, or throws exit_error (the task's reason; `timeout` after
  /// killing it), holding no thread meanwhile. The timeout counts from
  /// this call. The handle must stay where it is until the wait is over.
  /// What it returns converts to async<R>, to keep or hand on.
  [[nodiscard]] awaitable async_await(std::chrono::steady_clock::duration timeout = default_call_timeout) {
    // The result slot as an awaited call in flight, borrowing this handle's
    // reference (the handle outlives the wait).
    const detail::process_base* const caller = detail::tls().current;
    return awaitable{detail::pending_call_access::borrowed<R, false>(
                         caller, slot_, timeout, detail::pending_call_access::due(caller, timeout), pid_.id(),
                         "task", "await"),
                     pid_, timeout};
  }

 private:
  friend struct detail::task_access;
  task(otpp::pid p, detail::reply_slot<R>* s) noexcept : pid_{std::move(p)}, slot_{s} {}

  otpp::pid pid_;
  detail::reply_slot<R>* slot_ = nullptr;
};

/// What task::async_await returns: an awaiter, not a coroutine, so that a
/// co_await of it makes no frame of its own (task_async_await_ns 187
/// against 192 ns with the coroutine, alternated runs of otpp_bench).
template <class R>
class [[nodiscard]] task<R>::awaitable {
 public:
  /// Takes over the wait.
  awaitable(awaitable&&) noexcept = default;
  awaitable(const awaitable&) = delete;
  awaitable& operator=(const awaitable&) = delete;
  awaitable& operator=(awaitable&&) = delete;
  /// Dropped unawaited, the task's result stays for the handle; with its
  /// frame gone mid-wait, the wait ends (the task runs on).
  ~awaitable() = default;

  /// (The coroutine protocol.) Ready at once if the task has finished.
  [[nodiscard]] bool await_ready() const noexcept { return call_.await_ready(); }
  /// (The coroutine protocol.) Suspends the handler until the task's outcome or the timeout.
  bool await_suspend(std::coroutine_handle<> h) { return call_.await_suspend(h); }
  /// (The coroutine protocol.) The result; exit_error with the task's
  /// reason, or `timeout` once the task is killed.
  R await_resume() {
    auto r = call_.await_resume();
    if (!r) {
      if (r.error() == exit_reason::timeout()) otpp::exit(pid_, exit_reason::kill());
      detail::throw_task_error(r.error(), pid_, "otpp::await", timeout_);
    }
    if constexpr (!std::is_void_v<R>) return std::move(r).value();
  }
  /// The same wait as an async<R> (a coroutine that co_awaits it).
  operator async<R>() && {  // NOLINT(google-explicit-constructor): async_await gave an async<R> before
    return as_async(std::move(*this));
  }

 private:
  friend class task<R>;
  awaitable(pending_try_call<R> call, const otpp::pid& p, std::chrono::steady_clock::duration timeout) noexcept
      : call_{std::move(call)}, pid_{p}, timeout_{timeout} {}
  static async<R> as_async(awaitable a) { co_return co_await a; }

  pending_try_call<R> call_;
  const otpp::pid& pid_;  // the task's, whose handle outlives the wait
  std::chrono::steady_clock::duration timeout_;
};

namespace detail {
struct task_access {
  template <class R>
  static task<R> make(pid p, reply_slot<R>* s) noexcept {
    return task<R>{std::move(p), s};
  }
  template <class R>
  static reply_slot<R>* slot(const task<R>& t) noexcept {
    return t.slot_;
  }
  /// Waits for the task's outcome until `deadline` (false if it is not in
  /// by then) the way a worker must: a task queued behind a waiting worker
  /// is handed to another thread rather than left stuck behind it.
  template <class R>
  static bool wait(const task<R>& t, steady::time_point deadline) noexcept {
    return await_resolution(t.slot_, deadline, pid_access::get(t.pid_), false);
  }
};

/// A finished task's outcome (its slot is resolved).
template <class R>
result<R> task_outcome(reply_slot<R>* slot) {
  return collect(slot, slot->settled_state());
}
}  // namespace detail

namespace detail {
/// Starts a task by `start(fn, grant)` (a start or start_link, the grant a
/// slot_grant) and hands back its handle; throws exit_error if it could not start.
template <class F, class Start>
task<task_result_t<F>> start_task(F fn, Start start) {
  using R = task_result_t<F>;
  auto* slot = reply_slot<R>::make();  // two references: the handle's and the server's
  bool taken = false;
  auto r = [&] {
    // However start ends, the server's reference comes back here if no
    // server took it (none was made, or its constructor threw).
    struct untaken {
      reply_slot<R>* s;
      const bool& taken;
      ~untaken() {
        if (!taken) s->release();
      }
    } guard{slot, taken};
    try {
      return start(std::move(fn), slot_grant<R>{slot, &taken});
    } catch (...) {
      slot->release();  // the handle's
      throw;
    }
  }();
  if (!r) {
    slot->release();
    throw exit_error{r.error(), "otpp::task_async"};
  }
  return task_access::make<R>(server_access::take_pid(std::move(*r)), slot);
}
}  // namespace detail

/// Task.async: runs `fn()` in a new process, linked to the calling process
/// (if any). `fn` may return async<R> (a coroutine that co_awaits calls).
/// From a plain thread, the task runs in the default runtime.
template <class F>
  requires std::invocable<F&>
[[nodiscard]] task<detail::task_result_t<F>> task_async(F fn) {
  using server_type = detail::task_server<detail::task_result_t<F>, F>;
  return detail::start_task(std::move(fn), [](F&& f, auto slot) { return otpp::start_link<server_type>(std::move(f), slot); });
}

/// task_async in runtime `rt`: from one of rt's processes, as task_async
/// (linked); from a plain thread (or another runtime), started in rt and
/// linked to nobody.
template <class F>
  requires std::invocable<F&>
[[nodiscard]] task<detail::task_result_t<F>> task_async(runtime& rt, F fn) {
  if (detail::tls().current != nullptr && detail::tls().current->rt() == &detail::runtime_access::core(rt))
    return otpp::task_async(std::move(fn));
  using server_type = detail::task_server<detail::task_result_t<F>, F>;
  return detail::start_task(std::move(fn), [&rt](F&& f, auto slot) { return rt.start<server_type>(std::move(f), slot); });
}

/// basic_pending_call::then (declared in async_call.hpp, where task is not known).
template <class R, bool Throws>
template <class F>
auto basic_pending_call<R, Throws>::then(F fn) && {
  using given = decltype(std::declval<basic_pending_call&>().await_resume());
  detail::runtime_core* rt = detail::pending_call_access::runtime_of(*this);
  if (rt == nullptr) rt = &detail::current_core();
  auto job = [call = std::move(*this), fn = std::move(fn)]() mutable {
    if constexpr (std::is_void_v<given>) {
      return [](basic_pending_call& c, F& f) -> async<std::invoke_result_t<F&>> {
        co_await c;
        co_return f();
      }(call, fn);
    } else {
      return [](basic_pending_call& c, F& f) -> async<std::invoke_result_t<F&, given>> {
        co_return f(co_await c);
      }(call, fn);
    }
  };
  using J = decltype(job);
  using server_type = detail::task_server<detail::task_result_t<J>, J>;
  return detail::start_task(std::move(job), [rt](J&& j, auto slot) {
    return detail::start_with<server_type>(*rt, false, std::move(j), slot);
  });
}

/// Task.await: the result, or exit_error with the task's exit reason; past
/// `timeout`, the task is killed and exit_error(timeout) is thrown. Blocks
/// this thread; in a coroutine handler use `co_await t.async_await()`.
template <class R>
R await(task<R>& t, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  auto* slot = detail::task_access::slot(t);
  if (!detail::task_access::wait(t, detail::deadline_after(timeout))) {
    otpp::exit(t.pid(), exit_reason::kill());
    (void)slot->wait_for(detail::deadline_after(std::chrono::seconds(5)));  // its death fails the slot
    detail::throw_task_error(exit_reason::timeout(), t.pid(), "otpp::await", timeout);
  }
  auto r = detail::task_outcome(slot);
  if (!r) detail::throw_task_error(r.error(), t.pid(), "otpp::await", timeout);
  if constexpr (!std::is_void_v<R>) return std::move(r).value();
}

/// Task.await_many: every result, in order, within one timeout overall.
template <class R>
std::vector<R> await_many(std::vector<task<R>>& tasks, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  const auto deadline = detail::deadline_after(timeout);
  std::vector<R> out;
  out.reserve(tasks.size());
  for (auto& t : tasks) {
    const auto now = std::chrono::steady_clock::now();
    out.push_back(otpp::await(t, deadline > now ? deadline - now : std::chrono::steady_clock::duration::zero()));
  }
  return out;
}

/// Task.yield: the outcome if the task finished within `timeout`, else
/// nothing (the task keeps running; ask again or shut it down).
template <class R>
std::optional<result<R>> yield(task<R>& t, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  auto* slot = detail::task_access::slot(t);
  if (!detail::task_access::wait(t, detail::deadline_after(timeout))) return std::nullopt;
  return detail::task_outcome(slot);
}

/// Task.shutdown: stops the task (unlinked first, so the caller is not taken
/// down), waiting up to `timeout` before killing it. Returns its outcome if
/// it had finished, else nothing.
template <class R>
std::optional<result<R>> shutdown(task<R>& t, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  auto* slot = detail::task_access::slot(t);
  if (detail::tls().current != nullptr) otpp::unlink(t.pid());
  if (!slot->resolved()) {
    otpp::exit(t.pid(), exit_reason::shutdown());
    if (!await_exit(t.pid(), timeout)) otpp::exit(t.pid(), exit_reason::kill());
    (void)slot->wait_for(detail::deadline_after(std::chrono::seconds(5)));
  }
  auto r = detail::task_outcome(slot);
  if (!r && (r.error() == exit_reason::shutdown() || r.error() == exit_reason::killed())) return std::nullopt;
  return r;
}

}  // namespace otpp

#if OTPP_HEADER_ONLY
#include "detail/task-inl.hpp"
#endif
