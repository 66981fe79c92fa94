#pragma once
// The runtime: worker threads, their queues, and the table of live processes.
//
// A program needs no set-up: the first start() outside any runtime uses
// default_runtime(), created on first use with one worker per hardware
// thread and shut down at exit. Tests and embedders create their own:
//
//   otpp::runtime rt{{.workers = 2}};
//   auto c = rt.start<counter>(0).value();
//
// Shutdown (explicit, or at destruction) refuses new processes, stops every
// live process in reverse start order (each gets terminate(shutdown), with
// runtime_config::shutdown_timeout to finish), then joins the threads. A
// handler that never returns cannot be interrupted in C++: shutdown gives up
// on it after the timeout, logs it, and leaves that thread and its state
// behind rather than hang or free memory under it.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "detail/runtime_core.hpp"
#include "exit_reason.hpp"
#include "process.hpp"

namespace otpp {

template <class Impl>
class server;

namespace detail {
struct runtime_access;
}

/// One worker thread's counters since the runtime started (what
/// erlang:statistics(scheduler_wall_time) and the reductions give BEAM users).
/// Utilisation over an interval is 1 - (idle delta / wall delta); messages
/// per second the messages delta over the wall delta.
struct scheduler_stats {
  std::uint64_t messages = 0;            ///< Messages taken by the processes it ran.
  std::chrono::nanoseconds idle{0};      ///< Time it had nothing to run (spinning or asleep).
  std::size_t run_queue = 0;             ///< Processes waiting in its own queue now.
};

/// A scheduler and its processes (an Erlang node's VM, without the
/// network): worker threads, timers, and shutdown. Most programs use the
/// default one; tests and embedders make their own.
class runtime {
 public:
  /// Starts the worker threads.
  explicit runtime(runtime_config cfg = {}) : core_{new detail::runtime_core{cfg}} {}
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;
  /// Shuts down (see shutdown) if not done yet.
  ~runtime();

  /// Starts a gen_server in this runtime (defined in gen_server.hpp).
  template <class Impl, class... Args>
  [[nodiscard]] result<server<Impl>> start(Args&&... args);

  /// Stops all processes (newest first; terminate(shutdown) runs), then the
  /// threads, within runtime_config::shutdown_timeout in total. Idempotent.
  /// From one of this runtime's own threads (std::exit in a handler), the
  /// calling process is left running and the runtime's memory is not freed.
  void shutdown() { core_->shutdown(); }

  /// Processes started and not yet exited.
  [[nodiscard]] std::size_t process_count() const { return core_->live_count(); }
  /// Timers (send_after, send_interval, idle timeouts) waiting to fire, as
  /// of the timer thread's last pass; those of exited processes are dropped
  /// within about a second.
  [[nodiscard]] std::size_t timer_count() const noexcept {
    return core_->timer_count();
  }
  /// The number of worker threads (one per core unless configured).
  [[nodiscard]] unsigned workers() const noexcept { return core_->config().workers; }
  /// Threads started so far: the workers plus spares started to stand in for
  /// workers blocked in calls.
  [[nodiscard]] std::size_t thread_count() const { return core_->thread_count(); }
  /// Each worker's counters, read without stopping anything (a snapshot).
  [[nodiscard]] std::vector<scheduler_stats> schedulers() const {
    std::vector<scheduler_stats> out;
    for (const auto& x : core_->scheduler_samples())
      out.push_back({x.messages, std::chrono::nanoseconds{x.idle_ns}, x.run_queue});
    return out;
  }
  /// Processes waiting in the queue all workers share (beside their own).
  [[nodiscard]] std::size_t shared_run_queue() const noexcept { return core_->injection_length(); }
  /// Now on this runtime's clock: the clock_source it was given (a
  /// virtual_clock in tests), else the steady clock. Inside its processes
  /// otpp::monotonic_time() says the same; this is for code outside them (a
  /// plain thread reading a table) that must agree with their timers.
  [[nodiscard]] std::chrono::steady_clock::time_point now() const noexcept {
    const auto& clock = core_->config().clock;
    return clock ? clock->now() : std::chrono::steady_clock::now();
  }

 private:
  friend struct detail::runtime_access;
  detail::runtime_core* core_;
};

namespace detail {
struct runtime_access {
  static runtime_core& core(runtime& rt) noexcept { return *rt.core_; }
};
}  // namespace detail

namespace detail {
// The default runtime is shut down at exit but never destroyed: a static
// object constructed before it may still use it from its destructor, and
// then gets shutdown/noproc answers instead of freed memory.
struct default_runtime_holder {
  runtime* rt = new runtime;
  default_runtime_holder() = default;
  default_runtime_holder(const default_runtime_holder&) = delete;
  default_runtime_holder& operator=(const default_runtime_holder&) = delete;
  ~default_runtime_holder();
};
}  // namespace detail

/// The process-wide runtime used when no other is in scope.
runtime& default_runtime();

namespace detail {
/// The runtime a new process joins: the caller's own, else the default.
inline runtime_core& current_core() {
  if (tls().current != nullptr) return *tls().current->rt();
  if (tls().rt != nullptr) return *tls().rt;
  return runtime_access::core(default_runtime());
}
}  // namespace detail

}  // namespace otpp

#if OTPP_HEADER_ONLY
#include "detail/runtime-inl.hpp"
#endif
