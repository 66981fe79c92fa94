#pragma once
// Dynamic supervisors: start empty, children added at run time, each
// restarted on its own (Elixir's DynamicSupervisor).
//
//   auto sessions = otpp::start_link<otpp::dynamic_supervisor>(otpp::name("sessions"),
//                       otpp::dynamic_supervisor_flags{.max_children = 10'000}).value();
//   otpp::pid s = otpp::start_child(sessions, otpp::child<session>(user_id)).value();
//   otpp::terminate_child(sessions, s);
//
// Extra arguments (Elixir's extra_arguments) go before each child's own
// arguments, after its name and start options, at every start and restart:
//
//   using pool_sup = otpp::basic_dynamic_supervisor<db_handle>;
//   auto sup = otpp::start_link<pool_sup>(otpp::dynamic_supervisor_flags{}, db).value();
//   otpp::start_child(sup, otpp::child<conn>(42));   // start_link<conn>(db, 42)
//
// Semantics (docs/semantics.md §2): one_for_one only;
// ids are ignored (which_children leaves them empty); significant children
// are refused; max_children counts restarting children, and a start past it
// fails with error("max_children"); a start that ignores keeps nothing and
// returns an empty pid; a restart that ignores removes the child; a restart
// that fails is retried at once, each attempt counting toward the restart
// intensity (as for supervisor). terminate_child takes the child's pid:
// error("not_found") if it is not (or no longer) a child. At shutdown every
// child is stopped at once, each by its own shutdown policy. What a kill
// means for a handler that never returns is said in supervisor.hpp.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "child_spec.hpp"
#include "detail/supervision.hpp"
#include "exit_reason.hpp"
#include "gen_server.hpp"
#include "log.hpp"
#include "process.hpp"
#include "supervisor.hpp"
#include "timer.hpp"

namespace otpp {

/// A dynamic supervisor's restart intensity and child limit.
struct dynamic_supervisor_flags {
  /// More restarts than this within max_seconds and the supervisor gives up.
  int max_restarts = 3;
  std::chrono::milliseconds max_seconds{5000};  ///< The window max_restarts counts in.
  /// Empty: no limit.
  std::optional<std::size_t> max_children{};
  /// How long to wait for a killed child whose handler does not return.
  std::chrono::milliseconds abandon_after{5000};
};

template <class... Extra>
class basic_dynamic_supervisor;

/// A dynamic supervisor without extra arguments.
using dynamic_supervisor = basic_dynamic_supervisor<>;

namespace detail {
template <class... Extra>
inline constexpr bool is_supervisor_type<basic_dynamic_supervisor<Extra...>> = true;
}  // namespace detail

/// A supervisor that starts children at run time (Elixir's
/// DynamicSupervisor); `Extra` are arguments put before each child's own.
template <class... Extra>
class basic_dynamic_supervisor : public gen_server<basic_dynamic_supervisor<Extra...>> {
  using base = gen_server<basic_dynamic_supervisor<Extra...>>;

 public:
  /// The child specs it takes: their start receives the extra arguments.
  using spec_type = basic_child_spec<Extra...>;

  /// @cond OTPP_INTERNAL
  struct start_child_req {
    spec_type spec;
  };
  struct terminate_child_req {
    pid child;
  };
  struct which_children_req {};
  struct count_children_req {};
  /// A restart to try again (a failed start: counted; a backoff delay: not).
  struct retry {
    std::uint64_t key;
    std::uint64_t epoch;
    bool counts;
  };

  /// @endcond
  /// Restart intensity and limits from `flags`; `extra` go before every child's own start arguments.
  explicit basic_dynamic_supervisor(dynamic_supervisor_flags flags = {}, Extra... extra)
      : flags_{flags}, extra_{std::move(extra)...} {}

  /// @cond OTPP_INTERNAL
  init_result init() {
    this->trap_exit(true);
    if (flags_.max_restarts < 0)
      return this->error(exit_reason::error(fmt::format("supervisor_data: invalid_intensity: {}", flags_.max_restarts)));
    if (flags_.max_seconds.count() <= 0)
      return this->error(exit_reason::error(fmt::format("supervisor_data: invalid_period: {}", flags_.max_seconds.count())));
    return {};
  }

