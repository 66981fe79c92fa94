#pragma once
// Supervisors: processes that start children, watch them, and restart them
// by a strategy (Erlang's supervisor, Elixir's Supervisor).
//
//   std::vector<otpp::child_spec> children{
//       otpp::child<cache>(otpp::name("cache"), 1000),        // Elixir's {Cache, 1000}
//       otpp::child<limiter>().with_restart(otpp::restart_type::transient),
//   };
//   auto sup = otpp::start_link<otpp::supervisor>(children, otpp::supervisor_flags{
//                  .strategy = otpp::strategy::one_for_all}).value();
//   otpp::which_children(sup);
//
// Semantics follow OTP (docs/semantics.md §2): children
// start in list order, each synchronously; a failed start stops the ones
// already started (reverse order) and start fails with
// shutdown("failed_to_start_child: ID: REASON"). A child that exits is
// restarted by its restart type (permanent: always; transient: unless the
// reason is normal or shutdown; temporary: never) and the strategy
// (one_for_one: it alone; one_for_all: all; rest_for_one: it and the ones
// started after it; a group restart counts once). More than max_restarts
// restarts within max_seconds (a sliding window on the runtime's clock) and
// the supervisor stops every child in reverse order and exits with
// shutdown, which its own supervisor sees like any child exit. A restart
// that fails is retried at once and each attempt counts, so a child that
// cannot start escalates. Children stop in reverse start order, each by its
// shutdown policy.
//
// What C++ cannot do: stop a thread. A child busy in a handler takes a kill
// (brutal_kill, or a shutdown timeout running out) when that handler
// returns. The supervisor waits for it up to supervisor_flags::abandon_after
// and then gives up on it: it logs the child as abandoned, drops the link
// and carries on (a restart then fails while the old child still holds its
// name). With shutdown_policy::infinity() it waits as long as it takes.
//
// Errors are exit_reasons: validation errors are error("start_spec: ...")
// and error("supervisor_data: ..."), with Erlang's words (missing_id,
// duplicate_child_name, invalid_shutdown, bad_combination, invalid_intensity,
// invalid_period); the child API answers error("not_found"),
// error("running"), error("restarting"), error("already_present") or
// already_started (otpp::holder gives the child).
//
// Beyond OTP (asked for in erlang/otp#1287): child_spec::backoff delays each
// restart of that child exponentially, up to a cap; off by default.

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "child_spec.hpp"
#include "detail/runtime_core.hpp"
#include "detail/supervision.hpp"
#include "exit_reason.hpp"
#include "gen_server.hpp"
#include "log.hpp"
#include "process.hpp"
#include "timer.hpp"

namespace otpp {

class supervisor;

namespace detail {
template <>
inline constexpr bool is_supervisor_type<supervisor> = true;
}  // namespace detail

/// Which children a supervisor restarts when one exits (docs/semantics.md §2).
enum class strategy {
  one_for_one,   ///< only that child
  one_for_all,   ///< every child: the others stop (reverse order), all restart in order
  rest_for_one,  ///< that child and those started after it
};
/// When a supervisor stops itself because significant children exited for good.
enum class auto_shutdown {
  never,            ///< never (the default)
  any_significant,  ///< when any significant child has
  all_significant,  ///< when every significant child has
};

/// A supervisor's strategy and restart intensity (Elixir's defaults).
struct supervisor_flags {
  otpp::strategy strategy = strategy::one_for_one;  ///< Which children restart together.
  /// More restarts than this within max_seconds and the supervisor gives up.
  int max_restarts = 3;
  std::chrono::milliseconds max_seconds{5000};  ///< The window max_restarts counts in.
  otpp::auto_shutdown auto_shutdown = auto_shutdown::never;  ///< See auto_shutdown.
  /// How long to wait for a killed child whose handler does not return.
  std::chrono::milliseconds abandon_after{5000};
};

/// One line of which_children.
struct child_info {
  /// Where a child stands.
  enum class status : unsigned char {
    running,     ///< started and alive
    restarting,  ///< exited; a restart is pending (a retry or a backoff delay)
    stopped,     ///< terminated with terminate_child (its spec is kept)
    ignored,     ///< its start returned ignore
  };
  std::string id;    ///< The child's id (empty under a dynamic supervisor).
  pid process;       ///< The child, empty unless running.
  status state;      ///< See status.
  child_type type;   ///< Worker or supervisor.
};

/// What count_children reports (Elixir's count_children map).
struct child_counts {
  std::size_t specs = 0;        ///< Every child spec the supervisor holds.
  std::size_t active = 0;       ///< Children running now.
  std::size_t supervisors = 0;  ///< Specs of type supervisor.
  std::size_t workers = 0;      ///< Specs of type worker.

