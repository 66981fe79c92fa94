// examples::configurable_cache through its public API, on a virtual clock.
#include <chrono>
#include <string>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "configurable_cache.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using cache = examples::configurable_cache<std::string, int>;

namespace {
using fixture = otpp_test::virtual_runtime;
}  // namespace

TEST_CASE("configurable_cache: entries expire at their ttl; a per-entry ttl wins", "[examples][configurable_cache]") {
  fixture f;
  auto c = f.rt.start<cache>(examples::cache_options{.capacity = 10, .ttl = 10s, .sweep_every = 1h}).value();
  otpp::cast(c, cache::put{"default", 1});
  otpp::cast(c, cache::put{"short", 2, 1s});
  (void)otpp::call(c, cache::get_stats{});  // the puts are in before time moves
  f.clock->advance(999ms);
  CHECK(otpp::call(c, cache::get{"short"}) == 2);
  f.clock->advance(1ms);
  CHECK_FALSE(otpp::call(c, cache::get{"short"}));
  f.clock->advance(9s - 1ms);
  CHECK(otpp::call(c, cache::get{"default"}) == 1);
  otpp::cast(c, cache::put{"default", 3});  // a put renews the ttl
  (void)otpp::call(c, cache::get_stats{});
  f.clock->advance(9s);
  CHECK(otpp::call(c, cache::get{"default"}) == 3);
  auto s = otpp::call(c, cache::get_stats{});
  CHECK(s.hits == 3);
  CHECK(s.misses == 1);
  CHECK(s.expirations == 1);
}

TEST_CASE("configurable_cache: least recently used goes past capacity; the sweep frees expired entries",
          "[examples][configurable_cache]") {
  fixture f;
  auto c = f.rt.start<cache>(examples::cache_options{.capacity = 2, .ttl = 5s}).value();  // sweeps every 5 s
  otpp::cast(c, cache::put{"a", 1});
  otpp::cast(c, cache::put{"b", 2});
  CHECK(otpp::call(c, cache::get{"a"}) == 1);  // b is now the least recent
  otpp::cast(c, cache::put{"c", 3});
  CHECK_FALSE(otpp::call(c, cache::get{"b"}));  // the call comes after the cast from this thread
  CHECK(otpp::call(c, cache::get_stats{}).evictions == 1);
  f.clock->advance(5s);
  auto s = otpp::call(c, cache::get_stats{});
  CHECK(s.size == 0);
  CHECK(s.expirations == 2);
  CHECK_FALSE(otpp::call(c, cache::remove{"a"}));
}

TEST_CASE("configurable_cache: bad options are start errors", "[examples][configurable_cache]") {
  fixture f;
  otpp_test::log_capture logs;
  CHECK_FALSE(f.rt.start<cache>(examples::cache_options{.capacity = 0}));
  CHECK_FALSE(f.rt.start<cache>(examples::cache_options{.ttl = -1s}));
}