  void terminate(const exit_reason&) {
    std::vector<detail::stop_target> targets;
    for (auto& [key, c] : children_)
      if (c.process) targets.push_back({c.process, c.spec.shutdown_or_default(), {}});
    detail::stop_children(targets, flags_.abandon_after);
    children_.clear();
    by_pid_.clear();
  }

  result<pid> handle_call(start_child_req req) {
    if (auto bad = detail::check_child(req.spec)) return exit_reason::error("invalid_child_spec: " + *bad);
    if (req.spec.significant) return exit_reason::error("invalid_child_spec: significant");
    if (flags_.max_children && children_.size() >= *flags_.max_children) return exit_reason::error("max_children");
    result<pid> r = start(req.spec);
    if (!r) return r.error().kind() == exit_kind::ignore ? result<pid>{pid{}} : r;
    const std::uint64_t key = next_key_++;
    by_pid_.emplace(*r, key);
    children_.emplace(key, entry{std::move(req.spec), *r, *r, false, 0, detail::runtime_now_ns(), {}});
    return r;
  }

  /// A child held restarting is found under the pid it had when it exited
  /// (Elixir's {:restarting, pid}): terminating it stops the retries.
  result<void> handle_call(terminate_child_req req) {
    auto it = by_pid_.find(req.child);
    if (!req.child || it == by_pid_.end()) return exit_reason::error("not_found");
    entry& c = children_.at(it->second);
    if (c.process) detail::stop_children({{c.process, c.spec.shutdown_or_default(), {}}}, flags_.abandon_after);
    children_.erase(it->second);  // a retry still scheduled finds nothing
    by_pid_.erase(it);
    return {};
  }

  /// Newest first; ids are empty.
  std::vector<child_info> handle_call(which_children_req) const {
    std::vector<child_info> out;
    out.reserve(children_.size());
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      const entry& c = it->second;
      out.push_back(child_info{{}, c.process, c.process ? child_info::status::running : child_info::status::restarting,
                               c.spec.type});
    }
    return out;
  }

  child_counts handle_call(count_children_req) const {
    child_counts n;
    for (auto& [key, c] : children_) n.add(c.spec.type, static_cast<bool>(c.process));
    return n;
  }

  void handle_info(const exit_signal& e) {
    auto it = by_pid_.find(e.from);
    if (it == by_pid_.end()) return;  // a stale signal from a child we stopped ourselves
    const std::uint64_t key = it->second;
    entry& c = children_.at(key);
    if (c.process != e.from) return;  // already restarting under this old pid
    c.process = pid{};  // the old pid stays in by_pid_ until a new one replaces it
    if (!detail::wants_restart(c.spec.restart, e.reason) || detail::runtime_closing()) {
      erase_child(key);
      return;
    }
    if (!add_restart()) return;
    detail::emit_restarting({}, e.reason);
    if (c.spec.backoff) {
      c.delay = detail::next_backoff(*c.spec.backoff, c.delay, detail::runtime_now_ns() - c.started_at);
      c.restarting = true;
      send_after(this->self(), retry{key, ++c.epoch, false}, c.delay);
      return;
    }
    restart(key);
  }

  void handle_info(retry r) {
    auto it = children_.find(r.key);
    if (it == children_.end() || it->second.epoch != r.epoch || !it->second.restarting) return;
    if (detail::runtime_closing()) return;
    if (r.counts && !add_restart()) return;
    restart(r.key);
  }
  /// @endcond

 private:
  struct entry {
    spec_type spec;
    pid process;                 // empty while restarting
    pid known_as;                // its key in by_pid_: the last pid it had
    bool restarting;
    std::uint64_t epoch;         // bumped when a scheduled retry must be ignored
    std::int64_t started_at;     // ns on the runtime clock
    std::chrono::milliseconds delay;  // current backoff
  };

