// Every finite timeout holds: a call, stop or sys request returns `timeout`
// within its timeout whatever the handler does, from a plain thread or from a
// process, on an idle or a busy server; negative timeouts are refused.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

using otpp_test::gate;

class blocker : public otpp::gen_server<blocker> {
 public:
  struct block {};      // call: waits at the gate, replies 1
  struct get_calls {};  // call
  explicit blocker(gate* g, bool block_in_terminate = false) : g_{g}, in_terminate_{block_in_terminate} {}
  int handle_call(block) {
    ++calls_;
    g_->wait();
    return 1;
  }
  int handle_call(get_calls) { return ++calls_; }
  void terminate(const otpp::exit_reason&) {
    if (in_terminate_) g_->wait();
  }

 private:
  gate* g_;
  bool in_terminate_;
  int calls_ = 0;
};

double ms_since(clk::time_point t0) { return std::chrono::duration<double, std::milli>(clk::now() - t0).count(); }

// Generous for sanitizer builds on two cores; the handler itself blocks 10 s.
constexpr double bound_ms = 2000;

/// Calls `s` from inside a process, the way a server calls another.
class relay : public otpp::gen_server<relay> {
 public:
  struct call_blocker {
    otpp::server<blocker> target;
    std::chrono::milliseconds timeout;
  };
  struct outcome {
    otpp::exit_kind kind;
    double ms;
  };
  outcome handle_call(call_blocker c) {
    auto t0 = clk::now();
    auto r = otpp::try_call(c.target, blocker::block{}, c.timeout);
    return {r ? otpp::exit_kind::normal : r.error().kind(), ms_since(t0)};
  }
};

}  // namespace

TEST_CASE("a call to an idle server times out even when its handler blocks") {
  for (unsigned workers : {1u, 2u}) {
    CAPTURE(workers);
    gate g;
    otpp::runtime rt{{.workers = workers}};
    auto s = rt.start<blocker>(&g).value();
    auto t0 = clk::now();
    auto r = otpp::try_call(s, blocker::block{}, 50ms);
    const double ms = ms_since(t0);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind() == otpp::exit_kind::timeout);
    CHECK(ms >= 49);
    CHECK(ms < bound_ms);
    g.release();
    // The server kept running and dropped the late reply.
    CHECK(otpp::call(s, blocker::get_calls{}) == 2);
  }
}

TEST_CASE("a call from a process to an idle server times out, on one worker or two") {
  for (unsigned workers : {1u, 2u}) {
    CAPTURE(workers);
    gate g;
    otpp::runtime rt{{.workers = workers}};
    auto s = rt.start<blocker>(&g).value();
    auto caller = rt.start<relay>().value();
    auto out = otpp::call(caller, relay::call_blocker{s, 50ms}, 30s);
    CHECK(out.kind == otpp::exit_kind::timeout);
    CHECK(out.ms >= 49);
    CHECK(out.ms < bound_ms);
    g.release();
    CHECK(otpp::call(s, blocker::get_calls{}) == 2);
  }
}

TEST_CASE("an infinite call still runs and returns the handler's reply") {
  gate g;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<blocker>(&g).value();
  std::thread opener{[&] {
    while (g.entered.load() == 0) std::this_thread::yield();
    g.release();
  }};
  CHECK(otpp::call(s, blocker::block{}, otpp::infinity) == 1);
  opener.join();
}

TEST_CASE("stop with a timeout returns timeout while terminate blocks") {
  gate g;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<blocker>(&g, true).value();
  otpp::exit_watch w{s};
  auto t0 = clk::now();
  auto r = otpp::try_stop(s, otpp::exit_reason::shutdown(), 50ms);
  const double ms = ms_since(t0);
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::timeout);
  CHECK(ms < bound_ms);
  g.release();
  CHECK(w.wait(10s)->kind() == otpp::exit_kind::shutdown);
}

TEST_CASE("a sys request times out on a process stuck in a handler") {
  gate g;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<blocker>(&g).value();
  std::thread busy{[&] { (void)otpp::try_call(s, blocker::block{}, 30s); }};
  while (g.entered.load() == 0) std::this_thread::yield();
  auto t0 = clk::now();
  auto st = otpp::sys::statistics(s, 50ms);
  auto state = otpp::sys::get_state(s, [](const blocker&) { return 0; }, 50ms);
  const double ms = ms_since(t0);
  REQUIRE_FALSE(st);
  CHECK(st.error().kind() == otpp::exit_kind::timeout);
  REQUIRE_FALSE(state);
  CHECK(state.error().kind() == otpp::exit_kind::timeout);
  CHECK(ms < 2 * bound_ms);
  g.release();
  busy.join();
}

TEST_CASE("negative timeouts are refused up front and leave the server untouched") {
  gate g;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<blocker>(&g).value();
  CHECK_THROWS_AS((void)otpp::try_call(s, blocker::get_calls{}, -1ms), std::invalid_argument);
  CHECK_THROWS_WITH((void)otpp::try_call(s, blocker::get_calls{}, -5ms), Catch::Contains("negative timeout -5 ms"));
  CHECK_THROWS_AS((void)otpp::try_stop(s, {}, -1ms), std::invalid_argument);
  CHECK_THROWS_AS((void)otpp::sys::statistics(s, -1ms), std::invalid_argument);
  CHECK(s.alive());
  CHECK(otpp::call(s, blocker::get_calls{}) == 1);  // no call reached it
}
