#pragma once
// Timers: messages delivered later (Process.send_after, :timer.send_interval).
//
//   auto t = otpp::send_after(self(), tick{}, 100ms);   // handle_info(tick) in 100 ms
//   if (auto left = otpp::cancel_timer(t)) ...         // cancelled with *left to go
//   auto every = otpp::send_interval(self(), poll{}, 1s);
//   otpp::cancel_timer(every);                          // stops the interval
//
// Semantics follow Erlang: a timer never delivers synchronously, even with a
// zero delay (other messages may arrive first). A timer to a pid is cancelled
// when that process exits (nothing is delivered; cancel_timer and read_timer
// answer nothing). A timer to a name resolves the name when it fires and is
// dropped if nobody holds it then. An interval runs at a fixed rate (each
// delivery is due one period after the previous one's deadline, so lateness
// does not accumulate; missed periods are delivered at once) and stops when
// its destination exits, or, for a name, when the process that started it
// exits. Cancelling is exact: once cancel_timer has returned, the timer
// delivers nothing more; a message it already delivered stays delivered.
//
// Resolution is 1 ms; a timer never fires early. A timer belongs to its
// destination's runtime (a timer to a name: the calling process's runtime,
// else the default one) and follows that runtime's clock
// (runtime_config::clock), which tests replace with
// otpp::testing::virtual_clock. When the runtime shuts down, its pending
// timers are cancelled; their refs stay safe to use.

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "detail/name_table.hpp"
#include "detail/runtime_core.hpp"
#include "detail/timer_service.hpp"
#include "gen_server.hpp"
#include "log.hpp"
#include "process.hpp"
#include "runtime.hpp"

namespace otpp {

/// Now on the clock timers follow: the calling process's runtime's (virtual
/// in tests that give the runtime a virtual_clock), or the default runtime's
/// from a plain thread (Erlang's monotonic_time). Use it for deadlines and
/// windows that must agree with send_after and set_timeout.
[[nodiscard]] inline std::chrono::steady_clock::time_point monotonic_time() {
  return std::chrono::steady_clock::time_point{std::chrono::nanoseconds(detail::current_core().timers().now_ns())};
}

class timer_ref;

namespace detail {
struct timer_access;
}

/// A handle to one timer (one-shot or interval), for cancel_timer and
/// read_timer. Copies name the same timer; an empty ref names none. Dropping
/// every ref does not cancel the timer.
class timer_ref {
 public:
  timer_ref() noexcept = default;
  /// False for an empty ref.
  explicit operator bool() const noexcept { return static_cast<bool>(t_); }
  /// Whether both name the same timer.
  friend bool operator==(const timer_ref& a, const timer_ref& b) noexcept { return a.t_ == b.t_; }

 private:
  friend struct detail::timer_access;
  explicit timer_ref(detail::timer_node* t) noexcept : t_{detail::counted<detail::timer_node>::adopt(t)} {}
  detail::counted<detail::timer_node> t_;
};

namespace detail {

struct timer_access {
  static timer_ref adopt(timer_node* t) noexcept { return timer_ref{t}; }
  static timer_node* get(const timer_ref& r) noexcept { return r.t_.get(); }
};

struct named_target {
  std::string name;
  timer_service* service = nullptr;  // set by start_timer (a pid target's comes from the process)
};
struct pid_target {};

/// Nodes the runtime sends itself declare `runtime_message`: a bounded
/// mailbox never refuses them.
template <class Node>
concept runtime_message = Node::runtime_message;

/// A timer carrying a message of type M, delivered as a Node (typed
/// info_node for a server<Impl>, untyped_node for a pid or a name); an
/// Interval one repeats.
template <class Node, class M, class Target, bool Interval>
struct timer_msg final : std::conditional_t<Interval, interval_timer_node, timer_node> {
  template <class U>
  explicit timer_msg(U&& m, Target t) : payload{std::forward<U>(m)}, target{std::move(t)} {
    this->kind = timer_kind_of<timer_msg>();
  }
  M payload;
  [[no_unique_address]] Target target;

