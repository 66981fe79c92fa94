#pragma once
// The kernel's coarse monotonic clock: the steady clock's own time, moved on
// once per kernel tick. Reading it costs ~5 ns where the exact clock costs
// ~25 ns on a virtualised host (measured here), which matters for deadlines
// set on every call or item (timer deadlines, async_stream's per-item
// timeouts). It lags the exact clock by up to about two ticks, never leads
// it: a deadline taken from it gets four ticks added, so it is never early.

#include <chrono>
#include <cstdint>
#include <ctime>

namespace otpp::detail {

/// The coarse clock's resolution (one kernel tick), read once.
inline std::int64_t coarse_tick_ns() noexcept {
  static const std::int64_t res = [] {
    timespec r{};
    clock_getres(CLOCK_MONOTONIC_COARSE, &r);
    return static_cast<std::int64_t>(r.tv_sec) * 1'000'000'000 + r.tv_nsec;
  }();
  return res;
}

/// The coarse clock now, in ns on the steady clock's epoch (not after the
/// exact time).
inline std::int64_t coarse_now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// Now, in ns on the steady clock's epoch, as the start of a wait of
/// `delay_ns`: for a long one (256 ticks and more) the coarse clock plus four
/// ticks, so that its deadline is never early and at most 16 ms late, under
/// 1% of such a wait; for a short one the exact clock.
inline std::int64_t now_for_delay_ns(std::int64_t delay_ns) noexcept {
  const std::int64_t tick = coarse_tick_ns();
  if (delay_ns >= 256 * tick) return coarse_now_ns() + 4 * tick;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// steady_clock::now() + d, saturating, read as now_for_delay_ns says.
inline std::chrono::steady_clock::time_point coarse_deadline_after(std::chrono::steady_clock::duration d) noexcept {
  using sc = std::chrono::steady_clock;
  const std::int64_t delay = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  const sc::time_point now{std::chrono::duration_cast<sc::duration>(std::chrono::nanoseconds(now_for_delay_ns(delay)))};
  if (d >= sc::time_point::max() - now) return sc::time_point::max();
  return now + d;
}

/// A time no later than now, good enough to judge deadlines against when
/// the soonest is `soonest`: the coarse clock when that is over eight ticks
/// ahead of it (no deadline can have passed unseen), else the exact clock.
inline std::chrono::steady_clock::time_point now_for_deadlines(std::chrono::steady_clock::time_point soonest) noexcept {
  using sc = std::chrono::steady_clock;
  const std::int64_t coarse = coarse_now_ns();
  const auto coarse_tp = sc::time_point{std::chrono::duration_cast<sc::duration>(std::chrono::nanoseconds(coarse))};
  if (soonest > coarse_tp && soonest - coarse_tp > std::chrono::nanoseconds(8 * coarse_tick_ns())) return coarse_tp;
  return sc::now();
}

}  // namespace otpp::detail
