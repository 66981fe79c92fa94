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
// without giving up, and then(fn) runs fn on the outcome in a process.
//
// A coroutine handler takes its message by value: a reference would dangle
// once the handler first suspends.
//
// GCC 12 miscompiles an aggregate temporary holding a std::string inside a
// co_await expression (`co_await async_call(s, get{key})`): it is copied
// bytewise and the request frees memory it does not own. With GCC, build
// such a request in its own statement and move it in (docs/semantics.md).

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <coroutine>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <tuple>
#include <utility>
#include <vector>

#include "async.hpp"
#include "gen_server.hpp"
#include "timer.hpp"

namespace otpp {

namespace detail {

/// The process whose handler is co_awaiting; refuses a co_await outside one.
process_base& awaiting_process(const char* operation);

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
  /// Takes over the call in flight.
  basic_pending_call(basic_pending_call&& o) noexcept
      : slot_{std::exchange(o.slot_, nullptr)},
        early_{std::move(o.early_)},
        deadline_{o.deadline_},
        due_{o.due_},
        timeout_{o.timeout_},
        target_{o.target_},
        server_type_{o.server_type_},
        request_type_{o.request_type_},
        owner_{std::exchange(o.owner_, nullptr)},
        rt_{o.rt_},
        suspended_{std::exchange(o.suspended_, false)},
        borrowed_{o.borrowed_} {}
  basic_pending_call(const basic_pending_call&) = delete;
  basic_pending_call& operator=(const basic_pending_call&) = delete;
  basic_pending_call& operator=(basic_pending_call&&) = delete;
  ~basic_pending_call() {
    // Suspended when the frame went (the process is exiting): end the wait;
    // if a reply is being posted right now, let it finish (the process must
    // outlive the post; the wake-up is then discarded with the mailbox).
    if (suspended_ && !slot_->abandon()) (void)slot_->settled_state();
    if (owner_) owner_->remove_deadline(slot_, nullptr);
    // A borrowed slot is its owner's to give up: dropped unawaited, the
    // wait leaves the answer to the owner (a task handle's await).
    if (slot_ && !borrowed_) {
      (void)slot_->abandon();
      slot_->release_caller();
    }
  }

  // -- in a coroutine handler ---------------------------------------------------
  /// (The coroutine protocol.) Ready at once if already answered.
  [[nodiscard]] bool await_ready() const noexcept { return slot_ == nullptr || slot_->resolved(); }
  /// (The coroutine protocol.) Suspends the process's handler until the
  /// answer, the callee's exit or the timeout.
  bool await_suspend(std::coroutine_handle<> h) {
    detail::process_base& self = detail::awaiting_process("otpp::async_call");
    detail::slot_waker* w = self.resume_waker(h);
    if (due_.ns == detail::no_deadline_ns && deadline_ != detail::steady::time_point{} &&
        timeout_ != detail::steady::duration::max()) {
      // Sent from a thread, awaited in a process (then()): what is left of
      // its timeout becomes a deadline on the runtime's clock.
      const auto now = detail::steady::now();
      const auto left = deadline_ > now ? deadline_ - now : detail::steady::duration::zero();
      due_ = {detail::timer_due_after_ns(*self.rt(), detail::clamp_delay(left)), 0};
    }
    if (due_.ns != detail::no_deadline_ns) {
      self.add_deadline(due_, slot_, w);
      owner_ = &self;
    }
    if (!slot_->await(w)) {  // answered in the meantime
      if (owner_) {
        owner_->remove_deadline(slot_, nullptr);
        owner_ = nullptr;
      }
      return false;
    }
    suspended_ = true;
    return true;
  }
  /// (The coroutine protocol.) The reply; a failure throws exit_error
  /// naming the call (from async_call), or comes back as the error (from
  /// async_try_call).
  auto await_resume() {
    suspended_ = false;
    if (owner_) {
      owner_->remove_deadline(slot_, nullptr);
      owner_ = nullptr;
    }
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
    if (deadline_ == detail::steady::time_point{}) deadline_ = detail::deadline_after(timeout_);  // sent from a process
    (void)slot_->wait_until(deadline_);
    return collect();
  }
  /// Waits up to `d` without giving up on the call. True once answered.
  bool wait_for(std::chrono::steady_clock::duration d) noexcept {
    if (slot_ == nullptr) return true;
    return slot_->wait_for(detail::deadline_after(d));
  }
  /// The continuation form: once the call is over, `fn(x)` runs in a new
  /// process of the callee's runtime, never on this thread; x is what
  /// co_await gives (the reply, or result<R> from async_try_call; with
  /// async_call a failure is that process's exit, exit_error). Returns the
  /// process as an otpp::task of fn's result: await it, or drop it. The
  /// call keeps its own timeout. Defined in <otpp/task.hpp>.
  template <class F>
  [[nodiscard]] auto then(F fn) &&;

