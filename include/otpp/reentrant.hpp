#pragma once
// otpp::reentrant: a wait during which the process handles other messages.
//
//   otpp::async<value> handle_call(load q) {
//     if (auto hit = cache_.find(q.key); hit != cache_.end()) co_return hit->second;
//     fetch request{q.key};
//     value v = co_await otpp::reentrant(otpp::async_call(backend_, std::move(request), 5s));
//     // Other calls ran meanwhile: read the state again, it may have changed.
//     co_return cache_.try_emplace(q.key, std::move(v)).first->second;
//   }
//
// A plain co_await keeps gen_server:call's rule: the handler holds its
// process until it finishes, and other messages wait. A reentrant wait lets
// the process go on (CAF's `then`, Proto.Actor's ReenterAfter, Orleans'
// [Reentrant]): while it waits, the process handles the messages that come,
// and those handlers may wait too. The consequences, which a reentrant
// handler has to be written for:
//
//  - The state may change across the co_await: anything read before it is
//    to be read again after. Handlers still never run at the same time: one
//    runs until it finishes or waits, then the next.
//  - When the wait ends, the handler's continuation is queued at the back of
//    the mailbox, like a message: it resumes after the messages that came
//    before its answer, and replies to calls in that order, not in the order
//    the calls came in.
//  - A plain (non-reentrant) wait still holds the process, reentrant
//    handlers' continuations included: they resume after it finishes.
//  - Exit signals, kills, stop and sys requests act as for any wait; on exit
//    every suspended handler's frame is destroyed and the calls they were
//    answering fail with the exit reason.
//
// A whole server opts in with `static constexpr bool reentrant_handlers =
// true;` (every wait of every handler, including in helpers and when_all).

#include <coroutine>
#include <exception>
#include <type_traits>
#include <utility>

#include "async_call.hpp"

namespace otpp {
namespace detail {

template <class A>
class reentrant_awaiter {
  using suspend_result = decltype(std::declval<A&>().await_suspend(std::coroutine_handle<>{}));
  static_assert(std::is_void_v<suspend_result> || std::is_same_v<suspend_result, bool> ||
                    std::is_convertible_v<suspend_result, std::coroutine_handle<>>,
                "otpp::reentrant: the awaitable's await_suspend must return void, bool or a coroutine handle");

 public:
  explicit reentrant_awaiter(A&& a) : inner_{std::forward<A>(a)} {}
  reentrant_awaiter(const reentrant_awaiter&) = delete;
  reentrant_awaiter& operator=(const reentrant_awaiter&) = delete;
  ~reentrant_awaiter() = default;

  [[nodiscard]] bool await_ready() { return inner_.await_ready(); }

  auto await_suspend(std::coroutine_handle<> h) {
    process_base& self = awaiting_process("otpp::reentrant");
    self.enter_reentrant();
    entered_ = &self;
    if constexpr (std::is_convertible_v<suspend_result, std::coroutine_handle<>>) {
      return inner_.await_suspend(h);  // a coroutine (a helper, when_all): its waits, as it runs, are ours
    } else {
      try {
        if constexpr (std::is_void_v<suspend_result>) {
          inner_.await_suspend(h);
          return true;
        } else {
          return inner_.await_suspend(h);
        }
      } catch (...) {
        std::exchange(entered_, nullptr)->leave_reentrant();
        throw;
      }
    }
  }

  decltype(auto) await_resume() {
    if (entered_ != nullptr) std::exchange(entered_, nullptr)->leave_reentrant();
    return inner_.await_resume();
  }

 private:
  A inner_;  // a reference for an lvalue argument, the awaitable itself for an rvalue
  process_base* entered_ = nullptr;
};

}  // namespace detail

/// `co_await otpp::reentrant(w)` waits for `w` (a call from async_call or
/// async_try_call, when_any, when_all, sleep_for, a task, an async<T>
/// helper) and gives what `co_await w` gives, but lets the process handle
/// other messages meanwhile: see this header's comment for the ordering
/// consequences. Only in a coroutine handler.
template <class Awaitable>
[[nodiscard]] detail::reentrant_awaiter<Awaitable> reentrant(Awaitable&& w) {
  return detail::reentrant_awaiter<Awaitable>{std::forward<Awaitable>(w)};
}

}  // namespace otpp
