// examples::search_cache through its public API: LRU eviction, telemetry,
// periodic stats, persistence across a kill under a supervisor, corrupt
// and truncated snapshots.

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <string>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "search_cache.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::search_cache;
using examples::search_cache_options;

namespace {

using fixture = otpp_test::virtual_runtime;

std::filesystem::path temp_snapshot(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("otpp_test_" + name + "_" + std::to_string(::getpid()) + ".snap");
  std::filesystem::remove(p);
  return p;
}

// Writes a snapshot holding one entry; returns its size in bytes.
std::uintmax_t write_valid(otpp::runtime& rt, const std::filesystem::path& snap) {
  auto writer = rt.start<search_cache>(search_cache_options{.capacity = 3, .snapshot = snap}).value();
  otpp::cast(writer, search_cache::cache{"x", std::string(1000, 'x')});
  REQUIRE(otpp::call(writer, search_cache::save{}));
  otpp::stop(writer);
  return std::filesystem::file_size(snap);
}

std::optional<std::string> fetch(const otpp::server<search_cache>& c, const std::string& q) {
  return otpp::call(c, search_cache::fetch{q});
}

}  // namespace

TEST_CASE("search_cache evicts the least recently used entry", "[examples][search_cache]") {
  fixture f;
  auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 3}).value();
  for (auto q : {"a", "b", "c"}) otpp::cast(c, search_cache::cache{q, std::string{"r"} + q});
  CHECK(fetch(c, "a") == "ra");  // a is now the most recent; b the least
  otpp::cast(c, search_cache::cache{"d", "rd"});
  CHECK_FALSE(fetch(c, "b"));
  CHECK(fetch(c, "a") == "ra");
  CHECK(fetch(c, "c") == "rc");
  CHECK(fetch(c, "d") == "rd");
  otpp::cast(c, search_cache::cache{"c", "rc2"});  // a refresh: no growth, most recent
  otpp::cast(c, search_cache::cache{"e", "re"});   // recency was c, d, a: evicts a
  auto s = otpp::call(c, search_cache::get_stats{});
  CHECK(s.size == 3);
  CHECK(s.capacity == 3);
  CHECK(s.evictions == 2);
  CHECK(fetch(c, "c") == "rc2");
  CHECK(fetch(c, "e") == "re");
  CHECK_FALSE(fetch(c, "a"));
  CHECK(otpp::call(c, search_cache::get_stats{}).misses == 2);
}

TEST_CASE("search_cache stays bounded under many distinct queries", "[examples][search_cache]") {
  fixture f;
  auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 100}).value();
  for (int i = 0; i < 10'000; ++i) otpp::cast(c, search_cache::cache{"q" + std::to_string(i), "r"});
  auto s = otpp::call(c, search_cache::get_stats{});
  CHECK(s.size == 100);
  CHECK(s.evictions == 9'900);
  CHECK(fetch(c, "q9999"));
  CHECK_FALSE(fetch(c, "q9899"));
}

TEST_CASE("search_cache rejects a zero capacity", "[examples][search_cache]") {
  fixture f;
  auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 0});
  REQUIRE_FALSE(c);
  CHECK(c.error().detail().find("capacity must be positive") != std::string_view::npos);
}

TEST_CASE("search_cache emits fetch, cache and periodic stats telemetry", "[examples][search_cache][telemetry]") {
  namespace ev = examples::search_cache_events;
  otpp::testing::telemetry_capture cap{ev::fetch, ev::cache, ev::stats};
  fixture f;
  auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 10, .stats_every = 1s}).value();
  otpp::cast(c, search_cache::cache{"x", "1"});
  (void)fetch(c, "x");
  (void)fetch(c, "y");
  f.clock->advance(1s);
  auto evs = cap.events();
  REQUIRE(evs.size() == 4);
  CHECK(evs[0].name == ev::cache.name());
  CHECK(evs[0].measurements.at("size") == 1);
  CHECK(evs[1].metadata.at("hit") == otpp::testing::captured_value{true});
  CHECK(evs[2].metadata.at("hit") == otpp::testing::captured_value{false});
  CHECK(evs[3].name == ev::stats.name());
  CHECK(evs[3].measurements.at("hits") == 1);
  CHECK(evs[3].measurements.at("misses") == 1);
}

