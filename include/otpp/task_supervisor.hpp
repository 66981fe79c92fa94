#pragma once
// otpp::task_supervisor: Elixir's Task.Supervisor, a dynamic supervisor for
// tasks started on demand.
//
//   auto tasks = otpp::task_supervisor::start_link(otpp::name("tasks")).value();
//   tasks.start_child([] { send_welcome_mail(); });            // fire and forget
//   auto t = tasks.async([] { return price(item); });          // linked to us
//   auto u = tasks.async_nolink([] { return risky(); });       // not linked
//   auto r = otpp::yield(u, 1s);   // a crash comes back as its exit reason
//
// Every task is a child of the supervisor, so shutting the supervisor down
// stops them all (each by its shutdown policy: 5 s by default), and
// children() lists the running ones. async links the task to the calling
// process as Task.async does (a crash takes the caller down unless it traps
// exits; the caller's death takes the task); the link is made by the task
// itself before it runs, so a task never runs for an owner already gone.
// async_nolink does not link: a crash reaches the caller only as the exit
// reason await throws or yield returns, as the DOWN message does in Elixir.
// The result is read with otpp::await / yield / shutdown (task.hpp), or
// co_awaited in a coroutine handler with t.async_await().

#include <chrono>
#include <concepts>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "child_spec.hpp"
#include "dynamic_supervisor.hpp"
#include "gen_server.hpp"
#include "process.hpp"
#include "task.hpp"
#include "task_stream.hpp"

namespace otpp {

/// How start_child runs a task (Task.Supervisor.start_child's options).
struct task_child_options {
  /// temporary (the default): never restarted; transient: restarted after
  /// a crash. permanent is refused: a task that ends normally would be
  /// restarted forever.
  restart_type restart = restart_type::temporary;
  /// How the supervisor stops it; empty: 5 s, then kill.
  std::optional<shutdown_policy> shutdown{};
};

class task_supervisor;
namespace detail {
struct supervised_start;
}

/// A handle to a task supervisor. Copyable; converts to its pid.
class task_supervisor {
 public:
  /// The server type underneath (for supervision trees, names, sys).
  using server_type = dynamic_supervisor;

  /// An empty handle.
  task_supervisor() noexcept = default;
  /// The handle of a running task supervisor, e.g. one found by name.
  explicit task_supervisor(server<dynamic_supervisor> s) noexcept : s_{std::move(s)} {}

  /// Starts one linked to the caller. Start options (a name...) first, then
  /// optionally dynamic_supervisor_flags (max_children, restart intensity).
  template <class... Args>
  [[nodiscard]] static result<task_supervisor> start_link(Args&&... args) {
    return adopt(otpp::start_link<dynamic_supervisor>(std::forward<Args>(args)...));
  }
  /// Like start_link, without the link.
  template <class... Args>
  [[nodiscard]] static result<task_supervisor> start(Args&&... args) {
    return adopt(otpp::start<dynamic_supervisor>(std::forward<Args>(args)...));
  }
  /// Like start, in runtime `rt` (as rt.start<Impl> for a server).
  template <class... Args>
  [[nodiscard]] static result<task_supervisor> start(runtime& rt, Args&&... args) {
    return adopt(rt.start<dynamic_supervisor>(std::forward<Args>(args)...));
  }
  /// As a supervisor's child, e.g. `task_supervisor::child_spec(otpp::name("tasks"))`.
  template <class... Args>
  [[nodiscard]] static auto child_spec(Args&&... args) {
    return otpp::child<dynamic_supervisor>(std::forward<Args>(args)...);
  }

  /// Task.Supervisor.start_child: runs `fn()` under the supervisor, linked
  /// to nobody else; nobody reads its result. Returns its pid, or the
  /// supervisor's refusal (error("max_children"), noproc...). A transient
  /// task's `fn` is copied for each restart.
  template <class F>
    requires std::invocable<F&> && std::copy_constructible<F>
  result<otpp::pid> start_child(F fn, task_child_options options = {}) const {
    using R = detail::task_result_t<F>;
    if (options.restart == restart_type::permanent)
      return exit_reason::error("invalid_child_spec: a task cannot be permanent");
    dynamic_supervisor::spec_type spec;
    spec.id = "task";
    spec.restart = options.restart;
    spec.shutdown = options.shutdown.value_or(shutdown_policy::timeout(std::chrono::seconds(5)));
    spec.start = [fn = std::move(fn)]() -> result<otpp::pid> {
      auto r = otpp::start_link<detail::task_server<R, F>>(fn, nullptr);
      if (!r) return r.error();
      return r->pid();
    };
    return otpp::start_child(s_, std::move(spec));
  }

  /// Task.Supervisor.async: runs `fn()` under the supervisor and linked to
  /// the calling process (nothing is linked from a plain thread). Throws
  /// exit_error if the supervisor refuses or is gone.
  template <class F>
    requires std::invocable<F&>
  [[nodiscard]] task<detail::task_result_t<F>> async(F fn, std::optional<shutdown_policy> shutdown = {}) const {
    return start_task(std::move(fn), otpp::self(), shutdown, "otpp::task_supervisor::async");
  }

