// A search cache under a supervisor, persisted to a snapshot: cache some
// results, crash the cache, and find them again in its replacement.
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/core.h>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "search_cache.hpp"

int main() {
  using examples::search_cache;
  const auto snap = std::filesystem::temp_directory_path() / "otpp_example_search_cache.snap";
  std::filesystem::remove(snap);

  std::vector<otpp::child_spec> children{otpp::child<search_cache>(
      otpp::name("search_cache"), examples::search_cache_options{.capacity = 3, .snapshot = snap})};
  auto sup = otpp::start<otpp::supervisor>(children).value();
  auto cache = otpp::whereis<search_cache>("search_cache");

  for (const char* q : {"erlang", "elixir", "otp", "beam"})  // capacity 3: "erlang" is evicted
    otpp::cast(cache, search_cache::cache{q, std::string{"results for "} + q});
  (void)otpp::call(cache, search_cache::fetch{"elixir"});  // a hit makes it the most recent
  for (const char* q : {"erlang", "elixir", "otp"}) {
    auto r = otpp::call(cache, search_cache::fetch{q});
    fmt::print("fetch {:8} -> {}\n", q, r ? *r : "(miss)");
  }
  auto s = otpp::call(cache, search_cache::get_stats{});
  fmt::print("size {}/{}, hits {}, misses {}, evictions {}\n", s.size, s.capacity, s.hits, s.misses, s.evictions);

  // A crash runs terminate, which writes the snapshot; the supervisor
  // restarts the cache, whose init reads it back.
  otpp::set_log_level(otpp::log_level::none);
  otpp::exit(cache.pid(), otpp::exit_reason::error("injected crash"));
  const otpp::pid again = otpp::testing::await_child(sup, "search_cache", cache.pid());
  otpp::set_log_level(otpp::log_level::debug);
  auto restarted = otpp::server_cast<search_cache>(again).value();
  fmt::print("after a crash and restart: fetch otp -> {}\n",
             otpp::call(restarted, search_cache::fetch{"otp"}).value_or("(miss)"));
  otpp::stop(sup);
  std::filesystem::remove(snap);
  return 0;
}
