#pragma once
// Calls that do not hold a thread while they wait.
//
// Inside a coroutine handler (one that returns otpp::async<T>),
//
//   otpp::async<reply> handle_call(query q) {
//     auto a = otpp::async_call(left_, part{q, 0});    // both requests are sent now
//     auto b = otpp::async_call(right_, part{q, 1});
//     co_return merge(co_await a, co_await b);          // the worker runs others meanwhile
//   }
//
// co_await suspends the process without its worker: the reply, the callee's
// exit reason (at once, if it dies), the timeout or noproc resumes it, on a
// worker, as the process's own turn. While a handler waits, the process
// handles no other message (gen_server:call's rule: they are held back, in
// order, until it finishes), but exit signals, kills, stop and sys requests
// still act: a waiting process can be stopped, and its own callers then
// fail at once with its exit reason.
//
// From a plain thread the same call is a handle: get() waits for the reply
// on that thread (never running the callee's handler), wait_for(d) waits
// without giving up.
//
// A coroutine handler takes its message by value: a reference would dangle
// once the handler first suspends.

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>

#include "async.hpp"
#include "detail/timer_service.hpp"
#include "gen_server.hpp"
#include "timer.hpp"

namespace otpp {

namespace detail {

/// The signal that resumes a process's suspended handler at `leaf`. Made
/// when the handler suspends, so that whoever ends the wait (a reply, a
/// timer) posts it without allocating.
struct wake_node final : message_node, slot_waker {
  wake_node(process_base* p, std::coroutine_handle<> h) noexcept : target{p}, leaf{h} {
    fn = &handle;
    wake = &post;
    target->add_ref();
  }
  process_base* target;  // a reference
  std::coroutine_handle<> leaf;

  static void post(slot_waker* w) noexcept {
    auto* self = static_cast<wake_node*>(w);
    self->target->enqueue_signal(self);
  }
  /// Frees a wake-up that was never posted.
  static void drop(wake_node* w) noexcept {
    process_base* target = w->target;
    free_node(w);
    target->release();
  }
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<wake_node*>(n);
    const std::coroutine_handle<> leaf = self->leaf;
    process_base* target = self->target;
    free_node(self);
    if (op == msg_op::invoke) p.resume_handler(leaf);
    target->release();  // never the last: the turn holds its own
  }
};

/// The process whose handler is co_awaiting; refuses a co_await outside one.
process_base& awaiting_process(const char* operation);

/// An awaited call's deadline: abandons the slot, and if that ended the wait,
/// wakes the process with `timeout`.
struct call_deadline final : timer_node {
  call_deadline(reply_slot_base* s, wake_node* w) noexcept : slot{s}, waker{w} {
    deliver = &do_deliver;
    destroy = &do_destroy;
    slot->add_ref();
  }
  reply_slot_base* slot;  // a reference
  wake_node* waker;       // touched only by whoever abandons the slot
  static bool do_deliver(timer_node* t, bool) noexcept {
    auto* self = static_cast<call_deadline*>(t);
    if (self->slot->abandon()) wake_node::post(self->waker);
    return true;
  }
  static void do_destroy(timer_node* t) noexcept {
    auto* self = static_cast<call_deadline*>(t);
    self->slot->release();
    free_node(self);
  }
};

/// sleep_for's timer: wakes the process when it fires.
struct sleep_timer final : timer_node {
  explicit sleep_timer(wake_node* w) noexcept : waker{w} {
    deliver = &do_deliver;
    destroy = &do_destroy;
  }
  wake_node* waker;
  static bool do_deliver(timer_node* t, bool) noexcept {
    wake_node::post(static_cast<sleep_timer*>(t)->waker);
    return true;
  }
  static void do_destroy(timer_node* t) noexcept { free_node(static_cast<sleep_timer*>(t)); }
};

/// Schedules `t` (whose one handle reference the caller keeps) `delay` from
/// now on the runtime's clock.
void arm_timer(runtime_core& rt, timer_node* t, steady::duration delay) noexcept;
/// Stops `t` if it has not fired and drops the caller's reference. True if
/// it was stopped before firing.
bool disarm_timer(runtime_core& rt, timer_node* t) noexcept;

/// Throws the exit_error of a failed async call, naming it like call does:
/// "otpp::async_call(<0.5.0> counter, counter::get, 5000 ms): timeout".
[[noreturn]] void throw_async_call_error(const exit_reason& reason, std::uint64_t target, std::string_view server_type,
                                         std::string_view request_type, steady::duration timeout);

struct pending_call_access;

}  // namespace detail