TEST_CASE("search_cache keeps its entries across a kill under its supervisor", "[examples][search_cache][persistence]") {
  fixture f;
  const auto snap = temp_snapshot("kill");
  std::vector<otpp::child_spec> kids{otpp::child<search_cache>(
      otpp::name("test_search_cache"), search_cache_options{.capacity = 10, .snapshot = snap, .snapshot_every = 1s})};
  auto sup = f.rt.start<otpp::supervisor>(kids).value();
  auto c = otpp::whereis<search_cache>("test_search_cache");
  otpp::cast(c, search_cache::cache{"kept", "yes"});
  otpp::cast(c, search_cache::cache{"also", "yes"});
  (void)fetch(c, "kept");     // flushes the casts
  f.clock->advance(1s);        // the periodic snapshot, written in the background
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!std::filesystem::exists(snap) && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  REQUIRE(std::filesystem::exists(snap));
  otpp_test::log_capture logs;  // the kill's crash report
  otpp::exit_watch w{c.pid()};
  otpp::exit(c.pid(), otpp::exit_reason::kill());  // no terminate: only the snapshot survives
  REQUIRE(w.wait(5s));
  auto again = otpp::server_cast<search_cache>(otpp::testing::await_child(sup, "test_search_cache", c.pid())).value();
  REQUIRE(again.pid());
  CHECK(fetch(again, "kept") == "yes");
  CHECK(fetch(again, "also") == "yes");
  otpp::stop(sup);
  std::filesystem::remove(snap);
}

TEST_CASE("search_cache saves on terminate and restores most recent first", "[examples][search_cache][persistence]") {
  fixture f;
  const auto snap = temp_snapshot("terminate");
  {
    auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 3, .snapshot = snap}).value();
    for (auto q : {"a", "b", "c"}) otpp::cast(c, search_cache::cache{q, q});
    (void)fetch(c, "a");  // recency: a, c, b
    otpp::stop(c);
  }
  auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 3, .snapshot = snap}).value();
  CHECK(otpp::call(c, search_cache::get_stats{}).size == 3);
  otpp::cast(c, search_cache::cache{"d", "d"});  // evicts the least recent restored: b
  CHECK_FALSE(fetch(c, "b"));
  CHECK(fetch(c, "a") == "a");
  otpp::stop(c);

  // A smaller capacity keeps the most recent.
  auto small = f.rt.start<search_cache>(search_cache_options{.capacity = 1, .snapshot = snap}).value();
  CHECK(otpp::call(small, search_cache::get_stats{}).size == 1);
  CHECK(fetch(small, "a") == "a");
  otpp::stop(small);
  std::filesystem::remove(snap);
}

TEST_CASE("a corrupt or truncated snapshot starts empty with a warning", "[examples][search_cache][persistence]") {
  fixture f;
  const auto snap = temp_snapshot("corrupt");
  otpp_test::log_capture logs;
  {
    std::ofstream out{snap, std::ios::binary};
    out << "this is not a snapshot";
  }
  auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 3, .snapshot = snap});
  REQUIRE(c);
  CHECK(otpp::call(*c, search_cache::get_stats{}).size == 0);
  CHECK(logs.contains("corrupt or truncated"));
  otpp::stop(*c);

  for (double fraction : {0.999, 0.5, 0.01}) {
    const auto full = write_valid(f.rt, snap);
    std::filesystem::resize_file(snap, static_cast<std::uintmax_t>(static_cast<double>(full) * fraction));
    auto cut = f.rt.start<search_cache>(search_cache_options{.capacity = 3, .snapshot = snap});
    REQUIRE(cut);
    CHECK(otpp::call(*cut, search_cache::get_stats{}).size == 0);
    otpp::stop(*cut);
  }
  (void)write_valid(f.rt, snap);
  // A flipped byte fails the checksum.
  {
    std::fstream io{snap, std::ios::binary | std::ios::in | std::ios::out};
    io.seekp(40);
    io.put('!');
  }
  auto flipped = f.rt.start<search_cache>(search_cache_options{.capacity = 3, .snapshot = snap});
  REQUIRE(flipped);
  CHECK(otpp::call(*flipped, search_cache::get_stats{}).size == 0);
  otpp::stop(*flipped);
  std::filesystem::remove(snap);
}