  static timer_delivery do_deliver(timer_node* t, bool last) noexcept {
    auto* self = static_cast<timer_msg*>(t);
    process_base* p = self->dest;
    if constexpr (!std::is_same_v<Target, pid_target>) {
      p = name_table::instance().find(self->target.name);
      if (p == nullptr) return timer_delivery::delivered;  // nobody holds the name now: dropped
    }
    const timer_delivery outcome = make_and_offer(*self, *p, last);
    if constexpr (!std::is_same_v<Target, pid_target>) {
      p->release();
      return outcome == timer_delivery::gone ? timer_delivery::delivered : outcome;  // the name may be held again
    } else {
      return outcome;
    }
  }
  // The node's memory is had before the payload is touched: without it the
  // payload is whole for the next tick's try; so it is when an interval's
  // copy runs out of memory. Anything else the payload's move or copy
  // throws drops this message (logged).
  static timer_delivery make_and_offer(timer_msg& self, process_base& p, bool last) noexcept {
    static_assert(alignof(Node) <= pool_granule, "over-aligned message types are not supported yet");
    if (!last && !std::is_copy_constructible_v<M>) return timer_delivery::delivered;
    void* m = nullptr;
    try {
      m = pool_allocate(sizeof(Node));
    } catch (...) {
      return timer_delivery::no_memory;
    }
    message_node* n = nullptr;
    try {
      if (last) {
        n = ::new (m) Node(std::move(self.payload));
      } else if constexpr (std::is_copy_constructible_v<M>) {
        n = ::new (m) Node(std::as_const(self.payload));  // an interval keeps its copy
      }
    } catch (const std::bad_alloc&) {
      pool_deallocate(m, sizeof(Node));
      if (!last) return timer_delivery::no_memory;
      log_rt(log_level::error, "otpp: a timer message of type {} could not be built and was dropped", type_name<M>());
      return timer_delivery::delivered;
    } catch (...) {
      pool_deallocate(m, sizeof(Node));
      log_rt(log_level::error, "otpp: a timer message of type {} could not be built and was dropped", type_name<M>());
      return timer_delivery::delivered;
    }
    bool alive = true;
    if constexpr (runtime_message<Node>) {
      alive = p.enqueue(n);  // the runtime's own (a state machine's timeout): never refused
    } else {
      alive = p.offer(n, false) != offer_result::dead;  // a user's: a full bounded mailbox drops it
    }
    return alive ? timer_delivery::delivered : timer_delivery::gone;
  }
  static void do_destroy(timer_node* t) noexcept { free_node(static_cast<timer_msg*>(t)); }
  static timer_service* do_service(const timer_node* t) noexcept {
    if constexpr (std::is_same_v<Target, pid_target>) {
      return &t->dest->rt()->timers();  // set on the destination's runtime, which the reference keeps
    } else {
      return static_cast<const timer_msg*>(t)->target.service;
    }
  }
  static constexpr timer_ops table{&do_deliver, &do_destroy, &do_service};
};

// Far enough to mean "never" without overflowing the clock.
inline constexpr std::chrono::nanoseconds max_timer_delay = std::chrono::hours(24 * 365 * 100);

inline std::int64_t clamp_delay(std::chrono::steady_clock::duration d) noexcept {
  if (d <= std::chrono::steady_clock::duration::zero()) return 0;
  if (d >= max_timer_delay) return max_timer_delay.count();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

/// A one-shot timer (period 0), or with Interval one every `period` ns.
template <class Node, class M, bool Interval = false, class Target, class U>
timer_ref start_timer(runtime_core& rt, process_base* dest, U&& msg, std::chrono::steady_clock::duration delay,
                      std::int64_t period, Target target) {
  timer_service& svc = rt.timers();
  auto* t = make_node<timer_msg<Node, M, Target, Interval>>(std::forward<U>(msg), std::move(target));
  if constexpr (!std::is_same_v<Target, pid_target>) t->target.service = &svc;
  if constexpr (Interval) {
    t->every = period;
    if (dest == nullptr) dest = tls().current;  // an interval to a name stops with its setter
  } else {
    (void)period;
  }
  if (dest) {
    dest->add_ref();
    t->dest = dest;
  }
  timer_ref ref = timer_access::adopt(t);
  if constexpr (Interval) {
    t->deadline.store(svc.now_ns() + clamp_delay(delay), std::memory_order_relaxed);
    svc.schedule(t, timer_inbox(svc));
  } else {
    svc.schedule_after(t, clamp_delay(delay), timer_inbox(svc));
  }
  return ref;
}

inline std::int64_t checked_period(std::chrono::steady_clock::duration period) {
  if (period <= std::chrono::steady_clock::duration::zero())
    throw std::invalid_argument("otpp::send_interval: the period must be positive");
  return clamp_delay(period);
}

}  // namespace detail

/// Sends `msg` to `dest`'s handle_info after `delay`, matched by type at run
/// time as otpp::send does. Returns a ref for cancel_timer / read_timer (empty
/// if `dest` is empty or already gone: nothing will be delivered).
template <class Msg>
timer_ref send_after(const pid& dest, Msg&& msg, std::chrono::steady_clock::duration delay) {
  using M = std::remove_cvref_t<Msg>;
  detail::process_base* p = detail::pid_access::get(dest);
  if (p == nullptr || !p->alive()) return {};
  return detail::start_timer<detail::untyped_node<M>, M>(*p->rt(), p, std::forward<Msg>(msg), delay, 0,
                                                         detail::pid_target{});
}

/// Sends `msg` to a gen_server's handle_info(M) after `delay`, dispatched at
/// compile time.
template <class Impl, class Msg>
timer_ref send_after(const server<Impl>& dest, Msg&& msg, std::chrono::steady_clock::duration delay) {
  using M = std::remove_cvref_t<Msg>;
  if constexpr (handles_info<Impl, M>) {
    detail::process_base* p = detail::pid_access::get(dest.pid());
    if (p == nullptr || !p->alive()) return {};
    return detail::start_timer<detail::info_node<Impl, M>, M>(*p->rt(), p, std::forward<Msg>(msg), delay, 0,
                                                              detail::pid_target{});
  } else if constexpr (detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::send_after: no state of this gen_statem takes this message type: give a state a public "
                  "handle_event(State&, otpp::info_event, const Msg&)");
    return {};
  } else {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::send_after: the server has no handle_info overload for this message type");
    return {};
  }
}

/// Sends `msg` after `delay` to whoever holds the registered name `name`
/// then; dropped if nobody does.
template <class Msg>
timer_ref send_after(std::string_view name, Msg&& msg, std::chrono::steady_clock::duration delay) {
  using M = std::remove_cvref_t<Msg>;
  return detail::start_timer<detail::untyped_node<M>, M>(detail::current_core(), nullptr, std::forward<Msg>(msg),
                                                         delay, 0, detail::named_target{std::string{name}});
}

/// Sends a copy of `msg` to `dest` every `period` (the first after one
/// period) until cancelled or `dest` exits. Throws std::invalid_argument if
/// the period is not positive.
template <class Msg>
timer_ref send_interval(const pid& dest, Msg&& msg, std::chrono::steady_clock::duration period) {
  using M = std::remove_cvref_t<Msg>;
  static_assert(std::is_copy_constructible_v<M>, "otpp::send_interval: the message must be copyable");
  const std::int64_t ns = detail::checked_period(period);
  detail::process_base* p = detail::pid_access::get(dest);
  if (p == nullptr || !p->alive()) return {};
  return detail::start_timer<detail::untyped_node<M>, M, true>(*p->rt(), p, std::forward<Msg>(msg), period, ns,
                                                               detail::pid_target{});
}

/// send_interval to a gen_server, dispatched at compile time.
template <class Impl, class Msg>
timer_ref send_interval(const server<Impl>& dest, Msg&& msg, std::chrono::steady_clock::duration period) {
  using M = std::remove_cvref_t<Msg>;
  if constexpr (!handles_info<Impl, M> && detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::send_interval: no state of this gen_statem takes this message type: give a state a public "
                  "handle_event(State&, otpp::info_event, const Msg&)");
    return {};
  } else if constexpr (!handles_info<Impl, M>) {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::send_interval: the server has no handle_info overload for this message type");
    return {};
  } else if constexpr (!std::is_copy_constructible_v<M>) {
    static_assert(detail::always_false<Impl, M>, "otpp::send_interval: the message must be copyable");
    return {};
  } else {
    const std::int64_t ns = detail::checked_period(period);
    detail::process_base* p = detail::pid_access::get(dest.pid());
    if (p == nullptr || !p->alive()) return {};
    return detail::start_timer<detail::info_node<Impl, M>, M, true>(*p->rt(), p, std::forward<Msg>(msg), period, ns,
                                                                    detail::pid_target{});
  }
}

