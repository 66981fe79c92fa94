// examples::search_cache_table (the ETS form) through its public API: reads
// without messages, CLOCK eviction, results kept across a crash through a
// keeper under a supervisor, and concurrent readers while the owner writes.

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "search_cache_table.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::search_cache_table;
using examples::search_cache_table_options;

namespace {

// A call: every cast sent before it has been handled.
examples::search_cache::stats flush(const otpp::server<search_cache_table>& c) {
  return otpp::call(c, search_cache_table::get_stats{});
}

}  // namespace

TEST_CASE("fetch reads the table from the caller's thread: no message reaches the cache", "[examples][search_cache_table]") {
  otpp::runtime rt{{.workers = 2}};
  auto c = rt.start<search_cache_table>(search_cache_table_options{.capacity = 100}).value();
  for (int i = 0; i < 10; ++i) otpp::cast(c, search_cache_table::cache{"q" + std::to_string(i), "r" + std::to_string(i)});
  (void)flush(c);
  auto reader = otpp::call(c, search_cache_table::get_reader{});
  const auto before = otpp::sys::statistics(c.pid()).value().messages_handled;
  for (int n = 0; n < 1000; ++n) {
    REQUIRE(reader.fetch("q" + std::to_string(n % 10)) == "r" + std::to_string(n % 10));
  }
  CHECK_FALSE(reader.fetch("absent"));
  const auto after = otpp::sys::statistics(c.pid()).value().messages_handled;
  CHECK(after - before <= 1);  // at most the statistics request itself
  auto s = flush(c);
  CHECK(s.hits == 1000);
  CHECK(s.misses == 1);
  CHECK(s.size == 10);
}

TEST_CASE("fetch into a string: filled on a hit (reusing its memory), left as it was on a miss", "[examples][search_cache_table]") {
  otpp::runtime rt{{.workers = 2}};
  auto c = rt.start<search_cache_table>(search_cache_table_options{.capacity = 100}).value();
  const std::string long_result(100, 'x');  // past any small-string buffer
  otpp::cast(c, search_cache_table::cache{"long", long_result});
  otpp::cast(c, search_cache_table::cache{"short", "s"});
  (void)flush(c);
  auto reader = otpp::call(c, search_cache_table::get_reader{});
  std::string into = "before";
  CHECK_FALSE(reader.fetch("absent", into));
  CHECK(into == "before");
  CHECK(reader.fetch("long", into));
  CHECK(into == long_result);
  const char* memory = into.data();
  CHECK(reader.fetch("short", into));
  CHECK(into == "s");
  CHECK(reader.fetch("long", into));
  CHECK(into == long_result);
  CHECK(into.data() == memory);  // the same buffer, filled again
  auto s = flush(c);
  CHECK(s.hits == 3);
  CHECK(s.misses == 1);
}

TEST_CASE("CLOCK eviction: a read since the last sweep saves an entry once", "[examples][search_cache_table]") {
  otpp::runtime rt{{.workers = 2}};
  auto c = rt.start<search_cache_table>(search_cache_table_options{.capacity = 3}).value();
  for (auto q : {"a", "b", "c"}) otpp::cast(c, search_cache_table::cache{q, std::string{"r"} + q});
  (void)flush(c);
  auto reader = otpp::call(c, search_cache_table::get_reader{});
  CHECK(reader.fetch("a") == "ra");               // a is referenced
  otpp::cast(c, search_cache_table::cache{"d", "rd"});  // the hand passes a (clearing it), evicts b
  CHECK(flush(c).evictions == 1);
  CHECK_FALSE(reader.fetch("b"));
  CHECK(reader.fetch("d") == "rd");               // d referenced now
  otpp::cast(c, search_cache_table::cache{"e", "re"});  // the hand is on c: not referenced, evicted
  CHECK(flush(c).evictions == 2);
  CHECK_FALSE(reader.fetch("c"));
  CHECK(reader.fetch("a") == "ra");
  CHECK(reader.fetch("e") == "re");
  otpp::cast(c, search_cache_table::cache{"a", "ra2"});  // a refresh replaces, evicts nothing
  auto s = flush(c);
  CHECK(s.evictions == 2);
  CHECK(s.size == 3);
  CHECK(reader.fetch("a") == "ra2");
}