  result<pid> start(const spec_type& spec) {
    return detail::invoke_start([&] { return std::apply(spec.start, extra_); });
  }

  // Starts a child that exited again; ignore removes it, a failure retries.
  void restart(std::uint64_t key) {
    entry& c = children_.at(key);
    result<pid> r = start(c.spec);
    if (r) {
      by_pid_.erase(c.known_as);
      c.process = *r;
      c.known_as = *r;
      c.restarting = false;
      c.started_at = detail::runtime_now_ns();
      by_pid_.emplace(*r, key);
      return;
    }
    if (r.error().kind() == exit_kind::ignore) {
      erase_child(key);
      return;
    }
    c.restarting = true;
    detail::log_rt(log_level::error, "otpp: dynamic supervisor {} could not restart a child: {}", this->self(),
                   r.error().to_string());
    send(this->self(), retry{key, ++c.epoch, true});
  }

  // Forgets a child, and the pid it is known by.
  void erase_child(std::uint64_t key) {
    auto it = children_.find(key);
    by_pid_.erase(it->second.known_as);
    children_.erase(it);
  }

  bool add_restart() {
    if (restarts_.add()) return true;
    detail::emit_max_restarts();
    detail::log_rt(log_level::error,
                   "otpp: dynamic supervisor {} reached max restart intensity ({} in {} ms); shutting down",
                   this->self(), flags_.max_restarts, flags_.max_seconds.count());
    this->stop(exit_reason::shutdown());  // terminate stops every child
    return false;
  }

  dynamic_supervisor_flags flags_;
  std::tuple<Extra...> extra_;
  std::map<std::uint64_t, entry> children_;  // by start order
  std::unordered_map<pid, std::uint64_t> by_pid_;
  std::uint64_t next_key_ = 0;
  detail::restart_window restarts_{flags_.max_restarts, flags_.max_seconds};
};

/// Starts a child from `spec` with the supervisor's extra arguments first.
/// Returns its pid, an empty pid if it ignored the start (nothing is kept),
/// error("max_children"), error("invalid_child_spec: ..."), or the start's
/// error.
template <class... Extra>
result<pid> start_child(const server<basic_dynamic_supervisor<Extra...>>& sup,
                        std::type_identity_t<basic_child_spec<Extra...>> spec) {
  using sup_t = basic_dynamic_supervisor<Extra...>;
  return detail::flatten(try_call(sup, typename sup_t::start_child_req{std::move(spec)}, infinity));
}

/// start_child with a recipe, `otpp::child<T>(args...)`: the same, as a
/// typed handle (empty if the child ignored its start).
template <class... Extra, class Impl, class... Args>
result<server<Impl>> start_child(const server<basic_dynamic_supervisor<Extra...>>& sup, child_recipe<Impl, Args...> recipe) {
  result<pid> r = start_child(sup, basic_child_spec<Extra...>(std::move(recipe)));
  if (!r) return r.error();
  return detail::server_access::make<Impl>(std::move(*r));
}

/// Stops the child by its shutdown policy and forgets it; error("not_found")
/// if `child` is not a child of `sup`.
template <class... Extra>
result<void> terminate_child(const server<basic_dynamic_supervisor<Extra...>>& sup, const pid& child) {
  using sup_t = basic_dynamic_supervisor<Extra...>;
  return detail::flatten(try_call(sup, typename sup_t::terminate_child_req{child}, infinity));
}

/// The children, newest first, with empty ids; a restarting child has no pid.
template <class... Extra>
[[nodiscard]] result<std::vector<child_info>> which_children(const server<basic_dynamic_supervisor<Extra...>>& sup) {
  using sup_t = basic_dynamic_supervisor<Extra...>;
  return try_call(sup, typename sup_t::which_children_req{}, infinity);
}

template <class... Extra>
[[nodiscard]] result<child_counts> count_children(const server<basic_dynamic_supervisor<Extra...>>& sup) {
  using sup_t = basic_dynamic_supervisor<Extra...>;
  return try_call(sup, typename sup_t::count_children_req{}, infinity);
}

}  // namespace otpp
