// Telemetry: attach / attach_many / detach / execute / span / list_handlers,
// throwing handlers, concurrent emitters, and the capture helper.

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/telemetry.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "support.hpp"

namespace tel = otpp::telemetry;

namespace {
const tel::event fetch{"tel_test", "fetch"};
const tel::event store{"tel_test", "store"};
const tel::span_events work{"tel_test", "work"};
}  // namespace

TEST_CASE("execute reaches the handlers attached to that event only, with measurements and metadata", "[telemetry]") {
  std::vector<std::string> seen;
  REQUIRE(tel::attach("t1", fetch, [&](const tel::event& e, const tel::measurements& m, const tel::metadata& md) {
    seen.push_back(e.name()[1] + " " + std::to_string(static_cast<int>(m.get("count").value_or(-1))) + " " +
                   std::string{md.get<std::string_view>("key").value_or("?")} + " " +
                   (md.get<bool>("hit").value_or(false) ? "hit" : "miss") + " " +
                   std::to_string(md.get<int>("size").value_or(-1)));
  }));
  CHECK(fetch.active());
  CHECK_FALSE(store.active());
  std::size_t size = 7;
  tel::execute(fetch, {{"count", 1}}, {{"key", "k1"}, {"hit", true}, {"size", size}});
  tel::execute(store, {{"count", 2}});
  CHECK(seen == std::vector<std::string>{"fetch 1 k1 hit 7"});
  CHECK(tel::detach("t1"));
  CHECK_FALSE(fetch.active());
  tel::execute(fetch, {{"count", 1}});
  CHECK(seen.size() == 1);
}

TEST_CASE("ids are unique; detach of an unknown id is not_found; attach_many shares one id", "[telemetry]") {
  int calls = 0;
  auto h = [&](const tel::event&, const tel::measurements&, const tel::metadata&) { ++calls; };
  REQUIRE(tel::attach_many("t2", {fetch, store}, h));
  CHECK(tel::attach("t2", fetch, h).error() == otpp::exit_reason::error("already_exists"));
  auto listed = tel::list_handlers({"tel_test"});
  CHECK(listed.size() == 2);
  CHECK(tel::list_handlers({"nothing"}).empty());
  tel::execute(fetch, {});
  tel::execute(store, {});
  CHECK(calls == 2);
  CHECK(tel::detach("t2"));
  CHECK(tel::detach("t2").error() == otpp::exit_reason::error("not_found"));
  CHECK_FALSE(store.active());
  CHECK(tel::event{"tel_test", "fetch"} == fetch);  // names are interned
}

TEST_CASE("a throwing handler is detached and logged; the emitter and other handlers carry on", "[telemetry]") {
  otpp_test::log_capture logs;
  int good = 0;
  REQUIRE(tel::attach("bad", fetch, [](const tel::event&, const tel::measurements&, const tel::metadata&) {
    throw std::runtime_error("handler bug");
  }));
  REQUIRE(tel::attach("good", fetch, [&](const tel::event&, const tel::measurements&, const tel::metadata&) { ++good; }));
  CHECK_NOTHROW(tel::execute(fetch, {{"count", 1}}));
  CHECK_NOTHROW(tel::execute(fetch, {{"count", 1}}));
  CHECK(good == 2);
  CHECK(logs.contains("telemetry handler bad failed on tel_test.fetch and was detached: handler bug"));
  CHECK(tel::detach("bad").error() == otpp::exit_reason::error("not_found"));
  CHECK(tel::detach("good"));
}

TEST_CASE("span emits start and stop with the duration, or exception and rethrows", "[telemetry]") {
  otpp::testing::telemetry_capture cap{work.start(), work.stop(), work.exception()};
  int r = tel::span(work, {{"job", "a"}}, [] { return 42; });
  CHECK(r == 42);
  CHECK_THROWS_AS(tel::span(work, {{"job", "b"}}, []() -> int { throw std::logic_error("bad job"); }), std::logic_error);
  tel::span(work, {}, [] {});  // void works too
  auto evs = cap.events();
  REQUIRE(evs.size() == 6);
  CHECK(evs[0].name == work.start().name());
  CHECK(evs[0].measurements.count("system_time") == 1);
  CHECK(evs[1].name == work.stop().name());
  CHECK(evs[1].measurements.at("duration") >= 0);
  CHECK(evs[1].metadata.at("job") == otpp::testing::captured_value{std::string{"a"}});
  CHECK(evs[3].name == work.exception().name());
  CHECK(evs[3].metadata.at("reason") == otpp::testing::captured_value{std::string{"bad job"}});
  CHECK(evs[3].metadata.at("kind") == otpp::testing::captured_value{std::string{"exception"}});
  CHECK(evs[5].name == work.stop().name());
}

TEST_CASE("a span with nothing attached just runs the function", "[telemetry]") {
  CHECK_FALSE(work.stop().active());
  CHECK(tel::span(work, {}, [] { return 7; }) == 7);
}

TEST_CASE("concurrent emitters while handlers come and go: every event handled by a live handler is counted",
          "[telemetry][stress]") {
  std::atomic<long> handled{0};
  constexpr int threads = 4, per = 20'000;
  std::atomic<bool> stop{false};
  std::thread churn{[&] {
    int i = 0;
    while (!stop.load()) {
      const std::string id = "churn" + std::to_string(i++ % 3);
      (void)tel::attach(id, store, [&](const tel::event&, const tel::measurements&, const tel::metadata&) {});
      (void)tel::detach(id);
    }
  }};
  REQUIRE(tel::attach("steady", store, [&](const tel::event&, const tel::measurements& m, const tel::metadata&) {
    handled.fetch_add(static_cast<long>(m.get("n").value_or(0)));
  }));
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < per; ++i) tel::execute(store, {{"n", 1}}, {{"i", i}});
    });
  for (auto& t : ts) t.join();
  stop = true;
  churn.join();
  CHECK(handled.load() == long{threads} * per);
  CHECK(tel::detach("steady"));
}

TEST_CASE("telemetry_capture waits for events emitted by processes", "[telemetry]") {
  otpp::testing::telemetry_capture cap{fetch};
  otpp::runtime rt{{.workers = 2}};
  class emitter : public otpp::gen_server<emitter> {
   public:
    struct go {};
    void handle_cast(go) { tel::execute(fetch, {{"count", 3}}, {{"who", self()}}); }
  };
  auto e = rt.start<emitter>().value();
  otpp::cast(e, emitter::go{});
  REQUIRE(cap.wait_for(1));
  auto evs = cap.events();
  CHECK(evs[0].measurements.at("count") == 3);
  CHECK(evs[0].metadata.at("who") == otpp::testing::captured_value{e.pid()});
  CHECK(cap.count(fetch) == 1);
}