/// A call in flight (see async_call): co_await it in a coroutine handler, or
/// get() it from a plain thread. co_await gives the reply and throws
/// exit_error on failure (Throws, from async_call), or gives result<R>
/// (from async_try_call). Dropping it unanswered abandons the call: a late
/// reply is dropped. Move-only.
template <class R, bool Throws>
class [[nodiscard]] basic_pending_call {
 public:
  basic_pending_call(basic_pending_call&& o) noexcept
      : slot_{std::exchange(o.slot_, nullptr)},
        early_{std::move(o.early_)},
        deadline_{o.deadline_},
        timeout_{o.timeout_},
        target_{o.target_},
        server_type_{o.server_type_},
        request_type_{o.request_type_},
        wake_{std::exchange(o.wake_, nullptr)},
        timer_{std::exchange(o.timer_, nullptr)},
        rt_{o.rt_} {}
  basic_pending_call(const basic_pending_call&) = delete;
  basic_pending_call& operator=(const basic_pending_call&) = delete;
  basic_pending_call& operator=(basic_pending_call&&) = delete;
  ~basic_pending_call() {
    // Suspended when the frame went (the process is exiting): if this ends
    // the wait, no wake-up will come and its node is ours to free.
    if (wake_ && slot_->abandon()) detail::wake_node::drop(wake_);
    stop_timer();
    if (slot_) {
      (void)slot_->abandon();
      slot_->release();
    }
  }

  // -- in a coroutine handler ---------------------------------------------------
  /// (The coroutine protocol.) Ready at once if already answered.
  [[nodiscard]] bool await_ready() const noexcept { return slot_ == nullptr || slot_->resolved(); }
  /// (The coroutine protocol.) Suspends the process's handler until the
  /// answer, the callee's exit or the timeout.
  bool await_suspend(std::coroutine_handle<> h) {
    detail::process_base& self = detail::awaiting_process("otpp::async_call");
    auto* w = detail::make_node<detail::wake_node>(&self, h);
    if (!slot_->await(w)) {  // answered in the meantime
      detail::wake_node::drop(w);
      return false;
    }
    wake_ = w;
    if (timeout_ != std::chrono::steady_clock::duration::max()) {
      rt_ = self.rt();
      try {
        timer_ = detail::make_node<detail::call_deadline>(slot_, w);
      } catch (...) {
        // No memory for the deadline: give the wait up now, as a timeout would.
        if (slot_->abandon()) {
          wake_ = nullptr;
          detail::wake_node::drop(w);
          throw;
        }
        return true;  // answered meanwhile: the wake-up is on its way
      }
      detail::arm_timer(*rt_, timer_, timeout_);
    }
    return true;
  }
  /// (The coroutine protocol.) The reply; a failure throws exit_error
  /// naming the call (from async_call), or comes back as the error (from
  /// async_try_call).
  auto await_resume() {
    wake_ = nullptr;  // it resumed us, and freed itself
    stop_timer();
    if constexpr (Throws) {
      auto r = collect();
      if (!r) [[unlikely]]
        detail::throw_async_call_error(r.error(), target_, server_type_, request_type_, timeout_);
      if constexpr (std::is_void_v<R>) {
        return;
      } else {
        return std::move(r).value();
      }
    } else {
      return collect();
    }
  }

  // -- on a plain thread -----------------------------------------------------------
  /// Waits for the reply, the callee's exit or the call's timeout.
  [[nodiscard]] result<R> get() {
    if (early_) return *early_;
    const std::uint32_t st = slot_->wait_until(deadline_);
    (void)st;
    return collect();
  }
  /// Waits up to `d` without giving up on the call. True once answered.
  bool wait_for(std::chrono::steady_clock::duration d) noexcept {
    if (slot_ == nullptr) return true;
    return slot_->wait_for(detail::deadline_after(d));
  }

 private:
  friend struct detail::pending_call_access;
  explicit basic_pending_call(exit_reason early) : early_{std::move(early)} {}
  basic_pending_call(detail::reply_slot<R>* s, detail::steady::duration timeout, std::uint64_t target,
                     std::string_view server_type, std::string_view request_type) noexcept
      : slot_{s},
        deadline_{detail::deadline_after(timeout)},
        timeout_{timeout},
        target_{target},
        server_type_{server_type},
        request_type_{request_type} {}

  result<R> collect() {
    if (early_) return *early_;
    const std::uint32_t st = slot_->settled_state();
    if constexpr (std::is_void_v<R>) {
      if (st == detail::reply_slot_base::ready) return {};
    } else {
      if (st == detail::reply_slot_base::ready) return result<R>{std::in_place, slot_->take()};
    }
    if (st == detail::reply_slot_base::failed) return slot_->error();
    return exit_reason::timeout();
  }

  void stop_timer() noexcept {
    if (timer_) {
      (void)detail::disarm_timer(*rt_, timer_);
      timer_ = nullptr;
    }
  }

  detail::reply_slot<R>* slot_ = nullptr;
  std::optional<exit_reason> early_;  // failed before anything was sent
  detail::steady::time_point deadline_{};
  detail::steady::duration timeout_{};
  std::uint64_t target_ = 0;
  std::string_view server_type_;
  std::string_view request_type_;
  detail::wake_node* wake_ = nullptr;  // while suspended
  detail::timer_node* timer_ = nullptr;
  detail::runtime_core* rt_ = nullptr;
};

/// What async_call returns: co_await gives the reply, or throws exit_error.
template <class R>
using pending_call = basic_pending_call<R, true>;
/// What async_try_call returns: co_await gives result<R>.
template <class R>
using pending_try_call = basic_pending_call<R, false>;

