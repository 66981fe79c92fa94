#pragma once
// otpp::agent<T>: Elixir's Agent, a process that holds a value and runs the
// functions it is sent against it, one at a time.
//
//   auto a = otpp::agent<std::vector<int>>::start_link([] { return std::vector<int>{}; }).value();
//   a.update([](std::vector<int> v) { v.push_back(1); return v; });
//   a.update([](std::vector<int>& v) { v.push_back(2); });                // in place
//   std::size_t n = a.get([](const std::vector<int>& v) { return v.size(); });
//   int first = a.get_and_update([](const std::vector<int>& v) { return std::pair{v[0], v}; });
//
// The functions run in the agent's process; get/update/get_and_update wait
// for it (a call: default timeout 5 s, exit_error on failure, as
// Agent.get exits the caller), cast does not. A function that throws
// crashes the agent, as in Elixir. Each function is moved into its message:
// a caller that times out leaves nothing dangling. In a coroutine handler,
// the async_ forms wait without holding the worker.

#include <chrono>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "async_call.hpp"
#include "child_spec.hpp"
#include "gen_server.hpp"

namespace otpp {

template <class T>
class agent;

namespace detail {

template <class F>
struct agent_get {
  F fn;
};
template <class F>
struct agent_update {
  F fn;
};
template <class F>
struct agent_get_and_update {
  F fn;
};
template <class F>
struct agent_cast {
  F fn;
};

/// init() makes the agent's first value.
template <class Init, class T>
concept agent_init = std::invocable<Init&> && std::is_convertible_v<std::invoke_result_t<Init&>, T>;
template <class F, class T>
concept agent_getter = std::invocable<F&, const T&> && !std::is_void_v<std::invoke_result_t<F&, const T&>>;
/// update's two forms: fn(T&) changes the value in place and returns
/// nothing; otherwise fn(value) returns the new value, as Agent.update's
/// function does.
template <class F, class T>
concept agent_mutator = std::invocable<F&, T&> && std::is_void_v<std::invoke_result_t<F&, T&>>;
template <class F, class T>
concept agent_updater =
    agent_mutator<F, T> || (std::invocable<F&, T&&> && std::is_convertible_v<std::invoke_result_t<F&, T&&>, T>);
/// get_and_update's function returns {answer, new value}: a pair or
/// two-element tuple whose second converts to T.
template <class R, class T>
concept answer_and_value = requires { std::tuple_size<std::remove_cvref_t<R>>::value; } &&
                           std::tuple_size_v<std::remove_cvref_t<R>> == 2 &&
                           std::is_convertible_v<std::tuple_element_t<1, std::remove_cvref_t<R>>, T>;
template <class F, class T>
concept agent_get_updater = std::invocable<F&, const T&> && answer_and_value<std::invoke_result_t<F&, const T&>, T>;

/// The agent's process. Its handlers are templates: each function type the
/// program sends gets its own handler, so nothing is type-erased or copied
/// through a std::function.
template <class T>
class agent_server : public gen_server<agent_server<T>> {
 public:
  template <class Init>
  explicit agent_server(std::in_place_t, Init init) : value_(std::invoke(std::move(init))) {}

  template <class F>
  auto handle_call(agent_get<F> r) {
    return std::invoke(r.fn, std::as_const(value_));
  }
  template <class F>
  void handle_call(agent_update<F> r) {
    apply_update(r.fn);
  }
  template <class F>
  auto handle_call(agent_get_and_update<F> r) {
    auto [reply, next] = std::invoke(r.fn, std::as_const(value_));
    value_ = std::move(next);
    return std::move(reply);
  }
  template <class F>
  void handle_cast(agent_cast<F> r) {
    apply_update(r.fn);
  }

 private:
  template <class F>
  void apply_update(F& fn) {
    if constexpr (agent_mutator<F, T>) {
      std::invoke(fn, value_);
    } else {
      value_ = std::invoke(fn, std::move(value_));
    }
  }

  T value_;
};

}  // namespace detail

/// A handle to an agent holding a T. Copyable; converts to pid. Functions
/// for get take `const T&` and return the answer; for update and cast they
/// take the value (by value or T&&) and return the new one, or take `T&`,
/// change it in place and return nothing; for
/// get_and_update they take `const T&` and return {answer, new value}.
template <class T>
class agent {
 public:
  /// The server type underneath (for supervision, registries, sys).
  using server_type = detail::agent_server<T>;

