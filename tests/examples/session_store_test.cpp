// examples::session_store and examples::user_sessions through their public
// API, on a virtual clock.

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "session_store.hpp"
#include "support.hpp"
#include "user_sessions.hpp"

using namespace std::chrono_literals;
using examples::session_store;
using examples::session_store_options;

namespace {
using fixture = otpp_test::virtual_runtime;
const otpp::exit_reason expired = otpp::exit_reason::error("expired");
const otpp::exit_reason not_found = otpp::exit_reason::error("not_found");
}  // namespace

TEST_CASE("session ids are 128 random bits in hex, all distinct", "[examples][session_store]") {
  std::set<std::string> ids;
  for (int i = 0; i < 10'000; ++i) {
    auto id = examples::random_session_id();
    REQUIRE(id.size() == 32);
    REQUIRE(std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }));
    ids.insert(id);
  }
  CHECK(ids.size() == 10'000);
}

TEST_CASE("create, get, refresh, remove with a ttl", "[examples][session_store]") {
  fixture f;
  auto s = f.rt.start<session_store>(session_store_options{.ttl = 10s, .cleanup_every = 1h}).value();
  const std::string a = otpp::call(s, session_store::create{"alice"}).value();
  const std::string b = otpp::call(s, session_store::create{"bob"}).value();
  CHECK(a != b);
  CHECK(otpp::call(s, session_store::get{a}).value() == "alice");
  f.clock->advance(9s);
  CHECK(otpp::call(s, session_store::refresh{b}));  // bob lives until 19 s
  f.clock->advance(1s);
  CHECK(otpp::call(s, session_store::get{a}).error() == expired);  // exactly at its ttl
  CHECK(otpp::call(s, session_store::refresh{a}).error() == expired);
  CHECK(otpp::call(s, session_store::get{b}).value() == "bob");
  f.clock->advance(9s);
  CHECK(otpp::call(s, session_store::get{b}).error() == expired);
  CHECK(otpp::call(s, session_store::get{"no such id"}).error() == not_found);
  CHECK(otpp::call(s, session_store::get{""}).error() == not_found);
  CHECK(otpp::call(s, session_store::remove{a}));
  CHECK(otpp::call(s, session_store::remove{a}).error() == not_found);
  CHECK(otpp::call(s, session_store::get{a}).error() == not_found);
}

TEST_CASE("cleanup forgets expired sessions after a grace of one interval", "[examples][session_store]") {
  otpp::testing::telemetry_capture cap{examples::session_store_events::cleanup};
  fixture f;
  auto s = f.rt.start<session_store>(session_store_options{.ttl = 5s, .cleanup_every = 10s}).value();
  const std::string old = otpp::call(s, session_store::create{"x"}).value();
  f.clock->advance(6s);
  const std::string fresh = otpp::call(s, session_store::create{"y"}).value();
  f.clock->advance(4s);  // first cleanup at 10 s: old expired at 5 s, kept (reports expired)
  CHECK(otpp::call(s, session_store::get{old}).error() == expired);
  CHECK(otpp::call(s, session_store::size{}) == 2);
  f.clock->advance(10s);  // cleanup at 20 s: old expired more than an interval ago; fresh expired at 11 s, kept
  CHECK(otpp::call(s, session_store::get{old}).error() == not_found);
  CHECK(otpp::call(s, session_store::get{fresh}).error() == expired);
  CHECK(otpp::call(s, session_store::size{}) == 1);
  f.clock->advance(10s);
  CHECK(otpp::call(s, session_store::size{}) == 0);
  auto evs = cap.events();
  REQUIRE(evs.size() == 3);
  CHECK(evs[0].measurements.at("removed") == 0);
  CHECK(evs[1].measurements.at("removed") == 1);
  CHECK(evs[2].measurements.at("live") == 0);
}

TEST_CASE("create past max_sessions fails; bad options are start errors", "[examples][session_store]") {
  fixture f;
  auto s = f.rt.start<session_store>(session_store_options{.max_sessions = 2}).value();
  CHECK(otpp::call(s, session_store::create{"1"}));
  CHECK(otpp::call(s, session_store::create{"2"}));
  CHECK(otpp::call(s, session_store::create{"3"}).error() == otpp::exit_reason::error("too_many_sessions"));
  otpp_test::log_capture logs;
  CHECK_FALSE(f.rt.start<session_store>(session_store_options{.ttl = 0ms}));
}

TEST_CASE("user_sessions: one process per user, found again by open", "[examples][user_sessions]") {
  fixture f;
  examples::user_sessions users{f.rt, {.idle_ttl = 1min, .max_users = 3}};
  auto alice = users.open("alice").value();
  otpp::cast(alice, examples::user_session::put{"k", "v"});
  CHECK(otpp::call(alice, examples::user_session::get{"k"}) == "v");
  CHECK(users.open("alice").value() == alice);
  CHECK(users.find("alice") == alice);
  CHECK_FALSE(users.find("nobody"));
  CHECK(users.close("nobody").error() == not_found);
  (void)users.open("bob").value();
  (void)users.open("carol").value();
  CHECK(users.open("dave").error() == otpp::exit_reason::error("max_children"));
  CHECK(users.close("bob"));
  CHECK(users.count() == 2);
  CHECK(users.open("dave"));
}

TEST_CASE("user_sessions: concurrent opens of one user start one process", "[examples][user_sessions]") {
  fixture f;
  examples::user_sessions users{f.rt, {}};
  std::vector<otpp::pid> got(8);
  std::vector<std::thread> ts;
  for (int i = 0; i < 8; ++i) ts.emplace_back([&, i] { got[i] = users.open("same").value().pid(); });
  for (auto& t : ts) t.join();
  for (auto& p : got) CHECK(p == got[0]);
  CHECK(users.count() == 1);
}

TEST_CASE("user_sessions: an idle session ends for good; a crashed one comes back empty", "[examples][user_sessions]") {
  fixture f;
  examples::user_sessions users{f.rt, {.idle_ttl = 1min}};
  auto a = users.open("a").value();
  auto b = users.open("b").value();
  otpp::cast(b, examples::user_session::put{"k", "v"});
  f.clock->advance(59s);
  CHECK(otpp::call(b, examples::user_session::get{"k"}) == "v");  // b was used: its idle clock restarts
  otpp::exit_watch wa{a.pid()};
  f.clock->advance(1s);
  REQUIRE(wa.wait(5s));
  CHECK(wa.wait()->is_normal());
  CHECK(users.count() == 1);  // not restarted
  CHECK_FALSE(users.find("a"));

  otpp_test::log_capture logs;
  otpp::exit_watch wb{b.pid()};
  otpp::exit(b.pid(), otpp::exit_reason::error("crash"));
  REQUIRE(wb.wait(5s));
  otpp::server<examples::user_session> b2;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!(b2 = users.find("b")) || b2 == b) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::yield();
  }
  CHECK_FALSE(otpp::call(b2, examples::user_session::get{"k"}));
  CHECK(otpp::call(b2, examples::user_session::user{}) == "b");
}
