#pragma once
// Child specs: what a supervisor needs to know to start, stop and restart a
// child (Erlang's child spec map, Elixir's child_spec/1).
//
//   otpp::child<cache>(otpp::name("cache"), 1000)              // Elixir's {Cache, 1000}
//       .with_restart(otpp::restart_type::transient)
//       .with_shutdown(otpp::shutdown_policy::timeout(2s));
//
// child<Impl>(args...) keeps the type and the arguments, so one recipe
// becomes a spec for any supervisor: a plain child_spec, or the spec of a
// dynamic supervisor with extra arguments, which are put before `args` (after
// the name and other start options) at every start and restart.

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "exit_reason.hpp"
#include "gen_server.hpp"
#include "process.hpp"

namespace otpp {

/// When a supervisor restarts a child that exited.
enum class restart_type {
  permanent,  ///< always
  transient,  ///< only after an abnormal exit (not normal or shutdown)
  temporary,  ///< never
};
/// What a child is: a supervisor gets infinity as its default shutdown.
enum class child_type {
  worker,      ///< any other process
  supervisor,  ///< a supervisor or dynamic supervisor
};

/// How a supervisor stops a child.
class shutdown_policy {
 public:
  /// Which policy.
  enum class kind : unsigned char {
    brutal_kill,   ///< kill at once
    timeout,       ///< shutdown, then kill after time()
    wait_forever,  ///< shutdown, and wait (Erlang's infinity)
  };
  /// exit(child, kill) at once.
  static shutdown_policy brutal_kill() noexcept { return {kind::brutal_kill, {}}; }
  /// exit(child, shutdown) (a trapping child runs terminate), then kill if it
  /// has not exited after `t`. Negative `t` is rejected when the spec is checked.
  static shutdown_policy timeout(std::chrono::milliseconds t) noexcept { return {kind::timeout, t}; }
  /// exit(child, shutdown) and wait as long as it takes (the default for
  /// supervisor children).
  static shutdown_policy infinity() noexcept { return {kind::wait_forever, {}}; }

  /// Which policy this is.
  [[nodiscard]] kind policy() const noexcept { return kind_; }
  /// The wait before a kill, for kind::timeout.
  [[nodiscard]] std::chrono::milliseconds time() const noexcept { return time_; }

 private:
  shutdown_policy(kind k, std::chrono::milliseconds t) noexcept : kind_{k}, time_{t} {}
  kind kind_;
  std::chrono::milliseconds time_;
};

/// Opt-in exponential restart delay: `initial`, doubled at each restart that
/// follows a crash within `max` of the previous start, capped at `max`.
struct restart_backoff {
  std::chrono::milliseconds initial{100};  ///< The first delay.
  std::chrono::milliseconds max{10'000};   ///< The longest delay, and the window that resets it.
};

/// Everything in a spec but how to start the child, with fluent setters
/// shared by specs and recipes.
template <class Derived>
struct child_options {
  /// Unique within a supervisor (a dynamic supervisor ignores it).
  std::string id;
  /// When to restart it.
  restart_type restart = restart_type::permanent;
  /// How to stop it. Empty: 5 s for a worker, infinity for a supervisor.
  std::optional<shutdown_policy> shutdown;
  /// Worker or supervisor.
  child_type type = child_type::worker;
  /// Its exit for good can shut the supervisor down (supervisor_flags::auto_shutdown).
  bool significant = false;
  /// Delays between restarts. Empty: restart at once.
  std::optional<restart_backoff> backoff;

  /// Sets id: `otpp::child<T>(args).with_id("cache")`.
  Derived&& with_id(std::string i) && {
    id = std::move(i);
    return self();
  }
  /// Sets restart: `otpp::child<T>(args).with_restart(otpp::restart_type::transient)`.
  Derived&& with_restart(restart_type r) && {
    restart = r;
    return self();
  }
  /// Sets shutdown: `.with_shutdown(otpp::shutdown_policy::timeout(2s))`.
  Derived&& with_shutdown(shutdown_policy s) && {
    shutdown = s;
    return self();
  }
  /// Sets type.
  Derived&& with_type(child_type t) && {
    type = t;
    return self();
  }
  /// Marks it significant (see supervisor_flags::auto_shutdown).
  Derived&& with_significant(bool s = true) && {
    significant = s;
    return self();
  }
  /// Sets a restart backoff.
  Derived&& with_backoff(restart_backoff b) && {
    backoff = b;
    return self();
  }