 private:
  friend struct detail::pending_call_access;
  explicit basic_pending_call(exit_reason early) : early_{std::move(early)} {}
  basic_pending_call(const detail::process_base* caller, detail::reply_slot<R>* s, detail::steady::duration timeout,
                     detail::wait_due due, std::uint64_t target, std::string_view server_type,
                     std::string_view request_type, detail::runtime_core* rt) noexcept
      : slot_{s},
        // Read the steady clock only for a thread, which will wait in get().
        deadline_{caller == nullptr ? detail::deadline_after(timeout) : detail::steady::time_point{}},
        due_{due},
        timeout_{timeout},
        target_{target},
        server_type_{server_type},
        request_type_{request_type},
        rt_{rt} {}

  result<R> collect() {
    if (early_) return *early_;
    return detail::collect(slot_, slot_->settled_state());
  }

  detail::reply_slot<R>* slot_ = nullptr;
  std::optional<exit_reason> early_;  // failed before anything was sent
  detail::steady::time_point deadline_{};  // for get(), on the steady clock (set when sent from a thread)
  detail::wait_due due_;                  // for co_await, on the runtime's clock
  detail::steady::duration timeout_{};
  std::uint64_t target_ = 0;
  std::string_view server_type_;
  std::string_view request_type_;
  detail::process_base* owner_ = nullptr;  // whose deadline list has ours
  detail::runtime_core* rt_ = nullptr;     // the callee's (null if nothing was sent)
  bool suspended_ = false;
  bool borrowed_ = false;  // the slot's reference is its owner's, who outlives the wait (a task's)
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
  /// When a call sent now by `caller` (null: a plain thread) with `timeout`
  /// falls due on the caller's runtime clock (virtual in tests), for its
  /// co_await; wait_due{} (no_deadline_ns) if it never does. Read before the request
  /// leaves, so that a reply cannot come before the clock it races.
  [[gnu::always_inline]] static wait_due due(const process_base* caller, steady::duration timeout) {
    return caller != nullptr && timeout != steady::duration::max() ? call_due_after(*caller->rt(), clamp_delay(timeout))
                                                                   : wait_due{};
  }
  /// A call sent by `caller` (null: a plain thread, tls().current).
  template <class R, bool Throws>
  static basic_pending_call<R, Throws> sent(const process_base* caller, reply_slot<R>* s, steady::duration timeout,
                                            wait_due due, std::uint64_t target, std::string_view server_type,
                                            std::string_view request_type, runtime_core* rt = nullptr) noexcept {
    return basic_pending_call<R, Throws>{caller, s, timeout, due, target, server_type, request_type, rt};
  }
  /// A wait on a slot whose reference stays with its owner, who outlives
  /// the wait (a task handle awaited in its own async_await): two locked
  /// reference counts fewer than sent.
  template <class R, bool Throws>
  static basic_pending_call<R, Throws> borrowed(const process_base* caller, reply_slot<R>* s, steady::duration timeout,
                                                wait_due due, std::uint64_t target, std::string_view server_type,
                                                std::string_view request_type) noexcept {
    basic_pending_call<R, Throws> c{caller, s, timeout, due, target, server_type, request_type, nullptr};
    c.borrowed_ = true;
    return c;
  }
  /// The runtime a continuation runs in: the callee's, else the caller's or the default.
  template <class R, bool Throws>
  static runtime_core* runtime_of(const basic_pending_call<R, Throws>& c) noexcept {
    return c.rt_;
  }
  /// The slot (null if the call failed before it was sent) and deadline.
  template <class R, bool Throws>
  static reply_slot_base* slot(const basic_pending_call<R, Throws>& c) noexcept {
    return c.slot_;
  }
  template <class R, bool Throws>
  static wait_due due(const basic_pending_call<R, Throws>& c) noexcept {
    return c.due_;
  }
};

/// co_await when_any(...): waits on several slots at once; the first to be
/// resolved (or to reach its deadline) resumes the handler, once.
class when_any_awaiter {
 public:
  struct entry {
    reply_slot_base* slot = nullptr;  // null: failed before it was sent (ready at once)
    wait_due due;
  };
  explicit when_any_awaiter(std::vector<entry> calls) : calls_{std::move(calls)}, wakers_(calls_.size()) {
    for (auto& w : wakers_) {
      w.owner = this;
      w.wake = &on_wake;
    }
  }
  // Movable until awaited (otpp::reentrant takes it in): the wakers point
  // at their owner, so the new one gets its own.
  when_any_awaiter(when_any_awaiter&& o) : when_any_awaiter{std::move(o.calls_)} {}
  when_any_awaiter(const when_any_awaiter&) = delete;
  when_any_awaiter& operator=(const when_any_awaiter&) = delete;
  ~when_any_awaiter() {
    if (suspended_) detach();  // the frame went while waiting (the process is exiting)
  }