  /// Counts one child: every spec counts by type; running ones are active.
  void add(child_type type, bool running) noexcept {
    ++specs;
    if (running) ++active;
    ++(type == child_type::supervisor ? supervisors : workers);
  }
};

/// What a supervisor's init callback returns (the result of Elixir's
/// Supervisor.init/2): its children and flags. std::nullopt is :ignore.
struct supervisor_spec {
  std::vector<child_spec> children;  ///< Started in this order, stopped in reverse.
  supervisor_flags flags{};          ///< Strategy and restart intensity.
};

/// A supervisor process: start it with start_link<supervisor>(children,
/// flags), or with a callback run inside the new process, as a module's
/// init/1 is: start_link<supervisor>([] { return supervisor_spec{...}; }).
/// Named like any server.
class supervisor : public gen_server<supervisor> {
 public:
  /// The init callback: runs inside the new supervisor; std::nullopt is :ignore.
  using init_fn = std::function<std::optional<supervisor_spec>()>;

  /// @cond OTPP_INTERNAL
  // The protocol the free functions (start_child, ...) speak. Public because
  // gen_server dispatches to public handlers; not part of the API.
  struct start_child_req {
    using reply_type = result<pid>;
    child_spec spec;
  };
  struct terminate_child_req {
    std::string id;
  };
  struct restart_child_req {
    std::string id;
  };
  struct delete_child_req {
    std::string id;
  };
  struct which_children_req {};
  struct count_children_req {};
  struct get_childspec_req {
    std::string id;
  };
  /// A restart to try again (a failed start: counted; a backoff delay: not).
  struct retry {
    std::string id;
    std::uint64_t epoch;
    bool counts;
  };

  /// @endcond

  /// Supervises `children` (started in order when the supervisor starts).
  explicit supervisor(std::vector<child_spec> children, supervisor_flags flags = {})
      : specs_{std::move(children)}, flags_{flags} {}
  /// The init-callback form: `init` runs in the new process before anything
  /// starts; returning std::nullopt makes start return ignore.
  explicit supervisor(init_fn init) : init_{std::move(init)} {}

  /// @cond OTPP_INTERNAL
  init_result init() {
    trap_exit(true);
    if (init_) {
      std::optional<supervisor_spec> spec = init_();
      if (!spec) return ignore();
      specs_ = std::move(spec->children);
      flags_ = spec->flags;
      restarts_ = detail::restart_window{flags_.max_restarts, flags_.max_seconds};
    }
    if (auto bad = check_flags()) return error(std::move(*bad));
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      if (auto bad = check_spec(specs_[i])) return error(exit_reason::error("start_spec: " + *bad));
      for (std::size_t j = 0; j < i; ++j) {
        if (specs_[j].id == specs_[i].id)
          return error(exit_reason::error("start_spec: duplicate_child_name: " + specs_[i].id));
      }
    }
    children_.reserve(specs_.size());
    for (auto& s : specs_) {
      children_.push_back(entry{std::move(s), {}});
      entry& c = children_.back();
      auto r = start_one(c);
      if (!r) {
        auto why = exit_reason::shutdown(fmt::format("failed_to_start_child: {}: {}", c.spec.id, r.error().to_string()));
        children_.pop_back();
        stop_all();
        return error(std::move(why));
      }
      if (!c.process && c.spec.restart == restart_type::temporary) children_.pop_back();  // ignored temporary: not kept
    }
    specs_.clear();
    return {};
  }

