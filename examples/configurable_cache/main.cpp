// A cache of three entries with a default ttl; one entry gets a ttl of its own.
#include <chrono>
#include <string>

#include <fmt/core.h>

#include "configurable_cache.hpp"

int main() {
  using namespace std::chrono_literals;
  using cache = examples::configurable_cache<std::string, int>;
  auto c = otpp::start<cache>(examples::cache_options{.capacity = 3, .ttl = 1h}).value();
  otpp::cast(c, cache::put{"a", 1});
  otpp::cast(c, cache::put{"b", 2});
  otpp::cast(c, cache::put{"c", 3, 0ms + 1ms});  // expires almost at once
  otpp::cast(c, cache::put{"d", 4});            // over capacity: "a", the least recently used, goes
  fmt::print("a -> {}\n", otpp::call(c, cache::get{"a"}) ? "hit" : "miss (evicted)");
  fmt::print("b -> {}\n", otpp::call(c, cache::get{"b"}).value_or(-1));
  auto s = otpp::call(c, cache::get_stats{});
  fmt::print("size {}, hits {}, misses {}, evictions {}, expirations {}\n", s.size, s.hits, s.misses, s.evictions,
             s.expirations);
  otpp::stop(c);
  return 0;
}