/// send_interval to a registered name, resolved at every delivery. Started
/// from a process, it stops when that process exits; from a plain thread,
/// only when cancelled.
template <class Msg>
timer_ref send_interval(std::string_view name, Msg&& msg, std::chrono::steady_clock::duration period) {
  using M = std::remove_cvref_t<Msg>;
  static_assert(std::is_copy_constructible_v<M>, "otpp::send_interval: the message must be copyable");
  const std::int64_t ns = detail::checked_period(period);
  return detail::start_timer<detail::untyped_node<M>, M, true>(detail::current_core(), nullptr, std::forward<Msg>(msg),
                                                               period, ns, detail::named_target{std::string{name}});
}

/// Cancels a timer. Returns the time that was left, or nothing if it had
/// already fired (a one-shot), was cancelled before, lost its destination, or
/// `t` is empty. After it returns the timer delivers nothing more.
inline std::optional<std::chrono::nanoseconds> cancel_timer(const timer_ref& t) noexcept {
  detail::timer_node* n = detail::timer_access::get(t);
  if (n == nullptr || !n->live()) return std::nullopt;
  detail::timer_service* svc = n->service();
  return svc->cancel(n, detail::timer_inbox(*svc));
}

/// The time left before the timer fires (an interval: its next delivery), or
/// nothing if it has fired, was cancelled or lost its destination.
[[nodiscard]] inline std::optional<std::chrono::nanoseconds> read_timer(const timer_ref& t) noexcept {
  detail::timer_node* n = detail::timer_access::get(t);
  if (n == nullptr || !n->live()) return std::nullopt;
  return n->service()->read(n);
}

}  // namespace otpp
