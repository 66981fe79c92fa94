// otpp::system_monitor: long_message_queue raised and cleared with its two
// thresholds, long_handler raised once per stall, nothing for a quiet
// runtime, bad options refused.

#include <chrono>
#include <stdexcept>
#include <string>
#include <variant>

#include <otpp/otpp.hpp>
#include <otpp/system_monitor.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using otpp_test::eventually;
using otpp_test::gate;

namespace {

class sink : public otpp::gen_server<sink> {
 public:
  struct hold {
    gate* g;
  };
  struct item {};
  void handle_cast(hold h) { h.g->wait(); }
  void handle_cast(item) {}
};

template <class T>
T meta(const otpp::testing::captured_event& e, const std::string& key) {
  return std::get<T>(e.metadata.at(key));
}

}  // namespace

TEST_CASE("system_monitor: long_message_queue is raised at the threshold and cleared under the lower one") {
  otpp::runtime rt{{.workers = 2}};
  otpp::testing::telemetry_capture cap{otpp::monitor_events::long_message_queue};
  auto s = rt.start<sink>().value();
  otpp::system_monitor watch{rt, {.interval = 5ms, .long_message_queue = 100, .long_message_queue_off = 10}};
  gate g;
  otpp::cast(s, sink::hold{&g});
  REQUIRE(eventually([&] { return g.entered.load() == 1; }));
  for (int i = 0; i < 150; ++i) otpp::cast(s, sink::item{});
  REQUIRE(cap.wait_for(1, 10s));
  g.release();
  REQUIRE(cap.wait_for(2, 10s));
  const auto evs = cap.events();
  CHECK(meta<bool>(evs[0], "on"));
  CHECK(evs[0].measurements.at("queue_length") >= 100);
  CHECK(meta<otpp::pid>(evs[0], "pid") == s.pid());
  CHECK(meta<std::string>(evs[0], "type").find("sink") != std::string::npos);
  CHECK(!meta<bool>(evs[1], "on"));
  CHECK(evs[1].measurements.at("queue_length") < 10);
  const auto seen = watch.passes();
  REQUIRE(eventually([&] { return watch.passes() >= seen + 3; }));
  CHECK(cap.count(otpp::monitor_events::long_message_queue) == 2);  // raised once, cleared once
}

TEST_CASE("system_monitor: long_handler is raised once for a process stuck in a handler with messages waiting") {
  otpp::runtime rt{{.workers = 2}};
  otpp::testing::telemetry_capture cap{otpp::monitor_events::long_handler};
  auto s = rt.start<sink>().value();
  otpp::system_monitor watch{rt, {.interval = 5ms, .long_handler = 30ms}};
  gate g;
  otpp::cast(s, sink::hold{&g});
  REQUIRE(eventually([&] { return g.entered.load() == 1; }));
  otpp::cast(s, sink::item{});
  REQUIRE(cap.wait_for(1, 10s));
  const auto seen = watch.passes();
  REQUIRE(eventually([&] { return watch.passes() >= seen + 5; }));
  CHECK(cap.count(otpp::monitor_events::long_handler) == 1);  // once per stall
  const auto e = cap.events().at(0);
  CHECK(e.measurements.at("duration") >= 30);
  CHECK(e.measurements.at("queue_length") == 1);
  CHECK(meta<otpp::pid>(e, "pid") == s.pid());
  g.release();
}

TEST_CASE("system_monitor: a quiet runtime raises nothing; bad options are refused") {
  otpp::runtime rt{{.workers = 2}};
  otpp::testing::telemetry_capture cap{otpp::monitor_events::long_message_queue, otpp::monitor_events::long_handler};
  auto s = rt.start<sink>().value();
  for (int i = 0; i < 100; ++i) otpp::cast(s, sink::item{});
  {
    otpp::system_monitor watch{rt, {.interval = 2ms, .long_message_queue = 1000, .long_handler = 1000ms}};
    REQUIRE(eventually([&] { return watch.passes() >= 5; }));
  }
  CHECK(cap.events().empty());
  CHECK_THROWS_AS(otpp::system_monitor(rt, {.interval = 0ms}), std::invalid_argument);
  CHECK_THROWS_AS(otpp::system_monitor(rt, {.long_message_queue = 10, .long_message_queue_off = 10}), std::invalid_argument);
}