TEST_CASE("the results survive a crash of the cache through its keeper, under a rest_for_one supervisor",
          "[examples][search_cache_table]") {
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::child_spec> kids{
      otpp::child<examples::search_cache_keeper>(otpp::name("test_results_keeper")),
      otpp::child<search_cache_table>(otpp::name("test_results_cache"),
                                      search_cache_table_options{.capacity = 10, .keeper = "test_results_keeper"})};
  auto sup = rt.start<otpp::supervisor>(kids, otpp::supervisor_flags{.strategy = otpp::strategy::rest_for_one}).value();
  auto c = otpp::whereis<search_cache_table>("test_results_cache");
  otpp::cast(c, search_cache_table::cache{"kept", "yes"});
  otpp::cast(c, search_cache_table::cache{"also", "yes"});
  (void)flush(c);
  auto old_reader = otpp::call(c, search_cache_table::get_reader{});
  otpp_test::log_capture logs;  // the kill's crash report
  otpp::exit_watch w{c.pid()};
  otpp::exit(c.pid(), otpp::exit_reason::kill());  // no terminate: the keeper is what keeps the table
  REQUIRE(w.wait(5s));
  auto again = otpp::server_cast<search_cache_table>(otpp::testing::await_child(sup, "test_results_cache", c.pid())).value();
  auto reader = otpp::call(again, search_cache_table::get_reader{});
  CHECK(reader.fetch("kept") == "yes");
  CHECK(reader.fetch("also") == "yes");
  CHECK(old_reader.fetch("kept") == "yes");  // the same table
  CHECK(flush(again).size == 2);
  // The restarted cache evicts from the rebuilt ring: capacity still holds.
  for (int i = 0; i < 20; ++i) otpp::cast(again, search_cache_table::cache{"k" + std::to_string(i), "v"});
  CHECK(flush(again).size == 10);
  otpp::stop(sup);
}

TEST_CASE("without a keeper the table dies with the cache; readers get a clear error", "[examples][search_cache_table]") {
  otpp::runtime rt{{.workers = 2}};
  auto c = rt.start<search_cache_table>(search_cache_table_options{.capacity = 10}).value();
  otpp::cast(c, search_cache_table::cache{"q", "r"});
  (void)flush(c);
  auto reader = otpp::call(c, search_cache_table::get_reader{});
  otpp::stop(c);
  CHECK_THROWS_AS(reader.fetch("q"), otpp::table_error);
}

TEST_CASE("stress: 4 reader threads fetch while the owner writes and evicts; every hit is the value written for its key",
          "[examples][search_cache_table]") {
  otpp::runtime rt{{.workers = 2}};
  auto c = rt.start<search_cache_table>(search_cache_table_options{.capacity = 500}).value();
  auto reader = otpp::call(c, search_cache_table::get_reader{});
  std::atomic<bool> done{false};
  std::atomic<int> wrong{0};
  std::atomic<long> hits{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      std::string into;
      unsigned x = 99u + static_cast<unsigned>(t);
      while (!done) {
        x = x * 1103515245u + 12345u;
        const int k = static_cast<int>((x >> 8) % 1000);
        // Odd threads fill a string of their own, even ones get a new one.
        if (t % 2 == 1) {
          if (reader.fetch("k" + std::to_string(k), into)) {
            ++hits;
            if (into != "v" + std::to_string(k)) ++wrong;
          }
        } else if (auto v = reader.fetch("k" + std::to_string(k))) {
          ++hits;
          if (*v != "v" + std::to_string(k)) ++wrong;
        }
      }
    });
  }
  for (int round = 0; round < 5; ++round)
    for (int k = 0; k < 1000; ++k) otpp::cast(c, search_cache_table::cache{"k" + std::to_string(k), "v" + std::to_string(k)});
  (void)flush(c);
  done = true;
  for (auto& r : readers) r.join();
  auto s = flush(c);
  CHECK(wrong == 0);
  CHECK(s.size == 500);
  CHECK(s.evictions >= 500);  // how many more depends on what the readers referenced
  CHECK(static_cast<long>(s.hits) == hits.load());
}
