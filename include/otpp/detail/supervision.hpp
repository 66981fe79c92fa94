#pragma once
// What supervisor and dynamic_supervisor share: spec checks, starting a
// child, the restart-intensity window, backoff, and stopping children by
// their shutdown policies.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "../child_spec.hpp"
#include "../exit_reason.hpp"
#include "../log.hpp"
#include "../process.hpp"
#include "runtime_core.hpp"
#include "../supervisor_events.hpp"
#include "../telemetry.hpp"

namespace otpp::detail {

inline void emit_restarting(std::string_view child, const exit_reason& why) {
  if (!supervisor_events::child_restarting.active()) return;
  const std::string reason = why.to_string();
  telemetry::execute(supervisor_events::child_restarting, {{"count", 1}},
                     {{"supervisor", self()}, {"child", child}, {"reason", std::string_view{reason}}});
}

inline void emit_max_restarts() { telemetry::execute(supervisor_events::max_restarts, {{"count", 1}}, {{"supervisor", self()}}); }

/// Why a spec cannot be used (Erlang's words), checks common to both kinds
/// of supervisor.
template <class Spec>
std::optional<std::string> check_child(const Spec& s) {
  if (!s.start) return std::string{"missing_start"};
  if (s.shutdown && s.shutdown->policy() == shutdown_policy::kind::timeout && s.shutdown->time().count() < 0)
    return fmt::format("invalid_shutdown: {}", s.shutdown->time().count());
  if (s.backoff && (s.backoff->initial.count() < 0 || s.backoff->max < s.backoff->initial))
    return fmt::format("invalid_backoff: {}", s.id);
  return std::nullopt;
}

/// Runs a start function; a throw is a start error like a returned one.
template <class F>
result<pid> invoke_start(F&& start) {
  try {
    return std::forward<F>(start)();
  } catch (...) {
    return exit_reason::of_exception(std::current_exception());
  }
}

[[nodiscard]] inline bool wants_restart(restart_type r, const exit_reason& why) noexcept {
  switch (r) {
    case restart_type::permanent: return true;
    case restart_type::transient: return !why.is_sane();
    case restart_type::temporary: return false;
  }
  return false;
}

/// A runtime shutting down stops its processes newest first, children before
/// their supervisors: those exits are not restarted.
[[nodiscard]] inline bool runtime_closing() noexcept { return tls().current->rt()->closed(); }

[[nodiscard]] inline std::int64_t runtime_now_ns() { return timer_now_ns(*tls().current->rt()); }

/// OTP's restart intensity: more than `max` restarts within `period` (a
/// sliding window on the runtime's clock) is too many.
class restart_window {
 public:
  restart_window(int max, std::chrono::milliseconds period) : max_{max}, period_ns_{std::chrono::nanoseconds(period).count()} {}

  /// Counts one restart now; false when that one is over the limit.
  [[nodiscard]] bool add() {
    const std::int64_t now = runtime_now_ns();
    times_.push_back(now);
    while (!times_.empty() && times_.front() + period_ns_ <= now) times_.pop_front();
    return static_cast<int>(times_.size()) <= max_;
  }

 private:
  int max_;
  std::int64_t period_ns_;
  std::deque<std::int64_t> times_;
};

/// The next backoff delay: `initial` after a run longer than `max`, else
/// the previous delay doubled, capped.
[[nodiscard]] inline std::chrono::milliseconds next_backoff(const restart_backoff& b, std::chrono::milliseconds previous,
                                                            std::int64_t up_for_ns) {
  if (previous.count() == 0 || up_for_ns > std::chrono::nanoseconds(b.max).count()) return b.initial;
  return std::min(previous * 2, b.max);
}

struct stop_target {
  pid process;
  shutdown_policy policy;
  std::string_view id;  // for the log; may be empty
};

/// Stops every target at once, each by its policy, and returns when all have
/// exited or been abandoned: shutdown signals go out together, timeouts run
/// side by side, kills follow for those that outlive theirs. A killed child
/// whose handler does not return within `abandon_after` is logged and left
/// behind (C++ cannot stop a thread).
inline void stop_children(const std::vector<stop_target>& targets, std::chrono::milliseconds abandon_after) {
  using clock = std::chrono::steady_clock;
  std::deque<exit_watch> watches;  // a deque: exit_watch does not move
  std::vector<clock::time_point> killed_at(targets.size(), clock::time_point::max());
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const stop_target& t = targets[i];
    watches.emplace_back(t.process);
    unlink(t.process);
    if (t.policy.policy() == shutdown_policy::kind::brutal_kill) {
      exit(t.process, exit_reason::kill());
      killed_at[i] = clock::now();
    } else {
      exit(t.process, exit_reason::shutdown());
    }
  }
  const auto sent = clock::now();
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const stop_target& t = targets[i];
    if (t.policy.policy() == shutdown_policy::kind::wait_forever) {
      (void)watches[i].wait();
    } else if (t.policy.policy() == shutdown_policy::kind::timeout) {
      const auto left = sent + t.policy.time() - clock::now();
      if (!watches[i].wait(std::max(left, clock::duration::zero()))) {
        exit(t.process, exit_reason::kill());
        killed_at[i] = clock::now();
      }
    }
  }
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (killed_at[i] == clock::time_point::max()) continue;
    const auto left = killed_at[i] + abandon_after - clock::now();
    if (!watches[i].wait(std::max(left, clock::duration::zero()))) {
      log_rt(log_level::error, "otpp: supervisor {} abandoned child {} ({}): it did not exit within {} ms of a kill",
             self(), targets[i].id, targets[i].process, abandon_after.count());
    }
  }
}

}  // namespace otpp::detail
