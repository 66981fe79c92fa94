#pragma once
// Introspection, like Erlang's sys and erlang:process_info: read or replace a
// server's state, count what it handled, list live processes, suspend and
// resume a process.
//
// Everything that reads a process's own data runs on that process (a system
// request handled between its messages, or inline when it is idle), so it
// sees a consistent state and never races the process; under a backlog it
// waits its turn, except info(), which goes ahead of the queued messages.
// peek() and is_hibernating() are the exception: they read
// what the process publishes, at once, without a message (Erlang's
// process_info(Pid, [status, message_queue_len])). A visitor or mutator
// that throws fails the request with the exception and leaves the process
// running, its state as the function left it.
//
//   auto n = otpp::sys::get_state(counter, [](const counter_impl& c) { return c.value(); });
//   otpp::sys::replace_state(counter, [](counter_impl& c) { c.reset(); });

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gen_server.hpp"
#include "process.hpp"
#include "runtime.hpp"

namespace otpp::sys {

/// What process_info reports (erlang:process_info/1, the useful part).
struct process_info {
  otpp::pid pid;                       ///< The process.
  std::string name;                    ///< Its registered name, or empty.
  std::string type;                    ///< The server's Impl type.
  std::size_t mailbox_length = 0;      ///< Messages waiting.
  std::uint64_t messages_handled = 0;  ///< Messages handled so far.
  otpp::pid parent;                    ///< The process that start_link-ed it (empty if none, or started from a thread).
  std::size_t memory = 0;              ///< Bytes it holds: the process object, its bookkeeping and queued messages (not what the Impl allocates).
  std::vector<otpp::pid> links;        ///< The processes linked to it.
  std::size_t monitored_by = 0;        ///< Monitors others hold on it.
  std::size_t monitoring = 0;          ///< Monitors it holds.
  bool trap_exit = false;              ///< Whether it traps exits.
  bool suspended = false;              ///< Whether sys::suspend holds it (its held messages count in mailbox_length).
};

/// What statistics reports (sys:statistics, the useful part).
struct statistics_t {
  std::uint64_t messages_handled = 0;  ///< Messages handled so far.
  std::size_t mailbox_length = 0;      ///< Messages waiting.
};

/// What peek() reads without a message.
struct process_snapshot {
  /// Where the process stands.
  enum class status_t : unsigned char {
    running,      ///< handling messages, or queued to run
    waiting,      ///< idle, its mailbox empty
    hibernating,  ///< asleep after hibernate() or hibernate_after, until a message
    exited,       ///< dead (or an empty pid)
  };
  status_t status = status_t::exited;  ///< See status_t.
  std::size_t message_queue_len = 0;   ///< Messages waiting (0 once exited).
  std::size_t mailbox_capacity = 0;    ///< A bounded mailbox's capacity (0: unbounded).
  std::uint64_t dropped = 0;           ///< Messages its bounded mailbox dropped or refused so far.
};

/// The status and queue length of a process, at once, from any thread,
/// without sending it anything: a snapshot, and never blocked by a backlog.
[[nodiscard]] inline process_snapshot peek(const pid& p) noexcept {
  otpp::detail::process_base* proc = otpp::detail::pid_access::get(p);
  process_snapshot out;
  if (proc == nullptr) return out;
  const std::uint32_t st = proc->run_state();
  if (const otpp::detail::mailbox_bound* b = proc->bound()) {
    out.mailbox_capacity = static_cast<std::size_t>(b->capacity);
    out.dropped = b->dropped.load(std::memory_order_relaxed);
  }
  if (st & otpp::detail::process_base::dead) return out;
  out.message_queue_len = proc->queue_length();
  if (proc->hibernating()) {
    out.status = process_snapshot::status_t::hibernating;
  } else if (st & otpp::detail::process_base::scheduled) {
    out.status = process_snapshot::status_t::running;
  } else {
    out.status = process_snapshot::status_t::waiting;
  }
  return out;
}

/// Whether the process is hibernating now (no message, and it does not wake it).
[[nodiscard]] inline bool is_hibernating(const pid& p) noexcept {
  return peek(p).status == process_snapshot::status_t::hibernating;
}

namespace detail {

using otpp::detail::msg_op;
using otpp::detail::process_base;

template <class R, class F>
struct exec_node final : otpp::detail::system_node {
  // A system message: sys requests reach a process whose handler awaits.
  exec_node(F f, otpp::detail::reply_slot<R>* s, bool jump_queue) : system_node{&handle, jump_queue}, fn_{std::move(f)}, slot{s} {}
  F fn_;
  otpp::detail::reply_slot<R>* slot;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason* why) noexcept {
    auto* self = static_cast<exec_node*>(n);
    if (op == msg_op::invoke) {
      try {
        if constexpr (std::is_void_v<R>) {
          self->fn_(p);
          self->slot->set_value();
        } else {
          self->slot->set_value(self->fn_(p));
        }
      } catch (...) {
        self->slot->fail(exit_reason::from_exception(std::current_exception()));
      }
    } else {
      self->slot->fail(*why);
    }
    self->slot->release();
    otpp::detail::free_node(self);
  }
};

/// Runs f(process_base&) on the process: inline if it is idle, else as a
/// system request in its mailbox.
template <class F>
auto run_on(const pid& target, F f, std::chrono::steady_clock::duration timeout, bool urgent = false)
    -> result<std::invoke_result_t<F&, process_base&>> {
  using R = std::invoke_result_t<F&, process_base&>;
  otpp::detail::check_timeout(timeout, "otpp::sys");
  process_base* p = otpp::detail::pid_access::get(target);
  if (p == nullptr) return exit_reason::noproc();
  if (p == otpp::detail::tls().current) {
    // Asking about oneself: run it right here.
    try {
      if constexpr (std::is_void_v<R>) {
        f(*p);
        return {};
      } else {
        return result<R>{std::in_place, f(*p)};
      }
    } catch (...) {
      return exit_reason::from_exception(std::current_exception());
    }
  }
  return otpp::detail::request<R>(
      p, timeout, otpp::detail::may_run_inline(timeout), false,
      [&] {
        result<R> out = exit_reason::noproc();
        otpp::detail::current_scope scope{p};
        try {
          if constexpr (std::is_void_v<R>) {
            f(*p);
            out = result<R>{};
          } else {
            out = result<R>{std::in_place, f(*p)};
          }
        } catch (...) {
          out = exit_reason::from_exception(std::current_exception());
        }
        p->release_inline();
        return out;
      },
      [&](otpp::detail::reply_slot<R>* slot) { return otpp::detail::make_node<exec_node<R, F>>(std::move(f), slot, urgent); });
}

template <class Impl>
Impl& impl(process_base& p) {
  return static_cast<otpp::detail::process_of<Impl>&>(p).impl();
}

}  // namespace detail