  void terminate(const exit_reason&) { stop_all(); }

  result<pid> handle_call(start_child_req req) {
    if (auto bad = check_spec(req.spec)) return exit_reason::error("start_spec: " + *bad);
    if (entry* c = find(req.spec.id)) {
      if (c->process) return detail::already_started_by(detail::pid_access::get(c->process));
      return exit_reason::error("already_present");
    }
    children_.push_back(entry{std::move(req.spec), {}});
    entry& c = children_.back();
    auto r = start_one(c);
    if (!r) {
      children_.pop_back();  // a failed start keeps no spec
      return r.error();
    }
    pid out = c.process;
    if (!c.process && c.spec.restart == restart_type::temporary) children_.pop_back();
    return out;
  }

  result<void> handle_call(terminate_child_req req) {
    entry* c = find(req.id);
    if (c == nullptr) return exit_reason::error("not_found");
    stop_child(*c);
    c->state = child_info::status::stopped;
    ++c->epoch;  // a pending retry is void
    if (c->spec.restart == restart_type::temporary) erase(*c);
    return {};
  }

  result<pid> handle_call(restart_child_req req) {
    entry* c = find(req.id);
    if (c == nullptr) return exit_reason::error("not_found");
    if (c->process) return exit_reason::error("running");
    if (c->state == child_info::status::restarting) return exit_reason::error("restarting");
    auto r = start_one(*c);
    if (!r) {
      c->state = child_info::status::stopped;
      return r.error();
    }
    return c->process;
  }

  result<void> handle_call(delete_child_req req) {
    entry* c = find(req.id);
    if (c == nullptr) return exit_reason::error("not_found");
    if (c->process) return exit_reason::error("running");
    if (c->state == child_info::status::restarting) return exit_reason::error("restarting");
    erase(*c);
    return {};
  }

  std::vector<child_info> handle_call(which_children_req) const {
    std::vector<child_info> out;
    out.reserve(children_.size());
    for (auto it = children_.rbegin(); it != children_.rend(); ++it)  // newest first, as OTP lists them
      out.push_back(child_info{it->spec.id, it->process, it->state, it->spec.type});
    return out;
  }

  child_counts handle_call(count_children_req) const {
    child_counts n;
    for (auto& c : children_) n.add(c.spec.type, static_cast<bool>(c.process));
    return n;
  }

  result<child_spec> handle_call(get_childspec_req req) {
    if (entry* c = find(req.id)) return c->spec;
    return exit_reason::error("not_found");
  }

  void handle_info(const exit_signal& e) {
    entry* c = find(e.from);
    if (c == nullptr) return;  // a stale signal from a child we stopped ourselves
    c->process = pid{};
    c->state = child_info::status::stopped;
    child_exited(*c, e.reason);
  }

  void handle_info(retry r) {
    entry* c = find(r.id);
    if (c == nullptr || c->epoch != r.epoch || c->state != child_info::status::restarting) return;
    if (detail::runtime_closing()) return;
    if (r.counts && !add_restart()) return;
    restart_group(*c);
  }
  /// @endcond

 private:
  struct entry {
    child_spec spec;
    pid process;
    child_info::status state = child_info::status::stopped;
    std::uint64_t epoch = 0;        // bumped when a scheduled retry must be ignored
    std::int64_t started_at = 0;    // ns on the runtime clock
    std::chrono::milliseconds delay{0};  // current backoff
  };

