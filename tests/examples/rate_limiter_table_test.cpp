// examples::rate_limiter_table (the ETS form) through its public API: the
// fixed window, checks from many threads with exact counts, and a purge
// that keeps memory bounded under a flood of keys.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "rate_limiter_table.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::rate_limiter_table;
using examples::rate_limiter_table_options;

namespace {

// A clock the test moves by hand.
struct manual_clock {
  std::shared_ptr<std::atomic<std::int64_t>> ms = std::make_shared<std::atomic<std::int64_t>>(0);
  auto source() const {
    return [ms = ms] { return std::chrono::steady_clock::time_point{std::chrono::milliseconds{ms->load()}}; };
  }
};

}  // namespace

TEST_CASE("a key gets `limit` checks per window; a refusal says when the window ends", "[examples][rate_limiter_table]") {
  otpp::runtime rt{{.workers = 2}};
  manual_clock clock;
  auto rl = rt.start<rate_limiter_table>(rate_limiter_table_options{.limit = 3, .window = 1000ms, .clock = clock.source()}).value();
  auto checker = otpp::call(rl, rate_limiter_table::get_checker{});
  clock.ms->store(200);
  CHECK(checker.peek("k").remaining == 2);  // peek counts nothing
  for (std::size_t left : {2u, 1u, 0u}) {
    auto d = checker.check("k");
    CHECK(d.allowed);
    CHECK(d.remaining == left);
  }
  auto refused = checker.check("k");
  CHECK_FALSE(refused.allowed);
  CHECK(refused.retry_after == 800ms);
  CHECK(checker.check("other").allowed);  // keys are independent
  clock.ms->store(1000);                  // the next window
  CHECK(checker.check("k").allowed);
}

TEST_CASE("checks from 4 threads on one key allow exactly `limit`; on distinct keys each gets its own", "[examples][rate_limiter_table]") {
  otpp::runtime rt{{.workers = 2}};
  manual_clock clock;
  auto rl = rt.start<rate_limiter_table>(rate_limiter_table_options{.limit = 1500, .window = 1000ms, .clock = clock.source()}).value();
  auto checker = otpp::call(rl, rate_limiter_table::get_checker{});
  std::atomic<int> hot_allowed{0};
  std::atomic<int> own_allowed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        if (checker.check("hot").allowed) ++hot_allowed;
        if (checker.check("own" + std::to_string(t)).allowed) ++own_allowed;
      }
    });
  }
  for (auto& th : ts) th.join();
  CHECK(hot_allowed == 1500);
  CHECK(own_allowed == 4000);
}

TEST_CASE("a flood of distinct keys is purged once its window is over", "[examples][rate_limiter_table]") {
  otpp::runtime rt{{.workers = 2}};
  manual_clock clock;
  auto rl = rt.start<rate_limiter_table>(rate_limiter_table_options{.limit = 5, .window = 1000ms, .clock = clock.source()}).value();
  auto checker = otpp::call(rl, rate_limiter_table::get_checker{});
  for (int i = 0; i < 100'000; ++i) (void)checker.check("flood:" + std::to_string(i));
  CHECK(otpp::call(rl, rate_limiter_table::live_counters{}) == 100'000);
  CHECK(otpp::call(rl, rate_limiter_table::purge{}) == 0);  // their window is not over
  clock.ms->store(1500);
  (void)checker.check("fresh");
  CHECK(otpp::call(rl, rate_limiter_table::purge{}, 60s) == 100'000);  // a slow build may need more than 5 s
  CHECK(otpp::call(rl, rate_limiter_table::live_counters{}) == 1);
}