/// Runs `visit(const Impl&)` on the server and returns its result.
template <class Impl, class F>
[[nodiscard]] auto get_state(const server<Impl>& s, F visit, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return detail::run_on(
      s.pid(), [v = std::move(visit)](detail::process_base& p) mutable { return v(std::as_const(detail::impl<Impl>(p))); },
      timeout);
}

/// A copy of the server's state.
template <class Impl>
  requires std::is_copy_constructible_v<Impl>
[[nodiscard]] result<Impl> get_state(const server<Impl>& s, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return get_state(s, [](const Impl& i) { return i; }, timeout);
}

/// Runs `mutate(Impl&)` on the server (sys:replace_state).
template <class Impl, class F>
result<void> replace_state(const server<Impl>& s, F mutate, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return detail::run_on(
      s.pid(), [m = std::move(mutate)](detail::process_base& p) mutable { m(detail::impl<Impl>(p)); }, timeout);
}

/// Messages handled so far and messages waiting.
[[nodiscard]] inline result<statistics_t> statistics(const pid& p, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return detail::run_on(
      p, [](detail::process_base& proc) { return statistics_t{proc.messages_handled(), proc.mailbox_length()}; }, timeout);
}

/// Name, type, mailbox, links, monitors and trap_exit of a live process.
/// Like erlang:process_info it does not wait behind queued messages: it is
/// answered as soon as the handler running now (if any) returns.
[[nodiscard]] inline result<process_info> info(const pid& p, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return detail::run_on(
      p,
      [](detail::process_base& proc) {
        process_info i;
        i.pid = otpp::detail::pid_access::make(&proc);
        i.type = std::string{proc.type_name()};
        i.mailbox_length = proc.mailbox_length();
        i.messages_handled = proc.messages_handled();
        i.trap_exit = proc.traps_exits();
        i.suspended = proc.is_suspended();
        i.memory = proc.object_bytes() + proc.mailbox_length() * otpp::detail::pool_granule * 2;
        if (auto* c = proc.cold_if_any()) {
          i.memory += proc.cold_bytes();
          if (c->parent != nullptr) i.parent = otpp::detail::pid_access::make(c->parent);
          i.name = c->name;
          c->links.for_each([&](otpp::detail::process_base* l) { i.links.push_back(otpp::detail::pid_access::make(l)); });
          std::sort(i.links.begin(), i.links.end());
          i.monitored_by = c->mon ? c->mon->monitors.size() : 0;
          i.monitoring = c->mon ? c->mon->watching.size() : 0;
        }
        return i;
      },
      timeout, true);
}

/// sys:suspend: from its next message on, the process handles only
/// signals (exits, kills, links, monitors) and system requests (sys, stop);
/// everything else waits, in order, until resume. A handler running (or
/// awaiting) now finishes first. Calls to it wait and may time out, as in
/// OTP. Fails with noproc, timeout, calling_self (nothing but another
/// process could resume it), or the std::bad_alloc of a process that had
/// no memory for the place its held messages go.
inline result<void> suspend(const pid& p, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  if (p && otpp::detail::pid_access::get(p) == otpp::detail::tls().current) return exit_reason::calling_self();
  return detail::run_on(p, [](detail::process_base& proc) { proc.suspend(); }, timeout);
}

/// sys:resume: a suspended process handles what it held back, in order,
/// then the rest. Resuming one that is not suspended does nothing.
inline result<void> resume(const pid& p, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return detail::run_on(p, [](detail::process_base& proc) { proc.resume(); }, timeout);
}

/// A server's state as its fmt formatter writes it (a
/// fmt::formatter<Impl> specialization), read between two messages: what
/// the observer shows of a process. Nothing when Impl has no formatter (a
/// gen_statem without one: "state <its state's type>"); an error when the
/// process is gone, does not answer within `timeout`, or the
/// formatter throws.
[[nodiscard]] inline result<std::optional<std::string>> format_state(
    const pid& p, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return detail::run_on(
      p,
      [](detail::process_base& proc) -> std::optional<std::string> {
        std::string out;
        if (!proc.format_state(out)) return std::nullopt;
        return out;
      },
      timeout);
}

/// Every live process of `rt`, oldest first.
[[nodiscard]] inline std::vector<pid> processes(runtime& rt) {
  auto procs = otpp::detail::runtime_access::core(rt).live_processes();
  std::vector<pid> out;
  out.reserve(procs.size());
  for (auto* p : procs) {
    out.push_back(otpp::detail::pid_access::make(p));
    p->release();
  }
  return out;
}

/// Every live process of the default runtime.
[[nodiscard]] inline std::vector<pid> processes() { return processes(default_runtime()); }

}  // namespace otpp::sys
