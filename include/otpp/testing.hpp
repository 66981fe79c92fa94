#pragma once
// Helpers for testing code built on otpp.
//
// virtual_clock: time that moves only when the test says so, for timers and
// gen_server timeouts that never sleep and never flake.
//
//   auto clock = std::make_shared<otpp::testing::virtual_clock>();
//   otpp::runtime rt{{.workers = 2, .clock = clock}};
//   auto s = rt.start<session>().value();     // its init calls set_timeout(30s)
//   clock->advance(30s);                       // the timeout message is queued
//   CHECK(otpp::call(s, session::expired{}));  // a call flushes it through

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <vector>

#include "detail/runtime_core.hpp"
#include "detail/timer_service.hpp"

namespace otpp::testing {

/// A clock for runtime_config::clock that stands still until advance().
/// Timers and gen_server timeouts of the runtimes using it follow it; call
/// and stop timeouts keep following real time.
class virtual_clock final : public detail::clock_source {
 public:
  using duration = std::chrono::steady_clock::duration;
  using time_point = std::chrono::steady_clock::time_point;

  virtual_clock() noexcept = default;

  [[nodiscard]] time_point now() const noexcept override { return time_point{duration{now_.load(std::memory_order_acquire)}}; }

  /// Moves time forward by `d` (negative counts as zero) and returns once
  /// every timer due by the new time has delivered its message and the
  /// runtimes on this clock have handled everything that followed: nothing
  /// is running or queued, and no timer set meanwhile is due. (A process
  /// that keeps itself busy, or a chain of zero-delay timers, is cut off
  /// after `settle_limit`.)
  void advance(duration d) {
    std::lock_guard lock{mutex_};
    now_.fetch_add(std::max(d, duration::zero()).count(), std::memory_order_acq_rel);
    const auto deadline = std::chrono::steady_clock::now() + settle_limit;
    for (;;) {
      bool delivered = false;
      for (detail::timer_service* s : services_) delivered = s->catch_up() || delivered;
      bool quiet = true;
      for (detail::timer_service* s : services_) quiet = s->await_quiescence(settle_limit) && quiet;
      if ((!delivered && quiet) || std::chrono::steady_clock::now() >= deadline) return;
    }
  }

  /// Lets everything due at the current time happen, without moving it.
  void settle() { advance(duration::zero()); }

  /// How long advance() waits, in real time, for the runtimes to go quiet.
  static constexpr std::chrono::seconds settle_limit{10};

  void attach(detail::timer_service* s) override {
    std::lock_guard lock{mutex_};
    services_.push_back(s);
  }
  void detach(detail::timer_service* s) noexcept override {
    std::lock_guard lock{mutex_};
    std::erase(services_, s);
  }

 private:
  // An arbitrary start, far from zero so that deadlines stay positive.
  std::atomic<duration::rep> now_{std::chrono::duration_cast<duration>(std::chrono::hours(1)).count()};
  std::mutex mutex_;
  std::vector<detail::timer_service*> services_;
};

}  // namespace otpp::testing