  /// The policy in force: the spec's, or the default for its type.
  [[nodiscard]] shutdown_policy shutdown_or_default() const noexcept {
    return shutdown.value_or(type == child_type::supervisor ? shutdown_policy::infinity()
                                                            : shutdown_policy::timeout(std::chrono::seconds(5)));
  }

 private:
  Derived&& self() noexcept { return std::move(static_cast<Derived&>(*this)); }
};

/// A child spec whose start receives a dynamic supervisor's extra arguments
/// (none for a plain supervisor). `start` runs inside the supervisor, so
/// start_link links the child to it; an error whose kind is ignore means
/// "do not start".
template <class... Extra>
struct basic_child_spec : child_options<basic_child_spec<Extra...>> {
  /// Starts the child (linked to the calling supervisor).
  std::function<result<pid>(const Extra&...)> start;
};

/// What a supervisor knows of a child.
using child_spec = basic_child_spec<>;

namespace detail {

/// Supervisor types get child_type::supervisor from child<Impl>.
template <class Impl>
inline constexpr bool is_supervisor_type = false;

template <class T>
inline constexpr bool is_leading_option = is_start_option<T> || names_at_start<T>;

// How many of Args are start options (the name, hibernate_after, a via),
// which must stay ahead of any extra arguments.
template <class... Args>
constexpr std::size_t leading_option_count() {
  constexpr bool opt[] = {is_leading_option<std::decay_t<Args>>..., false};
  std::size_t n = 0;
  while (opt[n]) ++n;
  return n;
}

template <class Impl, class Tuple, class... Extra, std::size_t... Opt, std::size_t... Rest>
result<pid> start_recipe(const Tuple& args, std::index_sequence<Opt...>, std::index_sequence<Rest...>,
                         const Extra&... extra) {
  constexpr std::size_t k = sizeof...(Opt);
  auto r = start_link<Impl>(std::get<Opt>(args)..., extra..., std::get<k + Rest>(args)...);
  if (!r) return r.error();
  return r->pid();
}

template <class First, class... Rest>
std::string recipe_id(const First& f, const Rest&...) {
  if constexpr (std::is_same_v<std::decay_t<First>, name_t>) {
    return f.value;
  } else {
    return {};
  }
}
inline std::string recipe_id() { return {}; }

}  // namespace detail

/// A gen_server<Impl> child started as start_link<Impl>(args...) with copies
/// of `args` at every (re)start; made by child<Impl>(args...) and converted
/// to the spec a supervisor takes.
template <class Impl, class... Args>
class child_recipe : public child_options<child_recipe<Impl, Args...>> {
 public:
  /// Keeps copies of `args` (start options first, as for start_link).
  template <class... A>
  explicit child_recipe(A&&... args) : args_{std::forward<A>(args)...} {
    this->id = std::apply([](const auto&... a) { return detail::recipe_id(a...); }, args_);
    if (this->id.empty()) this->id = std::string{detail::type_name<Impl>()};
    if constexpr (detail::is_supervisor_type<Impl>) this->type = child_type::supervisor;
  }

  /// @{
  /// The spec a supervisor takes.
  template <class... Extra>
  operator basic_child_spec<Extra...>() const& {  // NOLINT: converting is the point
    return make<Extra...>(*this);
  }
  template <class... Extra>
  operator basic_child_spec<Extra...>() && {  // NOLINT
    return make<Extra...>(std::move(*this));
  }
  /// @}

 private:
  template <class... Extra, class Self>
  static basic_child_spec<Extra...> make(Self&& self) {
    basic_child_spec<Extra...> s;
    s.id = self.id;
    s.restart = self.restart;
    s.shutdown = self.shutdown;
    s.type = self.type;
    s.significant = self.significant;
    s.backoff = self.backoff;
    constexpr std::size_t k = detail::leading_option_count<Args...>();
    s.start = [args = std::forward<Self>(self).args_](const Extra&... extra) -> result<pid> {
      return detail::start_recipe<Impl>(args, std::make_index_sequence<k>{},
                                        std::make_index_sequence<sizeof...(Args) - k>{}, extra...);
    };
    return s;
  }

  std::tuple<Args...> args_;
};

/// The recipe of a child started as start_link<Impl>(args...) (Elixir's
/// `{Module, arg}`). Its id is the name if the first argument is
/// otpp::name(...), else the type's name. A supervisor gets type supervisor.
template <class Impl, class... Args>
[[nodiscard]] child_recipe<Impl, std::decay_t<Args>...> child(Args&&... args) {
  return child_recipe<Impl, std::decay_t<Args>...>(std::forward<Args>(args)...);
}

}  // namespace otpp
