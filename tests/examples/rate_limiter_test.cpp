// examples::rate_limiter through its public API, on a virtual clock.

#include <chrono>
#include <string>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "rate_limiter.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::rate_algorithm;
using examples::rate_limiter;
using examples::rate_limiter_options;

namespace {
using fixture = otpp_test::virtual_runtime;
rate_limiter::decision check(const otpp::server<rate_limiter>& rl, const std::string& key) {
  return otpp::call(rl, rate_limiter::check{key});
}
}  // namespace

TEST_CASE("sliding window: N per window per key, the oldest request leaves the window first", "[examples][rate_limiter]") {
  fixture f;
  auto rl = f.rt.start<rate_limiter>().value();  // 5 a minute
  for (int i = 0; i < 5; ++i) {
    auto d = check(rl, "k");
    CHECK(d.allowed);
    CHECK(d.remaining == static_cast<std::size_t>(4 - i));
    f.clock->advance(10s);  // requests at 0, 10, 20, 30, 40 s
  }
  auto refused = check(rl, "k");  // at 50 s
  CHECK_FALSE(refused.allowed);
  CHECK(refused.retry_after == 10s);  // the one at 0 s leaves at 60 s
  CHECK(check(rl, "other").allowed);
  f.clock->advance(10s - 1ms);
  CHECK_FALSE(check(rl, "k").allowed);
  f.clock->advance(1ms);
  auto again = check(rl, "k");
  CHECK(again.allowed);
  CHECK(again.remaining == 0);
  auto s = otpp::call(rl, rate_limiter::get_stats{});
  CHECK(s.allowed == 7);
  CHECK(s.limited == 2);
}

TEST_CASE("token bucket: a burst of `limit`, then one per window/limit", "[examples][rate_limiter]") {
  fixture f;
  auto rl = f.rt.start<rate_limiter>(rate_limiter_options{.limit = 3, .window = 3s, .algorithm = rate_algorithm::token_bucket})
                .value();
  for (int i = 0; i < 3; ++i) CHECK(check(rl, "k").allowed);
  auto refused = check(rl, "k");
  CHECK_FALSE(refused.allowed);
  CHECK(refused.retry_after == 1s);
  f.clock->advance(999ms);
  CHECK_FALSE(check(rl, "k").allowed);
  f.clock->advance(1ms);
  CHECK(check(rl, "k").allowed);
  f.clock->advance(1h);  // refills to the cap, not beyond
  for (int i = 0; i < 3; ++i) CHECK(check(rl, "k").allowed);
  CHECK_FALSE(check(rl, "k").allowed);
}

TEST_CASE("peek does not count; reset forgets a key; bad options are start errors", "[examples][rate_limiter]") {
  fixture f;
  auto rl = f.rt.start<rate_limiter>(rate_limiter_options{.limit = 2, .window = 1s}).value();
  CHECK(otpp::call(rl, rate_limiter::peek{"k"}).remaining == 2);
  CHECK(check(rl, "k").allowed);
  CHECK(otpp::call(rl, rate_limiter::peek{"k"}).remaining == 1);
  CHECK(otpp::call(rl, rate_limiter::peek{"k"}).remaining == 1);
  CHECK(check(rl, "k").allowed);
  CHECK_FALSE(otpp::call(rl, rate_limiter::peek{"k"}).allowed);
  otpp::call(rl, rate_limiter::reset{"k"});
  CHECK(check(rl, "k").allowed);
  otpp_test::log_capture logs;
  CHECK(f.rt.start<rate_limiter>(rate_limiter_options{.limit = 0}).error().detail().find("limit must be positive") !=
        std::string_view::npos);
  CHECK(f.rt.start<rate_limiter>(rate_limiter_options{.window = 0ms}).error().detail().find("window must be positive") !=
        std::string_view::npos);
}

TEST_CASE("checks are telemetry events", "[examples][rate_limiter][telemetry]") {
  otpp::testing::telemetry_capture cap{examples::rate_limiter_events::check};
  fixture f;
  auto rl = f.rt.start<rate_limiter>(rate_limiter_options{.limit = 1, .window = 1s}).value();
  (void)check(rl, "k");
  (void)check(rl, "k");
  auto evs = cap.events();
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].metadata.at("allowed") == otpp::testing::captured_value{true});
  CHECK(evs[1].metadata.at("allowed") == otpp::testing::captured_value{false});
}

TEST_CASE("a flood of 1M distinct keys: live keys and the index stay bounded", "[examples][rate_limiter][flood]") {
  fixture f;
  for (auto algo : {rate_algorithm::sliding_window, rate_algorithm::token_bucket}) {
    auto rl = f.rt.start<rate_limiter>(rate_limiter_options{.limit = 5, .window = 1s, .algorithm = algo}).value();
    constexpr int windows = 100, per_window = 10'000;
    std::size_t most_keys = 0, most_buckets = 0;
    for (int w = 0; w < windows; ++w) {
      for (int i = 0; i < per_window; ++i) (void)check(rl, std::to_string(w * per_window + i));
      auto s = otpp::call(rl, rate_limiter::get_stats{});
      most_keys = std::max(most_keys, s.live_keys);
      most_buckets = std::max(most_buckets, s.bucket_count);
      f.clock->advance(1s);  // the purge timer runs
    }
    f.clock->advance(2s);
    auto s = otpp::call(rl, rate_limiter::get_stats{});
    INFO("most live keys " << most_keys << ", most buckets " << most_buckets);
    CHECK(most_keys <= 2 * per_window);     // never more than about a window's worth
    CHECK(most_buckets <= 8 * per_window);  // the index does not grow with the flood
    CHECK(s.live_keys == 0);
    CHECK(s.bucket_count <= 1024);  // and gives its memory back
    CHECK(s.purged == std::uint64_t{windows} * per_window);
    CHECK(s.allowed == std::uint64_t{windows} * per_window);
    otpp::stop(rl);
  }
}
