#pragma once
// otpp::async<T>: the coroutine type of handlers that wait without holding a
// thread, and of the helpers they call.
//
//   otpp::async<int> handle_call(lookup q) {
//     get request{q.key};                                          // (GCC 12: not inside the co_await)
//     auto hit = co_await otpp::async_call(cache_, std::move(request));  // the worker is free meanwhile
//     co_return hit ? *hit : co_await load(q.key);                 // load: another async<int>
//   }
//
// An async<T> is lazy: it runs when a handler returns it to the runtime, or
// when another coroutine co_awaits it, and it resumes whoever awaited it when
// it finishes (symmetric transfer: a chain of helpers does not grow the
// stack). An exception that leaves it surfaces at the co_await, or, at the
// top, crashes the process like any callback. Frames come from the runtime's
// node pool. An async<T> that is destroyed before it finished destroys its
// frame, and with it whatever the frame was awaiting.

#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "detail/node_pool.hpp"

namespace otpp {

template <class T = void>
class async;

namespace detail {

struct async_promise_base {
  std::coroutine_handle<> continuation;  // the coroutine awaiting this one; none at the top
  std::exception_ptr error;

  // Frames come from the node pool: a handler's frame is allocated per
  // message, and the pool makes that a thread-local free-list pop.
  static void* operator new(std::size_t n) { return pool_allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { pool_deallocate(p, n); }

  struct final_awaiter {
    [[nodiscard]] bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
      std::coroutine_handle<> next = h.promise().continuation;
      return next ? next : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };

  [[nodiscard]] std::suspend_always initial_suspend() const noexcept { return {}; }
  [[nodiscard]] final_awaiter final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { error = std::current_exception(); }
};

template <class T>
struct async_promise final : async_promise_base {
  std::optional<T> value;
  async<T> get_return_object() noexcept;
  template <class U = T>
    requires std::is_constructible_v<T, U&&>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
  /// The result, or the exception the coroutine ended with.
  T take() {
    if (error) std::rethrow_exception(error);
    return std::move(*value);
  }
};

template <>
struct async_promise<void> final : async_promise_base {
  async<void> get_return_object() noexcept;
  void return_void() const noexcept {}
  void take() const {
    if (error) std::rethrow_exception(error);
  }
};

struct async_access;

}  // namespace detail

/// A coroutine that produces a T (or void): the return type of a handler
/// that co_awaits, and of the helpers it calls. Move-only; co_await it once.
template <class T>
class [[nodiscard]] async {
 public:
  /// The coroutine's promise (the C++ coroutine protocol).
  using promise_type = detail::async_promise<T>;
  /// What co_await on it produces.
  using value_type = T;

  /// Takes over `other`'s coroutine.
  async(async&& other) noexcept : h_{std::exchange(other.h_, {})} {}
  /// Destroys its own coroutine (if any) and takes over `other`'s.
  async& operator=(async&& other) noexcept {
    if (this != &other) {
      if (h_) h_.destroy();
      h_ = std::exchange(other.h_, {});
    }
    return *this;
  }
  async(const async&) = delete;
  async& operator=(const async&) = delete;
  ~async() {
    if (h_) h_.destroy();
  }

  /// Runs it until it finishes; the awaiting coroutine resumes then.
  [[nodiscard]] bool await_ready() const noexcept { return !h_ || h_.done(); }
  /// (The coroutine protocol.)
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
    h_.promise().continuation = awaiting;
    return h_;
  }
  /// Its result; rethrows the exception it ended with.
  T await_resume() { return h_.promise().take(); }

 private:
  friend struct detail::async_promise<T>;
  friend struct detail::async_access;
  explicit async(std::coroutine_handle<promise_type> h) noexcept : h_{h} {}
  std::coroutine_handle<promise_type> h_;
};

namespace detail {

template <class T>
async<T> async_promise<T>::get_return_object() noexcept {
  return async<T>{std::coroutine_handle<async_promise<T>>::from_promise(*this)};
}
inline async<void> async_promise<void>::get_return_object() noexcept {
  return async<void>{std::coroutine_handle<async_promise<void>>::from_promise(*this)};
}

/// For the runtime, which drives a handler's coroutine itself.
struct async_access {
  /// Takes the frame out of `a` (the caller now owns it).
  template <class T>
  static std::coroutine_handle<async_promise<T>> release(async<T>& a) noexcept {
    return std::exchange(a.h_, {});
  }
};

template <class T>
inline constexpr bool is_async_v = false;
template <class T>
inline constexpr bool is_async_v<async<T>> = true;

template <class T>
struct unwrap_async {
  using type = T;
};
template <class T>
struct unwrap_async<async<T>> {
  using type = T;
};
/// T for async<T>; anything else unchanged.
template <class T>
using unwrap_async_t = typename unwrap_async<T>::type;

}  // namespace detail
}  // namespace otpp