namespace detail {

struct pending_call_access {
  template <class R, bool Throws>
  static basic_pending_call<R, Throws> failed(exit_reason why) {
    return basic_pending_call<R, Throws>{std::move(why)};
  }
  template <class R, bool Throws>
  static basic_pending_call<R, Throws> sent(reply_slot<R>* s, steady::duration timeout, std::uint64_t target,
                                            std::string_view server_type, std::string_view request_type) noexcept {
    return basic_pending_call<R, Throws>{s, timeout, target, server_type, request_type};
  }
};

template <bool Throws, class Impl, class Req>
auto send_call(const server<Impl>& s, Req&& req, steady::duration timeout) {
  using Q = std::remove_cvref_t<Req>;
  using R = call_reply_t<Impl, Q>;
  check_timeout(timeout, Throws ? "otpp::async_call" : "otpp::async_try_call");
  auto* p = pid_access::get(s.pid());
  if (p == nullptr || !p->alive()) return pending_call_access::failed<R, Throws>(exit_reason::noproc());
  if (p == tls.current) return pending_call_access::failed<R, Throws>(exit_reason::calling_self());
  auto* slot = reply_slot<R>::make();
  message_node* node;
  try {
    node = make_node<call_node<Impl, Q, R>>(std::forward<Req>(req), slot, tls.current);
  } catch (...) {
    slot->release();  // both references: nobody else ever saw it
    slot->release();
    throw;
  }
  p->enqueue(node);
  return pending_call_access::sent<R, Throws>(slot, timeout, p->id(), type_name<Impl>(), type_name<Q>());
}

/// co_await otpp::sleep_for(d).
class sleep_awaiter {
 public:
  explicit sleep_awaiter(steady::duration d) noexcept : delay_{d} {}
  sleep_awaiter(const sleep_awaiter&) = delete;
  sleep_awaiter& operator=(const sleep_awaiter&) = delete;
  ~sleep_awaiter() {
    // The frame went while asleep: if the timer never fires, its wake-up is ours.
    if (timer_ && disarm_timer(*rt_, timer_) && wake_) wake_node::drop(wake_);
  }
  [[nodiscard]] bool await_ready() const noexcept { return delay_ <= steady::duration::zero(); }
  void await_suspend(std::coroutine_handle<> h) {
    process_base& self = awaiting_process("otpp::sleep_for");
    auto* w = make_node<wake_node>(&self, h);
    try {
      timer_ = make_node<sleep_timer>(w);
    } catch (...) {
      wake_node::drop(w);
      throw;
    }
    wake_ = w;
    rt_ = self.rt();
    arm_timer(*rt_, timer_, delay_);
  }
  void await_resume() noexcept {
    wake_ = nullptr;  // it resumed us, and freed itself
    if (timer_) {
      (void)disarm_timer(*rt_, timer_);
      timer_ = nullptr;
    }
  }

 private:
  steady::duration delay_;
  wake_node* wake_ = nullptr;
  timer_node* timer_ = nullptr;
  runtime_core* rt_ = nullptr;
};

}  // namespace detail

/// Sends `req` to `s` now and returns the call in flight: `co_await` it in a
/// coroutine handler for the reply (a failure throws exit_error, as call
/// does), or get() it on a plain thread. The timeout counts from now;
/// reaching it abandons the call (a late reply is dropped). noproc for a
/// dead or empty handle, calling_self for a call to the calling process. A
/// negative timeout throws std::invalid_argument and sends nothing.
template <class Impl, class Req>
[[nodiscard]] auto async_call(const server<Impl>& s, Req&& req,
                              std::chrono::steady_clock::duration timeout = default_call_timeout) {
  using Q = std::remove_cvref_t<Req>;
  static_assert(handles_call<Impl, Q>,
                "otpp::async_call: the server has no handle_call overload for this request type");
  return detail::send_call<true>(s, std::forward<Req>(req), timeout);
}

/// Like async_call, but co_await gives result<R>: the reply or the reason
/// the call failed, without throwing.
template <class Impl, class Req>
[[nodiscard]] auto async_try_call(const server<Impl>& s, Req&& req,
                                  std::chrono::steady_clock::duration timeout = default_call_timeout) {
  using Q = std::remove_cvref_t<Req>;
  static_assert(handles_call<Impl, Q>,
                "otpp::async_try_call: the server has no handle_call overload for this request type");
  return detail::send_call<false>(s, std::forward<Req>(req), timeout);
}

/// `co_await otpp::sleep_for(d)` in a coroutine handler: resumes after `d`
/// on the runtime's clock (the virtual one in tests), holding no thread.
/// The process handles no other message meanwhile, as in any wait.
[[nodiscard]] inline detail::sleep_awaiter sleep_for(std::chrono::steady_clock::duration d) noexcept {
  return detail::sleep_awaiter{d};
}

}  // namespace otpp

#if OTPP_HEADER_ONLY
#include "detail/async_call-inl.hpp"
#endif
