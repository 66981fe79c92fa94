#pragma once
// A per-key rate limiter as a gen_server: N requests per window per key
// (default 5 a minute), as a sliding window or a token bucket.
//
//   auto rl = otpp::start_link<examples::rate_limiter>(otpp::name("rate_limiter"),
//                 examples::rate_limiter_options{.limit = 100, .window = 1s}).value();
//   auto d = otpp::call(rl, examples::rate_limiter::check{"user:42"});
//   if (!d.allowed) reject(d.retry_after);
//
// sliding_window: a request is allowed when fewer than `limit` were allowed
// for that key within the last `window` (exact: the timestamps of the last
// `limit` allowed requests are kept). token_bucket: each key holds up to
// `limit` tokens, refilled continuously at limit/window; a request takes one.
//
// Memory stays bounded under a flood of distinct keys: every purge_every
// (default: the window) a timer drops the keys whose state has gone back to
// "never seen" (no request inside the window; a full bucket), and the index
// gives its memory back once it is mostly empty. Time is the runtime's clock
// (otpp::monotonic_time), so tests drive it with a virtual clock.
//
// Telemetry: [rate_limiter, check] {count} {allowed}.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <otpp/gen_server.hpp>
#include <otpp/telemetry.hpp>
#include <otpp/timer.hpp>

namespace examples {

enum class rate_algorithm { sliding_window, token_bucket };

struct rate_limiter_options {
  std::size_t limit = 5;
  std::chrono::milliseconds window{60'000};
  rate_algorithm algorithm = rate_algorithm::sliding_window;
  /// 0: every window.
  std::chrono::milliseconds purge_every{0};
};

namespace rate_limiter_events {
inline const otpp::telemetry::event check{"rate_limiter", "check"};
}  // namespace rate_limiter_events

class rate_limiter : public otpp::gen_server<rate_limiter> {
 public:
  // Pure bookkeeping, no waits: callers may run it on their own thread
  // (see otpp::declares_nonblocking_handlers).
  static constexpr bool nonblocking_handlers = true;
  struct decision {
    bool allowed = false;
    /// Requests that would be allowed now (after this one, for a check).
    std::size_t remaining = 0;
    /// When refused: how long until one is allowed again.
    std::chrono::milliseconds retry_after{0};
  };
  /// call → decision; counts the request if allowed.
  struct check {
    std::string key;
  };
  /// call → decision, without counting anything.
  struct peek {
    std::string key;
  };
  /// call: forgets a key.
  struct reset {
    std::string key;
  };
  struct stats {
    std::size_t live_keys = 0;
    std::size_t bucket_count = 0;  // the index's buckets: what purging gives back
    std::uint64_t allowed = 0;
    std::uint64_t limited = 0;
    std::uint64_t purged = 0;
  };
  struct get_stats {};
  struct purge_tick {};

  explicit rate_limiter(rate_limiter_options opts = {}) : opts_{opts} {
    if (opts_.limit == 0) throw std::invalid_argument("rate_limiter: limit must be positive");
    if (opts_.window.count() <= 0) throw std::invalid_argument("rate_limiter: window must be positive");
    if (opts_.purge_every.count() <= 0) opts_.purge_every = opts_.window;
    window_ns_ = std::chrono::nanoseconds(opts_.window).count();
  }

  void init() { purge_timer_ = otpp::send_interval(self(), purge_tick{}, opts_.purge_every); }

  decision handle_call(const check& c) {
    const std::int64_t now = now_ns();
    auto [it, fresh] = keys_.try_emplace(c.key);
    decision d = decide(it->second, now, true);
    if (d.allowed) {
      ++stats_.allowed;
    } else {
      ++stats_.limited;
    }
    otpp::telemetry::execute(rate_limiter_events::check, {{"count", 1}}, {{"allowed", d.allowed}});
    return d;
  }

  decision handle_call(const peek& p) {
    auto it = keys_.find(p.key);
    if (it == keys_.end()) return decision{true, opts_.limit, {}};
    state copy = it->second;
    return decide(copy, now_ns(), false);
  }

  void handle_call(const reset& r) { keys_.erase(r.key); }

  stats handle_call(get_stats) const {
    stats s = stats_;
    s.live_keys = keys_.size();
    s.bucket_count = keys_.bucket_count();
    return s;
  }

  void handle_info(purge_tick) {
    const std::int64_t now = now_ns();
    for (auto it = keys_.begin(); it != keys_.end();) {
      if (idle(it->second, now)) {
        it = keys_.erase(it);
        ++stats_.purged;
      } else {
        ++it;
      }
    }
    // unordered_map never shrinks on its own: give the buckets back once
    // the flood is over.
    if (keys_.bucket_count() > 1024 && keys_.size() * 4 < keys_.bucket_count()) keys_.rehash(0);
  }

 private:
  struct state {
    // sliding window: times of the allowed requests, oldest first, at most `limit`
    std::vector<std::int64_t> times;
    // token bucket
    double tokens = -1;  // negative: full (never used)
    std::int64_t refilled = 0;
  };

  [[nodiscard]] static std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(otpp::monotonic_time().time_since_epoch()).count();
  }
  [[nodiscard]] static std::chrono::milliseconds ceil_ms(std::int64_t ns) {
    return std::chrono::ceil<std::chrono::milliseconds>(std::chrono::nanoseconds(std::max<std::int64_t>(ns, 0)));
  }

  decision decide(state& s, std::int64_t now, bool count) {
    if (opts_.algorithm == rate_algorithm::sliding_window) {
      auto& t = s.times;
      t.erase(t.begin(), std::find_if(t.begin(), t.end(), [&](std::int64_t x) { return x > now - window_ns_; }));
      if (t.size() >= opts_.limit) return decision{false, 0, ceil_ms(t.front() + window_ns_ - now)};
      if (count) t.push_back(now);
      return decision{true, opts_.limit - t.size(), {}};
    }
    const double cap = static_cast<double>(opts_.limit);
    const double per_ns = cap / static_cast<double>(window_ns_);
    if (s.tokens < 0) {
      s.tokens = cap;
      s.refilled = now;
    }
    s.tokens = std::min(cap, s.tokens + static_cast<double>(now - s.refilled) * per_ns);
    s.refilled = now;
    if (s.tokens < 1.0) return decision{false, 0, ceil_ms(static_cast<std::int64_t>((1.0 - s.tokens) / per_ns))};
    if (count) s.tokens -= 1.0;
    return decision{true, static_cast<std::size_t>(s.tokens), {}};
  }

  // Back to "never seen": nothing inside the window, or a full bucket.
  [[nodiscard]] bool idle(const state& s, std::int64_t now) const {
    if (opts_.algorithm == rate_algorithm::sliding_window) return s.times.empty() || s.times.back() <= now - window_ns_;
    if (s.tokens < 0) return true;
    const double per_ns = static_cast<double>(opts_.limit) / static_cast<double>(window_ns_);
    return s.tokens + static_cast<double>(now - s.refilled) * per_ns >= static_cast<double>(opts_.limit);
  }

  rate_limiter_options opts_;
  std::int64_t window_ns_ = 0;
  std::unordered_map<std::string, state> keys_;
  stats stats_;
  otpp::timer_ref purge_timer_;
};

}  // namespace examples
