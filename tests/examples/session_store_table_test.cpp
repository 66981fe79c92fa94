// examples::session_store_table (the ETS form) through its public API, on a
// virtual clock: reads from plain threads without a message, writes through
// the owner, cleanup, and many readers beside a writer.

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "session_store_table.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::session_store_table;
using examples::session_store_table_options;

namespace {
const otpp::exit_reason expired = otpp::exit_reason::error("expired");
const otpp::exit_reason not_found = otpp::exit_reason::error("not_found");

struct fixture : otpp_test::virtual_runtime {
  session_store_table_options options(std::chrono::milliseconds ttl, std::chrono::milliseconds cleanup_every) {
    return {.ttl = ttl, .cleanup_every = cleanup_every, .clock = [this] { return rt.now(); }};
  }
};
}  // namespace

TEST_CASE("a reader on a plain thread sees created, refreshed, expired and removed sessions", "[examples][session_store_table]") {
  fixture f;
  auto s = f.rt.start<session_store_table>(f.options(10s, 1h)).value();
  const auto sessions = otpp::call(s, session_store_table::get_reader{});
  const std::string a = otpp::call(s, session_store_table::create{"alice"}).value();
  const std::string b = otpp::call(s, session_store_table::create{"bob"}).value();
  CHECK(a != b);
  CHECK(sessions.get(a).value() == "alice");
  f.clock->advance(9s);
  CHECK(otpp::call(s, session_store_table::refresh{b}));  // bob lives until 19 s
  f.clock->advance(1s);
  CHECK(sessions.get(a).error() == expired);  // exactly at its ttl
  CHECK(otpp::call(s, session_store_table::refresh{a}).error() == expired);
  CHECK(sessions.get(b).value() == "bob");
  f.clock->advance(9s);
  CHECK(sessions.get(b).error() == expired);
  CHECK(sessions.get("no such id").error() == not_found);
  CHECK(otpp::call(s, session_store_table::remove{a}));
  CHECK(otpp::call(s, session_store_table::remove{a}).error() == not_found);
  CHECK(sessions.get(a).error() == not_found);
  CHECK(otpp::call(s, session_store_table::refresh{"no such id"}).error() == not_found);
}

TEST_CASE("cleanup forgets expired sessions after a grace of one interval", "[examples][session_store_table]") {
  otpp::testing::telemetry_capture cap{examples::session_store_events::cleanup};
  fixture f;
  auto s = f.rt.start<session_store_table>(f.options(5s, 10s)).value();
  const auto sessions = otpp::call(s, session_store_table::get_reader{});
  const std::string old = otpp::call(s, session_store_table::create{"x"}).value();
  f.clock->advance(6s);
  const std::string fresh = otpp::call(s, session_store_table::create{"y"}).value();
  f.clock->advance(4s);  // cleanup at 10 s: old expired at 5 s, kept
  CHECK(otpp::call(s, session_store_table::size{}) == 2);  // also waits for the cleanup
  CHECK(sessions.get(old).error() == expired);
  f.clock->advance(10s);  // cleanup at 20 s: old goes; fresh expired at 11 s, kept
  CHECK(otpp::call(s, session_store_table::size{}) == 1);
  CHECK(sessions.get(old).error() == not_found);
  CHECK(sessions.get(fresh).error() == expired);
  f.clock->advance(10s);
  CHECK(otpp::call(s, session_store_table::size{}) == 0);
  auto evs = cap.events();
  REQUIRE(evs.size() == 3);
  CHECK(evs[0].measurements.at("removed") == 0);
  CHECK(evs[1].measurements.at("removed") == 1);
  CHECK(evs[2].measurements.at("live") == 0);
}

TEST_CASE("create past max_sessions fails; the sessions go with the owner", "[examples][session_store_table]") {
  fixture f;
  auto opts = f.options(1min, 1h);
  opts.max_sessions = 2;
  auto s = f.rt.start<session_store_table>(std::move(opts)).value();
  const auto sessions = otpp::call(s, session_store_table::get_reader{});
  const std::string one = otpp::call(s, session_store_table::create{"1"}).value();
  CHECK(otpp::call(s, session_store_table::create{"2"}));
  CHECK(otpp::call(s, session_store_table::create{"3"}).error() == otpp::exit_reason::error("too_many_sessions"));
  otpp::exit_watch w{s.pid()};
  otpp::stop(s);
  REQUIRE(w.wait(5s));
  CHECK_THROWS_AS(sessions.get(one), otpp::table_error);  // the table was deleted with its owner
}

TEST_CASE("4 reader threads beside the owner's writes: every read is a session's data or a clear error", "[examples][session_store_table]") {
  fixture f;
  auto s = f.rt.start<session_store_table>(f.options(1h, 1h)).value();
  const auto sessions = otpp::call(s, session_store_table::get_reader{});
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.push_back(otpp::call(s, session_store_table::create{"data-" + std::to_string(i)}).value());
  std::atomic<bool> done{false};
  std::atomic<long> wrong{0}, hits{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r)
    readers.emplace_back([&, r] {
      for (std::size_t i = static_cast<std::size_t>(r); !done.load(std::memory_order_relaxed); i = (i + 7) % ids.size()) {
        auto got = sessions.get(ids[i]);
        if (got) {
          hits.fetch_add(1, std::memory_order_relaxed);
          if (*got != "data-" + std::to_string(i)) wrong.fetch_add(1, std::memory_order_relaxed);
        } else if (got.error() != not_found) {
          wrong.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  // The owner removes the odd sessions and refreshes the even ones meanwhile.
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i % 2) {
      CHECK(otpp::call(s, session_store_table::remove{ids[i]}));
    } else {
      CHECK(otpp::call(s, session_store_table::refresh{ids[i]}));
    }
  }
  CHECK(otpp_test::eventually([&] { return hits.load() > 10'000; }));
  done = true;
  for (auto& t : readers) t.join();
  CHECK(wrong.load() == 0);
  CHECK(otpp::call(s, session_store_table::size{}) == 100);
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(sessions.get(ids[i]).has_value() == (i % 2 == 0));
}
