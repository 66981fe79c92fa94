#pragma once
// The time a runtime's timers follow.
//
// A runtime's timers (send_after, send_interval, set_timeout, hibernate_after)
// follow the steady clock unless runtime_config::clock names another source.
// Tests use otpp::testing::virtual_clock, which stands still until advanced;
// a custom source derives from clock_source. Call, stop and start timeouts
// always follow the steady clock: they bound how long a thread waits.

#include <chrono>

namespace otpp {

/// What a clock tells the timer services that follow it (the runtime
/// implements it; a clock that jumps calls it after each jump).
class clock_listener {
 public:
  /// Fires every timer due by the clock's current time; returns once their
  /// messages are delivered. Returns whether any was.
  virtual bool catch_up() noexcept = 0;
  /// Waits up to `limit` until the runtime has nothing running or queued.
  /// Returns false on timeout.
  [[nodiscard]] virtual bool await_quiescence(std::chrono::milliseconds limit) const noexcept = 0;

 protected:
  clock_listener() = default;
  /// Copyable: a listener is an interface, not an identity.
  clock_listener(const clock_listener&) = default;
  /// Copyable.
  clock_listener& operator=(const clock_listener&) = default;
  ~clock_listener() = default;
};

/// A source of time for timers. now() must never go backwards.
class clock_source {
 public:
  clock_source() = default;
  clock_source(const clock_source&) = delete;
  clock_source& operator=(const clock_source&) = delete;
  virtual ~clock_source() = default;
  /// Now on this clock.
  [[nodiscard]] virtual std::chrono::steady_clock::time_point now() const noexcept = 0;
  /// The timer services driven by this clock register here while they run,
  /// so that moving the clock can make them catch up.
  virtual void attach(clock_listener*) {}
  /// A timer service stops following this clock.
  virtual void detach(clock_listener*) noexcept {}
};

}  // namespace otpp