  [[nodiscard]] bool await_ready() noexcept {
    for (std::size_t i = 0; i < calls_.size(); ++i) {
      if (calls_[i].slot == nullptr || !calls_[i].slot->open()) {
        winner_ = i;
        return true;
      }
    }
    return calls_.empty();
  }
  bool await_suspend(std::coroutine_handle<> h) {
    process_base& self = awaiting_process("otpp::when_any");
    owner_ = &self;
    resume_ = self.resume_waker(h);
    for (std::size_t i = 0; i < calls_.size(); ++i) {
      if (calls_[i].due.ns == no_deadline_ns) continue;
      try {
        self.add_deadline(calls_[i].due, calls_[i].slot, &wakers_[i]);
      } catch (...) {
        remove_deadlines(i);
        throw;
      }
    }
    for (std::size_t i = 0; i < calls_.size(); ++i) {
      if (!calls_[i].slot->await(&wakers_[i])) {  // answered meanwhile
        awaited_ = i;
        if (fired_.exchange(true, std::memory_order_acq_rel)) {
          // An earlier one was answered just now and its wake-up is on its
          // way: suspend and take it (a stale one would resume a later wait).
          suspended_ = true;
          return true;
        }
        detach();
        winner_ = i;
        return false;
      }
    }
    awaited_ = calls_.size();
    suspended_ = true;
    return true;
  }
  /// The index of a call that is over (the first found, in argument order).
  std::size_t await_resume() noexcept {
    if (suspended_) {
      suspended_ = false;
      detach();
      for (std::size_t i = 0; i < calls_.size(); ++i) {
        if (!calls_[i].slot->open()) {
          winner_ = i;
          break;
        }
      }
    }
    return winner_;
  }

 private:
  struct waker : slot_waker {
    when_any_awaiter* owner = nullptr;
  };
  static void on_wake(slot_waker* w) noexcept {
    when_any_awaiter* self = static_cast<waker*>(w)->owner;
    if (!self->fired_.exchange(true, std::memory_order_acq_rel)) self->resume_->wake(self->resume_);
  }
  // The slots awaited so far go back to pending (those being answered are
  // waited for, so no resolver touches a waker after this), and their
  // deadlines are dropped.
  void detach() noexcept {
    for (std::size_t i = 0; i < awaited_; ++i) (void)calls_[i].slot->unawait();
    remove_deadlines(calls_.size());
  }
  void remove_deadlines(std::size_t upto) noexcept {
    for (std::size_t i = 0; i < upto; ++i)
      if (calls_[i].due.ns != no_deadline_ns) (void)owner_->remove_deadline(calls_[i].slot, nullptr);
  }

  std::vector<entry> calls_;
  std::vector<waker> wakers_;
  std::atomic<bool> fired_{false};
  process_base* owner_ = nullptr;
  slot_waker* resume_ = nullptr;
  std::size_t awaited_ = 0;  // slots [0, awaited_) have one of our wakers
  std::size_t winner_ = 0;
  bool suspended_ = false;
};

template <bool Throws, class Impl, class Req>
auto send_call(const server<Impl>& s, Req&& req, steady::duration timeout) {
  using Q = std::remove_cvref_t<Req>;
  using R = call_reply_t<Impl, Q>;
  check_timeout(timeout, Throws ? "otpp::async_call" : "otpp::async_try_call");
  auto* p = pid_access::get(s.pid());
  if (p == nullptr || !p->alive()) return pending_call_access::failed<R, Throws>(exit_reason::noproc());
  process_base* const self = tls().current;
  if (p == self) return pending_call_access::failed<R, Throws>(exit_reason::calling_self());
  const auto [slot, node] = make_call<Impl, Q, R>(std::forward<Req>(req), self);
  const wait_due due = pending_call_access::due(self, timeout);
  (void)p->offer(node, true);  // a full bounded mailbox fails it at once (mailbox_full)
  return pending_call_access::sent<R, Throws>(self, slot, timeout, due, p->id(), type_name<Impl>(), type_name<Q>(), p->rt());
}

/// co_await otpp::sleep_for(d).
class sleep_awaiter {
 public:
  explicit sleep_awaiter(steady::duration d) noexcept : delay_{d} {}
  // Movable until awaited (otpp::reentrant takes it in).
  sleep_awaiter(sleep_awaiter&& o) noexcept
      : delay_{o.delay_}, waker_{std::exchange(o.waker_, nullptr)}, owner_{std::exchange(o.owner_, nullptr)} {}
  sleep_awaiter(const sleep_awaiter&) = delete;
  sleep_awaiter& operator=(const sleep_awaiter&) = delete;
  ~sleep_awaiter() {
    // The frame went while asleep: a deadline still registered goes with it.
    if (waker_) (void)owner_->remove_deadline(nullptr, waker_);
  }
  [[nodiscard]] bool await_ready() const noexcept { return delay_ <= steady::duration::zero(); }
  void await_suspend(std::coroutine_handle<> h) {
    process_base& self = awaiting_process("otpp::sleep_for");
    slot_waker* w = self.resume_waker(h);
    self.add_deadline(timer_due_after_ns(*self.rt(), clamp_delay(delay_)), nullptr, w);
    waker_ = w;
    owner_ = &self;
  }
  void await_resume() noexcept { waker_ = nullptr; }  // its deadline came, and is gone

