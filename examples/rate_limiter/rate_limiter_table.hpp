#pragma once
// The rate limiter's ETS form: per-key counters in a public otpp::table,
// bumped with update_counter from the caller's own thread or process, so
// checks for different keys run in parallel and none is a message. A small
// server owns the table and purges the windows that are over.
//
//   auto rl = otpp::start_link<examples::rate_limiter_table>(
//                 examples::rate_limiter_table_options{.limit = 100, .window = 1s}).value();
//   examples::rate_checker checker = otpp::call(rl, examples::rate_limiter_table::get_checker{});
//   if (auto d = checker.check("user:42"); !d.allowed) reject(d.retry_after);   // any thread
//
// The algorithm is a fixed window (the usual ETS limiter's): a key may make
// `limit` requests per window, windows being consecutive spans of `window`
// on the clock. Unlike rate_limiter's sliding window, a key can make up to
// 2 x limit requests across a window boundary; in exchange a check is one
// update_counter, with no timestamps kept.
//
// Memory stays bounded under a flood of distinct keys: every purge_every
// (default: the window) the server erases the counters of windows that are
// over, a page at a time, so the purge itself holds little.
//
// Telemetry: [rate_limiter, check] {count} {allowed}, from the checker's thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <otpp/gen_server.hpp>
#include <otpp/table.hpp>
#include <otpp/telemetry.hpp>
#include <otpp/timer.hpp>

#include "rate_limiter.hpp"

namespace examples {

/// A key's counter for one window.
struct rate_window_key {
  std::string key;
  std::int64_t window = 0;  // which window: now / window length
  friend bool operator==(const rate_window_key&, const rate_window_key&) = default;
};

}  // namespace examples

template <>
struct std::hash<examples::rate_window_key> {
  std::size_t operator()(const examples::rate_window_key& k) const noexcept {
    return std::hash<std::string>{}(k.key) ^ (static_cast<std::size_t>(k.window) * 0x9e3779b97f4a7c15ull);
  }
};

namespace examples {

using rate_counters = otpp::table<rate_window_key, std::int64_t, otpp::set>;

struct rate_limiter_table_options {
  std::size_t limit = 5;
  std::chrono::milliseconds window{60'000};
  /// 0: every window.
  std::chrono::milliseconds purge_every{0};
  /// The time windows follow; empty: otpp::monotonic_time (the runtime's clock).
  std::function<std::chrono::steady_clock::time_point()> clock{};
};

/// Checks from any thread or process, without a message.
class rate_checker {
 public:
  rate_checker() = default;
  rate_checker(rate_counters t, std::size_t limit, std::chrono::milliseconds window,
               std::function<std::chrono::steady_clock::time_point()> clock)
      : table_{std::move(t)}, limit_{static_cast<std::int64_t>(limit)}, window_ns_{window_ns(window)}, clock_{std::move(clock)} {}

  /// Counts the request if allowed.
  [[nodiscard]] rate_limiter::decision check(std::string_view key) const {
    const std::int64_t now = now_ns();
    const std::int64_t w = now / window_ns_;
    // Counts past the limit too (one increment is all a check costs); what
    // the counter says beyond `limit` only tells how far over the key is.
    const std::int64_t n = table_.update_counter(rate_window_key{std::string{key}, w}, 1, std::int64_t{0});
    const bool allowed = n <= limit_;
    otpp::telemetry::execute(rate_limiter_events::check, {{"count", 1}}, {{"allowed", allowed}});
    return decide(allowed, n, now, w);
  }
  /// The decision a check would get now, without counting anything.
  [[nodiscard]] rate_limiter::decision peek(std::string_view key) const {
    const std::int64_t now = now_ns();
    const std::int64_t w = now / window_ns_;
    const std::int64_t n = table_.lookup(rate_window_key{std::string{key}, w}).value_or(0) + 1;
    return decide(n <= limit_, n, now, w);
  }

 private:
  static std::int64_t window_ns(std::chrono::milliseconds w) {
    if (w.count() <= 0) throw std::invalid_argument("rate_limiter_table: the window must be positive");
    return std::chrono::duration_cast<std::chrono::nanoseconds>(w).count();
  }
  [[nodiscard]] std::int64_t now_ns() const {
    const auto t = clock_ ? clock_() : otpp::monotonic_time();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }
  [[nodiscard]] rate_limiter::decision decide(bool allowed, std::int64_t n, std::int64_t now, std::int64_t w) const {
    if (allowed) return {true, static_cast<std::size_t>(limit_ - n), {}};
    const std::int64_t left = (w + 1) * window_ns_ - now;
    return {false, 0, std::chrono::milliseconds{(left + 999'999) / 1'000'000}};
  }

  rate_counters table_;
  std::int64_t limit_ = 0;
  std::int64_t window_ns_ = 1;
  std::function<std::chrono::steady_clock::time_point()> clock_;
};

class rate_limiter_table : public otpp::gen_server<rate_limiter_table> {
 public:
  /// call → a rate_checker.
  struct get_checker {};
  /// call: purges now → the counters erased.
  struct purge {};
  /// call → the counters in the table.
  struct live_counters {};
  struct purge_tick {};

  explicit rate_limiter_table(rate_limiter_table_options opts = {}) : opts_{std::move(opts)} {
    if (opts_.limit == 0) throw std::invalid_argument("rate_limiter_table: limit must be positive");
    if (opts_.window.count() <= 0) throw std::invalid_argument("rate_limiter_table: the window must be positive");
  }

  void init() {
    // Public: the checkers write their counters from their own threads.
    table_ = rate_counters::create({.access = otpp::table_access::public_access, .write_concurrency = true});
    const auto every = opts_.purge_every.count() > 0 ? opts_.purge_every : opts_.window;
    purge_timer_ = otpp::send_interval(self(), purge_tick{}, every);
  }

  rate_checker handle_call(get_checker) const { return {table_, opts_.limit, opts_.window, opts_.clock}; }
  std::size_t handle_call(purge) { return purge_over(); }
  std::size_t handle_call(live_counters) const { return table_.size(); }
  void handle_info(purge_tick) { (void)purge_over(); }

 private:
  // Erases the counters of windows before the current one, a page at a time.
  std::size_t purge_over() {
    const auto t = opts_.clock ? opts_.clock() : otpp::monotonic_time();
    const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    const std::int64_t current = now / std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.window).count();
    std::size_t erased = 0;
    auto page = table_.select([current](const rate_window_key& k, std::int64_t) { return k.window < current; }, 4096);
    for (;;) {
      for (auto& [k, n] : page.objects) erased += table_.erase(k) ? 1 : 0;
      if (!page.more) break;
      page = table_.select(std::move(*page.more));
    }
    return erased;
  }

  rate_limiter_table_options opts_;
  rate_counters table_;
  otpp::timer_ref purge_timer_;
};

}  // namespace examples