TEST_CASE("a snapshot that cannot be read starts empty with a warning, never a crash loop", "[examples][search_cache][persistence]") {
  fixture f;
  const auto dir = temp_snapshot("is_a_directory");
  std::filesystem::create_directory(dir);
  otpp_test::log_capture logs;
  auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 3, .snapshot = dir});
  REQUIRE(c);
  CHECK(otpp::call(*c, search_cache::get_stats{}).size == 0);
  CHECK(logs.contains("cannot read snapshot"));
  otpp::stop(*c);  // its terminate cannot write either: a warning, not a crash
  std::filesystem::remove_all(dir);
}

TEST_CASE("a snapshot restores only what fits the capacity, most recent first", "[examples][search_cache][persistence]") {
  fixture f;
  const auto snap = temp_snapshot("stream");
  {
    auto big = f.rt.start<search_cache>(search_cache_options{.capacity = 1000, .snapshot = snap}).value();
    for (int i = 0; i < 1000; ++i) otpp::cast(big, search_cache::cache{"q" + std::to_string(i), std::to_string(i)});
    REQUIRE(otpp::call(big, search_cache::save{}));
    otpp::stop(big);
  }
  auto small = f.rt.start<search_cache>(search_cache_options{.capacity = 10, .snapshot = snap}).value();
  CHECK(otpp::call(small, search_cache::get_stats{}).size == 10);
  CHECK(fetch(small, "q999") == "999");
  CHECK(fetch(small, "q990") == "990");
  CHECK_FALSE(fetch(small, "q989"));
  otpp::stop(small);
  std::filesystem::remove(snap);
}

TEST_CASE("the periodic snapshot is written off the server's turn: fetches go on while it is stuck", "[examples][search_cache][persistence]") {
  fixture f;
  const auto snap = temp_snapshot("fifo");
  const std::string tmp = snap.string() + ".tmp";
  std::filesystem::remove(tmp);
  REQUIRE(::mkfifo(tmp.c_str(), 0600) == 0);  // opening it to write blocks until someone reads
  otpp_test::log_capture logs;
  auto c = f.rt.start<search_cache>(search_cache_options{.capacity = 10, .snapshot = snap, .snapshot_every = 1s}).value();
  otpp::cast(c, search_cache::cache{"k", "v"});
  f.clock->advance(1s);  // the writer starts, and blocks in open
  for (int i = 0; i < 100; ++i) CHECK(otpp::call(c, search_cache::fetch{"k"}, 1s) == "v");
  f.clock->advance(1s);  // the next tick finds the write still running and skips
  CHECK(otpp::call(c, search_cache::fetch{"k"}, 1s) == "v");
  // Unblock the writer: read what it writes, till it closes.
  const int rd = ::open(tmp.c_str(), O_RDONLY);
  REQUIRE(rd >= 0);
  char buf[4096];
  while (::read(rd, buf, sizeof buf) > 0) {
  }
  ::close(rd);
  otpp::stop(c);  // waits for the writer, then writes the final snapshot itself
  CHECK(std::filesystem::is_regular_file(snap));
  std::filesystem::remove(snap);
  std::filesystem::remove(tmp);
}