  /// Task.Supervisor.async_nolink: as async, but not linked to the caller:
  /// its crash is the exit reason that await throws and yield returns, and
  /// the caller lives on; the caller's death does not stop it.
  template <class F>
    requires std::invocable<F&>
  [[nodiscard]] task<detail::task_result_t<F>> async_nolink(F fn, std::optional<shutdown_policy> shutdown = {}) const {
    return start_task(std::move(fn), otpp::pid{}, shutdown, "otpp::task_supervisor::async_nolink");
  }

  /// Task.Supervisor.async_stream: as otpp::async_stream (crashes and
  /// lifetimes as if linked to the caller), each task a child of this
  /// supervisor.
  template <class Range, class F>
    requires std::invocable<F&, detail::stream_item_t<Range>&&>
  [[nodiscard]] task_stream<Range, F, detail::supervised_start> async_stream(Range&& range, F fn,
                                                                            async_stream_options options = {}) const;
  /// Task.Supervisor.async_stream_nolink: as async_stream, but a crash is
  /// always an outcome, error(reason). The tasks still die with the stream.
  template <class Range, class F>
    requires std::invocable<F&, detail::stream_item_t<Range>&&>
  [[nodiscard]] task_stream<Range, F, detail::supervised_start> async_stream_nolink(
      Range&& range, F fn, async_stream_options options = {}) const;

  /// The running tasks' pids (Task.Supervisor.children).
  [[nodiscard]] result<std::vector<otpp::pid>> children() const {
    auto r = otpp::which_children(s_);
    if (!r) return r.error();
    std::vector<otpp::pid> out;
    out.reserve(r->size());
    for (auto& c : *r)
      if (c.process) out.push_back(std::move(c.process));
    return out;
  }

  /// Stops a task by its shutdown policy (Task.Supervisor.terminate_child);
  /// error("not_found") if it is not a running child.
  result<void> terminate_child(const otpp::pid& task) const { return otpp::terminate_child(s_, task); }

  /// The supervisor's pid.
  [[nodiscard]] const otpp::pid& pid() const noexcept { return s_.pid(); }
  /// The typed server handle underneath.
  [[nodiscard]] const server<dynamic_supervisor>& server_handle() const noexcept { return s_; }
  /// False for an empty handle.
  explicit operator bool() const noexcept { return static_cast<bool>(s_); }

 private:
  static result<task_supervisor> adopt(result<server<dynamic_supervisor>> r) {
    if (!r) return r.error();
    return task_supervisor{std::move(r).value()};
  }

  template <class F>
  task<detail::task_result_t<F>> start_task(F fn, otpp::pid owner, std::optional<shutdown_policy> shutdown,
                                            const char* operation) const {
    using R = detail::task_result_t<F>;
    // A spec's start must be copyable; the function need not be. It is
    // moved out once: the child is temporary, never started again.
    struct once {
      F fn;
      detail::reply_slot<R>* slot;
    };
    auto* slot = detail::reply_slot<R>::make();  // two references: the handle's and the spec's
    auto pending = std::make_shared<once>(once{std::move(fn), slot});
    dynamic_supervisor::spec_type spec;
    spec.id = "task";
    spec.restart = restart_type::temporary;
    spec.shutdown = shutdown.value_or(shutdown_policy::timeout(std::chrono::seconds(5)));
    spec.start = [pending, owner = std::move(owner)]() -> result<otpp::pid> {
      auto r = otpp::start_link<detail::task_server<R, F>>(std::move(pending->fn), pending->slot, owner);
      if (!r) return r.error();
      return r->pid();
    };
    result<otpp::pid> r = otpp::start_child(s_, std::move(spec));
    slot->release();  // the spec's: the task, if it started, holds its own
    if (!r || !*r) {
      slot->release();
      throw exit_error{r ? exit_reason::error("ignore") : r.error(), operation};
    }
    return detail::task_access::make<R>(std::move(*r), slot);
  }

  server<dynamic_supervisor> s_;
};

namespace detail {
/// How a stream under a task supervisor starts its tasks: unlinked (the
/// stream stands in for the link), with its own copy of the handle.
struct supervised_start {
  task_supervisor sup;
  bool linked;
  [[nodiscard]] bool links_caller() const noexcept { return linked; }
  template <class Job>
  auto operator()(Job j) const {
    return sup.async_nolink(std::move(j));
  }
};
}  // namespace detail

template <class Range, class F>
  requires std::invocable<F&, detail::stream_item_t<Range>&&>
task_stream<Range, F, detail::supervised_start> task_supervisor::async_stream(Range&& range, F fn,
                                                                             async_stream_options options) const {
  return {std::forward<Range>(range), std::move(fn), options, detail::supervised_start{*this, true}};
}

template <class Range, class F>
  requires std::invocable<F&, detail::stream_item_t<Range>&&>
task_stream<Range, F, detail::supervised_start> task_supervisor::async_stream_nolink(Range&& range, F fn,
                                                                                    async_stream_options options) const {
  return {std::forward<Range>(range), std::move(fn), options, detail::supervised_start{*this, false}};
}

}  // namespace otpp