  /// An empty handle.
  agent() noexcept = default;

  /// Starts an agent linked to the caller, its value made by `init()` in
  /// the new process (Agent.start_link). Start options (a name...) go first.
  template <class... Options, class Init>
    requires detail::agent_init<Init, T>
  [[nodiscard]] static result<agent> start_link(Init init, Options&&... options) {
    return adopt(otpp::start_link<server_type>(std::forward<Options>(options)..., std::in_place, std::move(init)));
  }
  /// Like start_link, without the link (Agent.start).
  template <class... Options, class Init>
    requires detail::agent_init<Init, T>
  [[nodiscard]] static result<agent> start(Init init, Options&&... options) {
    return adopt(otpp::start<server_type>(std::forward<Options>(options)..., std::in_place, std::move(init)));
  }
  /// Like start, in runtime `rt` (as rt.start<Impl> for a server).
  template <class... Options, class Init>
    requires detail::agent_init<Init, T>
  [[nodiscard]] static result<agent> start(runtime& rt, Init init, Options&&... options) {
    return adopt(rt.start<server_type>(std::forward<Options>(options)..., std::in_place, std::move(init)));
  }
  /// The agent as a supervisor's child: `init` runs again at each restart.
  template <class Init>
  [[nodiscard]] static auto child_spec(Init init) {
    return otpp::child<server_type>(std::in_place, std::move(init));
  }
  /// The handle of a running agent, e.g. one found by name.
  explicit agent(server<server_type> s) noexcept : s_{std::move(s)} {}

  /// fn(value), run in the agent (Agent.get).
  template <class F>
    requires detail::agent_getter<F, T>
  auto get(F fn, std::chrono::steady_clock::duration timeout = default_call_timeout) const {
    return otpp::call(s_, detail::agent_get<F>{std::move(fn)}, timeout);
  }
  /// value = fn(value), and waits for it (Agent.update).
  template <class F>
    requires detail::agent_updater<F, T>
  void update(F fn, std::chrono::steady_clock::duration timeout = default_call_timeout) const {
    otpp::call(s_, detail::agent_update<F>{std::move(fn)}, timeout);
  }
  /// {answer, value} = fn(value); returns the answer (Agent.get_and_update).
  template <class F>
    requires detail::agent_get_updater<F, T>
  auto get_and_update(F fn, std::chrono::steady_clock::duration timeout = default_call_timeout) const {
    return otpp::call(s_, detail::agent_get_and_update<F>{std::move(fn)}, timeout);
  }
  /// value = fn(value), without waiting (Agent.cast).
  template <class F>
    requires detail::agent_updater<F, T>
  void cast(F fn) const {
    otpp::cast(s_, detail::agent_cast<F>{std::move(fn)});
  }
  /// Stops the agent (Agent.stop).
  void stop(exit_reason reason = exit_reason::normal(), std::chrono::steady_clock::duration timeout = infinity) const {
    otpp::stop(s_, std::move(reason), timeout);
  }

  /// get, awaitable in a coroutine handler without holding the worker.
  template <class F>
    requires detail::agent_getter<F, T>
  [[nodiscard]] auto async_get(F fn, std::chrono::steady_clock::duration timeout = default_call_timeout) const {
    return otpp::async_call(s_, detail::agent_get<F>{std::move(fn)}, timeout);
  }
  /// update, awaitable in a coroutine handler.
  template <class F>
    requires detail::agent_updater<F, T>
  [[nodiscard]] auto async_update(F fn, std::chrono::steady_clock::duration timeout = default_call_timeout) const {
    return otpp::async_call(s_, detail::agent_update<F>{std::move(fn)}, timeout);
  }

  /// The agent's pid.
  [[nodiscard]] const otpp::pid& pid() const noexcept { return s_.pid(); }
  /// The typed server handle underneath.
  [[nodiscard]] const server<server_type>& server_handle() const noexcept { return s_; }
  /// False for an empty handle.
  explicit operator bool() const noexcept { return static_cast<bool>(s_); }

 private:
  static result<agent> adopt(result<server<server_type>> r) {
    if (!r) return r.error();
    return agent{std::move(r).value()};
  }

  server<server_type> s_;
};

}  // namespace otpp
