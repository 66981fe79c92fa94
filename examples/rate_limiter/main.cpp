// Five requests a minute per user: the sixth is refused with the time to wait.
#include <chrono>
#include <string>

#include <fmt/core.h>

#include <otpp/otpp.hpp>

#include "rate_limiter.hpp"

int main() {
  using examples::rate_limiter;
  auto rl = otpp::start<rate_limiter>(otpp::name("rate_limiter")).value();  // 5 per minute
  for (int i = 1; i <= 6; ++i) {
    auto d = otpp::call(rl, rate_limiter::check{"user:42"});
    if (d.allowed) {
      fmt::print("request {}: allowed, {} left\n", i, d.remaining);
    } else {
      fmt::print("request {}: limited, retry after {} ms\n", i, d.retry_after.count());
    }
  }
  fmt::print("another user: {}\n", otpp::call(rl, rate_limiter::check{"user:7"}).allowed ? "allowed" : "limited");

  auto bucket = otpp::start<rate_limiter>(examples::rate_limiter_options{
                    .limit = 3, .window = std::chrono::seconds(3), .algorithm = examples::rate_algorithm::token_bucket})
                    .value();
  int allowed = 0;
  for (int i = 0; i < 10; ++i) allowed += otpp::call(bucket, rate_limiter::check{"burst"}).allowed ? 1 : 0;
  fmt::print("token bucket (3 per 3 s): a burst of 10 lets {} through\n", allowed);
  auto s = otpp::call(rl, rate_limiter::get_stats{});
  fmt::print("live keys {}, allowed {}, limited {}\n", s.live_keys, s.allowed, s.limited);
  otpp::stop(bucket);
  otpp::stop(rl);
  return 0;
}