 private:
  steady::duration delay_;
  slot_waker* waker_ = nullptr;
  process_base* owner_ = nullptr;
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
  if constexpr (handles_call<Impl, Q>) {
    return detail::send_call<true>(s, std::forward<Req>(req), timeout);
  } else if constexpr (detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, Q>,
                  "otpp::async_call: no state of this gen_statem takes this request type: give a state a public "
                  "handle_event(State&, otpp::call_event<R>, const Req&), and Req a `using reply_type = R;`");
    return detail::pending_call_access::failed<detail::no_reply, true>(exit_reason::noproc());
  } else {
    static_assert(detail::always_false<Impl, Q>,
                  "otpp::async_call: the server has no handle_call overload for this request type");
    return detail::pending_call_access::failed<detail::no_reply, true>(exit_reason::noproc());
  }
}

/// Like async_call, but co_await gives result<R>: the reply or the reason
/// the call failed, without throwing.
template <class Impl, class Req>
[[nodiscard]] auto async_try_call(const server<Impl>& s, Req&& req,
                                  std::chrono::steady_clock::duration timeout = default_call_timeout) {
  using Q = std::remove_cvref_t<Req>;
  if constexpr (handles_call<Impl, Q>) {
    return detail::send_call<false>(s, std::forward<Req>(req), timeout);
  } else if constexpr (detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, Q>,
                  "otpp::async_try_call: no state of this gen_statem takes this request type: give a state a public "
                  "handle_event(State&, otpp::call_event<R>, const Req&), and Req a `using reply_type = R;`");
    return detail::pending_call_access::failed<detail::no_reply, false>(exit_reason::noproc());
  } else {
    static_assert(detail::always_false<Impl, Q>,
                  "otpp::async_try_call: the server has no handle_call overload for this request type");
    return detail::pending_call_access::failed<detail::no_reply, false>(exit_reason::noproc());
  }
}

/// `co_await otpp::when_all(a, b, ...)` of calls already in flight (from
/// async_call / async_try_call): a tuple of what each co_await gives, once
/// all are answered or failed. The calls run concurrently (each was sent
/// when made), so this takes as long as the slowest, and each keeps its own
/// timeout: give them the same one for a single bound on the whole fan-out.
/// With async_try_call every element is a result<R> and nothing throws;
/// with async_call, the first failure in argument order throws exit_error
/// (after the earlier ones are done; the later ones are abandoned).
template <class... R, bool... Throws>
[[nodiscard]] async<std::tuple<decltype(std::declval<basic_pending_call<R, Throws>&>().await_resume())...>> when_all(
    basic_pending_call<R, Throws>... calls) {
  // Braced initialisation evaluates in order: each co_await after the last.
  co_return std::tuple<decltype(std::declval<basic_pending_call<R, Throws>&>().await_resume())...>{
      co_await calls...};
}

/// when_all over a vector of calls of one type: their results, in order.
template <class R>
[[nodiscard]] async<std::vector<result<R>>> when_all(std::vector<pending_try_call<R>> calls) {
  std::vector<result<R>> out;
  out.reserve(calls.size());
  for (auto& c : calls) out.push_back(co_await c);
  co_return out;
}

/// `co_await otpp::when_any(a, b, ...)` of calls in flight: the index of
/// the first to be answered, to fail or to reach its timeout (in argument
/// order when several are). The others stay in flight: co_await them later,
/// or drop them to abandon them. Ready at once if one is already over.
template <class... Calls>
[[nodiscard]] detail::when_any_awaiter when_any(Calls&... calls) {
  static_assert(sizeof...(Calls) > 0, "otpp::when_any: give it at least one call");
  return detail::when_any_awaiter{std::vector<detail::when_any_awaiter::entry>{
      {detail::pending_call_access::slot(calls), detail::pending_call_access::due(calls)}...}};
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