  std::optional<exit_reason> check_flags() const {
    if (flags_.max_restarts < 0)
      return exit_reason::error(fmt::format("supervisor_data: invalid_intensity: {}", flags_.max_restarts));
    if (flags_.max_seconds.count() <= 0)
      return exit_reason::error(fmt::format("supervisor_data: invalid_period: {}", flags_.max_seconds.count()));
    return std::nullopt;
  }

  std::optional<std::string> check_spec(const child_spec& s) const {
    if (s.id.empty()) return std::string{"missing_id"};
    if (auto bad = detail::check_child(s)) return bad;
    if (s.significant && s.restart == restart_type::permanent)
      return fmt::format("bad_combination: {}: significant with permanent", s.id);
    if (s.significant && flags_.auto_shutdown == auto_shutdown::never)
      return fmt::format("bad_combination: {}: significant with auto_shutdown never", s.id);
    return std::nullopt;
  }

  entry* find(std::string_view id) {
    for (auto& c : children_)
      if (c.spec.id == id) return &c;
    return nullptr;
  }
  entry* find(const pid& p) {
    if (!p) return nullptr;
    for (auto& c : children_)
      if (c.process == p) return &c;
    return nullptr;
  }
  void erase(entry& c) {
    children_.erase(children_.begin() + (&c - children_.data()));
  }

  // Starts c; an ignore leaves it not running (state ignored), no error.
  result<void> start_one(entry& c) {
    result<pid> r = detail::invoke_start(c.spec.start);
    if (!r) {
      if (r.error().kind() == exit_kind::ignore) {
        c.process = pid{};
        c.state = child_info::status::ignored;
        return {};
      }
      return r.error();
    }
    c.process = std::move(*r);
    c.state = child_info::status::running;
    c.started_at = detail::runtime_now_ns();
    return {};
  }

  // Stops a running child by its policy and waits for it (see the header).
  void stop_child(entry& c) {
    if (!c.process) return;
    detail::stop_children({{std::exchange(c.process, pid{}), c.spec.shutdown_or_default(), c.spec.id}}, flags_.abandon_after);
  }

  // Every running child, in reverse start order.
  void stop_all() {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      stop_child(*it);
      if (it->state == child_info::status::running) it->state = child_info::status::stopped;
    }
  }

  void child_exited(entry& c, const exit_reason& why) {
    if (!detail::wants_restart(c.spec.restart, why) || detail::runtime_closing()) {
      const bool significant = c.spec.significant;
      if (c.spec.restart == restart_type::temporary) erase(c);
      if (significant) check_auto_shutdown();
      return;
    }
    if (!add_restart()) return;
    detail::emit_restarting(c.spec.id, why);
    if (c.spec.backoff) {
      schedule_backoff(c);
      return;
    }
    restart_group(c);
  }

  // Counts one restart; false (and the supervisor is stopping) past the limit.
  bool add_restart() {
    if (restarts_.add()) return true;
    detail::emit_max_restarts();
    detail::log_rt(log_level::error, "otpp: supervisor {} reached max restart intensity ({} in {} ms); shutting down",
                   self(), flags_.max_restarts, flags_.max_seconds.count());
    stop(exit_reason::shutdown());  // terminate stops every child, newest first
    return false;
  }

  // The strategy's restart after `failed` exited: stop the rest of its group
  // (newest first; temporary ones are dropped), then start the group in
  // order. A start that fails leaves that child restarting and is retried
  // at once through the mailbox, counting toward the intensity.
  void restart_group(entry& failed) {
    const auto at = static_cast<std::size_t>(&failed - children_.data());
    std::size_t from = at, to = at + 1;
    if (flags_.strategy == strategy::one_for_all) {
      from = 0;
      to = children_.size();
    } else if (flags_.strategy == strategy::rest_for_one) {
      to = children_.size();
    }
    std::vector<std::string> group;
    for (std::size_t i = to; i-- > from;) {
      if (i != at) stop_child(children_[i]);
      group.push_back(children_[i].spec.id);
    }
    std::reverse(group.begin(), group.end());
    for (const std::string& id : group) {
      entry* c = find(id);
      if (c == nullptr || c->process) continue;
      if (c->spec.restart == restart_type::temporary) {
        erase(*c);
        continue;
      }
      auto r = start_one(*c);
      if (!r) {
        c->state = child_info::status::restarting;
        detail::log_rt(log_level::error, "otpp: supervisor {} could not restart child {}: {}", self(), c->spec.id,
                       r.error().to_string());
        send(self(), retry{c->spec.id, ++c->epoch, true});
        return;
      }
    }
  }

  // Delays the restart by the child's backoff: doubled when it crashed
  // again within `max` of its last start, else back to `initial`.
  void schedule_backoff(entry& c) {
    c.delay = detail::next_backoff(*c.spec.backoff, c.delay, detail::runtime_now_ns() - c.started_at);
    c.state = child_info::status::restarting;
    send_after(self(), retry{c.spec.id, ++c.epoch, false}, c.delay);
  }

  void check_auto_shutdown() {
    if (flags_.auto_shutdown == auto_shutdown::never) return;
    if (flags_.auto_shutdown == auto_shutdown::all_significant) {
      for (auto& c : children_)
        if (c.spec.significant && c.process) return;
    }
    stop(exit_reason::shutdown());  // terminate stops the rest
  }

  init_fn init_;                   // the callback form's, else empty
  std::vector<child_spec> specs_;  // until init has started them
  supervisor_flags flags_;
  std::vector<entry> children_;    // in start order
  detail::restart_window restarts_{flags_.max_restarts, flags_.max_seconds};
};

// -- the child API ------------------------------------------------------------------

namespace detail {
// The supervisor's answer, or why the call itself failed (noproc...).
template <class T>
result<T> flatten(result<result<T>> r) {
  if (!r) return r.error();
  return std::move(*r);
}
}  // namespace detail

/// Adds a child and starts it; returns its pid (empty if it ignored the start).
/// Fails with already_started (id running), error("already_present") (id
/// known, not running), a validation error, or the start's error.
inline result<pid> start_child(const server<supervisor>& sup, child_spec spec) {
  return detail::flatten(try_call(sup, supervisor::start_child_req{std::move(spec)}, infinity));
}

/// Stops a child by its shutdown policy; a temporary child's spec goes too.
inline result<void> terminate_child(const server<supervisor>& sup, std::string id) {
  return detail::flatten(try_call(sup, supervisor::terminate_child_req{std::move(id)}, infinity));
}

/// Starts a stopped child again from its spec.
inline result<pid> restart_child(const server<supervisor>& sup, std::string id) {
  return detail::flatten(try_call(sup, supervisor::restart_child_req{std::move(id)}, infinity));
}

/// Forgets a stopped child's spec.
inline result<void> delete_child(const server<supervisor>& sup, std::string id) {
  return detail::flatten(try_call(sup, supervisor::delete_child_req{std::move(id)}, infinity));
}

/// The children, newest-started first. Waits for the supervisor as long as
/// `timeout` (Erlang's which_children waits forever, the default here too).
[[nodiscard]] inline result<std::vector<child_info>> which_children(const server<supervisor>& sup,
                                                                    std::chrono::steady_clock::duration timeout = infinity) {
  return try_call(sup, supervisor::which_children_req{}, timeout);
}

[[nodiscard]] inline result<child_counts> count_children(const server<supervisor>& sup) {
  return try_call(sup, supervisor::count_children_req{}, infinity);
}

/// The spec of the child `id` (supervisor:get_childspec); error("not_found").
[[nodiscard]] inline result<child_spec> get_childspec(const server<supervisor>& sup, std::string id) {
  return detail::flatten(try_call(sup, supervisor::get_childspec_req{std::move(id)}, infinity));
}

}  // namespace otpp
