// Timers (OTP semantics §4) and gen_server idle timeouts and hibernation
// (§1.3), on a virtual clock: time moves only when the test advances it, and
// a call to the receiver after advance() is handled after every message the
// advance delivered.

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

struct tick {
  int n;
};

// Records every tick it receives, in order, with the virtual time of arrival.
class receiver : public otpp::gen_server<receiver> {
 public:
  struct seen {};
  struct seen_at {};
  using info_types = otpp::type_list<tick>;

  explicit receiver(std::shared_ptr<otpp::testing::virtual_clock> clock) : clock_{std::move(clock)} {}

  void handle_info(tick t) {
    ticks_.push_back(t.n);
    at_.push_back(clock_->now());
  }
  std::vector<int> handle_call(seen) { return ticks_; }
  std::vector<std::chrono::steady_clock::time_point> handle_call(seen_at) { return at_; }

 private:
  std::shared_ptr<otpp::testing::virtual_clock> clock_;
  std::vector<int> ticks_;
  std::vector<std::chrono::steady_clock::time_point> at_;
};

struct fixture {
  std::shared_ptr<otpp::testing::virtual_clock> clock = std::make_shared<otpp::testing::virtual_clock>();
  otpp::runtime rt{{.workers = 2, .clock = clock}};

  otpp::server<receiver> start_receiver() { return rt.start<receiver>(clock).value(); }
  static std::vector<int> seen(const otpp::server<receiver>& r) { return otpp::call(r, receiver::seen{}); }
};

}  // namespace

TEST_CASE("send_after delivers at its deadline, never before", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  const auto t0 = f.clock->now();
  otpp::send_after(r, tick{1}, 100ms);
  f.clock->advance(99ms);
  CHECK(fixture::seen(r).empty());
  f.clock->advance(1ms);
  CHECK(fixture::seen(r) == std::vector<int>{1});
  CHECK(otpp::call(r, receiver::seen_at{}).front() - t0 == 100ms);
}

TEST_CASE("monotonic_time follows the runtime's clock inside its processes", "[timer]") {
  fixture f;
  class clock_reader : public otpp::gen_server<clock_reader> {
   public:
    struct now {};
    std::chrono::steady_clock::time_point handle_call(now) { return otpp::monotonic_time(); }
  };
  auto r = f.rt.start<clock_reader>().value();
  const auto a = otpp::call(r, clock_reader::now{});
  CHECK(a == f.clock->now());
  f.clock->advance(1500ms);
  CHECK(otpp::call(r, clock_reader::now{}) - a == 1500ms);
  // From a plain thread: the default runtime, on the steady clock.
  const auto before = std::chrono::steady_clock::now();
  const auto plain = otpp::monotonic_time();
  CHECK(plain >= before);
  CHECK(plain <= std::chrono::steady_clock::now());
}

TEST_CASE("a zero delay is never delivered synchronously", "[timer]") {
  struct self_timer : otpp::gen_server<self_timer> {
    struct arm {};
    struct count {};
    int got = 0;
    void handle_info(tick) { ++got; }
    int handle_call(arm) {
      otpp::send_after(self(), tick{0}, 0ms);
      return got;  // still 0: the timer cannot have run inside this handler
    }
    int handle_call(count) { return got; }
  };
  fixture f;
  auto s = f.rt.start<self_timer>().value();
  CHECK(otpp::call(s, self_timer::arm{}) == 0);
  f.clock->settle();
  CHECK(otpp::call(s, self_timer::count{}) == 1);
}

TEST_CASE("timers due together arrive in deadline order", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  for (int d : {50, 10, 30, 20, 40, 10}) otpp::send_after(r, tick{d}, std::chrono::milliseconds(d));
  f.clock->advance(1s);
  CHECK(fixture::seen(r) == std::vector<int>{10, 10, 20, 30, 40, 50});
}

TEST_CASE("timers with the same deadline arrive in the order they were set", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  std::vector<int> expected;
  for (int i = 0; i < 300; ++i) {
    otpp::send_after(r, tick{i}, std::chrono::milliseconds(100));  // the virtual clock stands still: one deadline
    expected.push_back(i);
  }
  f.clock->advance(1s);
  CHECK(fixture::seen(r) == expected);
}

TEST_CASE("cancel_timer returns the time left, once", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  auto t = otpp::send_after(r, tick{1}, 1s);
  f.clock->advance(300ms);
  CHECK(otpp::read_timer(t) == 700ms);
  auto left = otpp::cancel_timer(t);
  REQUIRE(left);
  CHECK(*left == 700ms);
  CHECK_FALSE(otpp::cancel_timer(t));  // already cancelled
  CHECK_FALSE(otpp::read_timer(t));
  f.clock->advance(2s);
  CHECK(fixture::seen(r).empty());
}

TEST_CASE("a fired timer cannot be cancelled or read; an empty ref is unknown", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  auto t = otpp::send_after(r, tick{1}, 10ms);
  f.clock->advance(10ms);
  CHECK(fixture::seen(r) == std::vector<int>{1});
  CHECK_FALSE(otpp::read_timer(t));
  CHECK_FALSE(otpp::cancel_timer(t));
  CHECK_FALSE(otpp::cancel_timer(otpp::timer_ref{}));
  CHECK_FALSE(otpp::read_timer(otpp::timer_ref{}));
}

TEST_CASE("copies of a timer_ref name the same timer", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  auto t = otpp::send_after(r, tick{1}, 10ms);
  auto u = t;
  CHECK(u == t);
  CHECK(otpp::cancel_timer(u));
  CHECK_FALSE(otpp::cancel_timer(t));
}

TEST_CASE("a timer to a pid dies with the pid", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  auto t = otpp::send_after(r, tick{1}, 1s);
  otpp::stop(r);
  CHECK_FALSE(otpp::read_timer(t));
  CHECK_FALSE(otpp::cancel_timer(t));
  f.clock->advance(2s);  // nothing to deliver, nothing breaks
  CHECK_FALSE(otpp::send_after(r, tick{2}, 1s));  // a dead destination gets no timer at all
}

namespace {
// Sets timers from inside the runtime (a name carries no runtime of its own).
struct starter : otpp::gen_server<starter> {
  struct after {
    std::string name;
    int n;
  };
  struct interval {
    std::string name;
  };
  otpp::timer_ref handle_call(after a) { return otpp::send_after(a.name, tick{a.n}, 100ms); }
  otpp::timer_ref handle_call(interval s) { return otpp::send_interval(s.name, tick{1}, 10ms); }
};
}  // namespace

TEST_CASE("a timer to a name resolves it when it fires", "[timer]") {
  fixture f;
  const std::string name = "timer_test_named_dest";
  auto s = f.rt.start<starter>().value();
  otpp::call(s, starter::after{name, 1});  // nobody holds the name yet
  auto r = f.rt.start<receiver>(otpp::name(name), f.clock).value();
  f.clock->advance(100ms);
  CHECK(fixture::seen(r) == std::vector<int>{1});

  auto t = otpp::call(s, starter::after{name, 2});
  otpp::stop(r);  // the name is free when the timer fires: dropped
  f.clock->advance(100ms);
  CHECK_FALSE(otpp::read_timer(t));  // it fired, into the void
  auto r2 = f.rt.start<receiver>(otpp::name(name), f.clock).value();
  f.clock->advance(1s);
  CHECK(fixture::seen(r2).empty());
}

TEST_CASE("typed, untyped and catch-all destinations", "[timer]") {
  struct catch_all : otpp::gen_server<catch_all> {
    struct got {};
    std::vector<std::string> types;
    void handle_info(const otpp::message& m) { types.emplace_back(m.type_name()); }
    std::vector<std::string> handle_call(got) { return types; }
  };
  fixture f;
  auto c = f.rt.start<catch_all>().value();
  otpp::send_after(otpp::pid{c}, std::string{"hello"}, 5ms);
  f.clock->advance(5ms);
  auto types = otpp::call(c, catch_all::got{});
  REQUIRE(types.size() == 1);
  CHECK(types[0].find("string") != std::string::npos);
}

TEST_CASE("a move-only message can be sent later", "[timer]") {
  struct owner : otpp::gen_server<owner> {
    struct value {};
    int v = 0;
    void handle_info(std::unique_ptr<int> p) { v = *p; }
    int handle_call(value) { return v; }
  };
  fixture f;
  auto o = f.rt.start<owner>().value();
  otpp::send_after(o, std::make_unique<int>(42), 1ms);
  f.clock->advance(1ms);
  CHECK(otpp::call(o, owner::value{}) == 42);
}

TEST_CASE("send_interval runs at a fixed rate and catches up", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  const auto t0 = f.clock->now();
  auto t = otpp::send_interval(r, tick{7}, 100ms);
  f.clock->advance(250ms);
  CHECK(fixture::seen(r).size() == 2);
  CHECK(otpp::read_timer(t) == 50ms);  // the next one is due at 300, not 350
  f.clock->advance(50ms);
  CHECK(fixture::seen(r).size() == 3);
  f.clock->advance(1s);  // ten periods at once: all delivered
  CHECK(fixture::seen(r).size() == 13);
  auto at = otpp::call(r, receiver::seen_at{});
  CHECK(at[0] - t0 == 250ms);  // both delivered when the clock got there
  CHECK(at[1] - t0 == 250ms);
  CHECK(at[2] - t0 == 300ms);
  auto left = otpp::cancel_timer(t);
  REQUIRE(left);
  CHECK(*left == 100ms);  // 1300 was delivered; 1400 was next
  f.clock->advance(1s);
  CHECK(fixture::seen(r).size() == 13);
}

TEST_CASE("an interval stops when its destination exits", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  auto t = otpp::send_interval(r, tick{1}, 10ms);
  f.clock->advance(30ms);
  CHECK(fixture::seen(r).size() == 3);
  otpp::stop(r);
  CHECK_FALSE(otpp::read_timer(t));
  f.clock->advance(30ms);
  CHECK_FALSE(otpp::cancel_timer(t));
}

TEST_CASE("an interval to a name stops with the process that started it", "[timer]") {
  fixture f;
  const std::string name = "timer_test_interval_name";
  auto r = f.rt.start<receiver>(otpp::name(name), f.clock).value();
  auto s = f.rt.start<starter>().value();
  auto t = otpp::call(s, starter::interval{name});
  f.clock->advance(20ms);
  CHECK(fixture::seen(r).size() == 2);
  otpp::stop(s);
  f.clock->advance(20ms);
  CHECK(fixture::seen(r).size() == 2);
  CHECK_FALSE(otpp::read_timer(t));
}

TEST_CASE("send_interval refuses a non-positive period", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  CHECK_THROWS_AS(otpp::send_interval(r, tick{1}, 0ms), std::invalid_argument);
  CHECK_THROWS_AS(otpp::send_interval(r, tick{1}, -5ms), std::invalid_argument);
}

TEST_CASE("a timer far in the future waits in the wheel's upper levels", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  otpp::send_after(r, tick{3}, 3h);
  otpp::send_after(r, tick{2}, 70s);
  otpp::send_after(r, tick{1}, 5s);
  f.clock->advance(2h + 59min + 59s + 999ms);
  CHECK(fixture::seen(r) == std::vector<int>{1, 2});
  f.clock->advance(1ms);
  CHECK(fixture::seen(r) == std::vector<int>{1, 2, 3});
}

// -- gen_server idle timeouts (§1.3) --------------------------------------------------

namespace {

// Counts timeouts; each cast can re-arm a timeout (or not), each call reports.
class idler : public otpp::gen_server<idler> {
 public:
  struct rearm {
    std::chrono::milliseconds d;
  };
  struct poke {};  // a message that does not re-arm
  struct timeouts {};
  struct arm_zero_behind_message {};
  struct arm_zero {};
  struct clear {};

  explicit idler(std::chrono::steady_clock::duration init_timeout) : init_timeout_{init_timeout} {}

  otpp::init_result init() {
    if (init_timeout_ < 0ms) return {};
    return set_timeout(init_timeout_);
  }
  void handle_cast(rearm r) { set_timeout(r.d); }
  void handle_cast(poke) {}
  void handle_info(otpp::timeout) { ++timeouts_; }
  int handle_call(timeouts) { return timeouts_; }
  void handle_call(arm_zero_behind_message) {
    otpp::cast(self(), poke{});  // queued before the callback returns: the timeout is discarded
    set_timeout(0ms);
  }
  void handle_call(arm_zero) { set_timeout(0ms); }
  void handle_call(clear) {
    set_timeout(100ms);
    set_timeout(otpp::infinity);
  }

 private:
  std::chrono::steady_clock::duration init_timeout_;
  int timeouts_ = 0;
};

int timeouts(const otpp::server<idler>& s) { return otpp::call(s, idler::timeouts{}); }

}  // namespace

TEST_CASE("init's timeout fires when no message comes", "[timeout]") {
  fixture f;
  auto s = f.rt.start<idler>(100ms).value();
  f.clock->advance(99ms);
  CHECK(timeouts(s) == 0);  // this call is a message: it resets the timeout
  f.clock->advance(200ms);
  CHECK(timeouts(s) == 0);

  auto s2 = f.rt.start<idler>(100ms).value();
  f.clock->advance(100ms);
  CHECK(timeouts(s2) == 1);
  f.clock->advance(1s);
  CHECK(timeouts(s2) == 1);  // once: it is not re-armed by itself
}

TEST_CASE("any message resets the timeout", "[timeout]") {
  fixture f;
  auto s = f.rt.start<idler>(-1ms).value();
  otpp::cast(s, idler::rearm{100ms});
  (void)timeouts(s);  // flush: armed by the cast... and reset by this call
  otpp::cast(s, idler::rearm{100ms});
  otpp::cast(s, idler::poke{});  // arrives before the timeout: clears it
  f.clock->advance(500ms);
  CHECK(timeouts(s) == 0);
}

TEST_CASE("re-arming on every message moves the deadline", "[timeout]") {
  // Records when each timeout came, in virtual time.
  struct stamp : otpp::gen_server<stamp> {
    struct rearm {};
    struct log {};
    explicit stamp(std::shared_ptr<otpp::testing::virtual_clock> c) : clock{std::move(c)} {}
    std::shared_ptr<otpp::testing::virtual_clock> clock;
    std::vector<std::chrono::steady_clock::time_point> at;
    void handle_call(rearm) { set_timeout(100ms); }
    auto handle_call(log) { return at; }
    void handle_info(otpp::timeout) { at.push_back(clock->now()); }
  };
  fixture f;
  auto s = f.rt.start<stamp>(f.clock).value();
  const auto t0 = f.clock->now();
  otpp::call(s, stamp::rearm{});
  for (int i = 0; i < 5; ++i) {
    f.clock->advance(60ms);  // the first timer (due at 100) comes due on the way and re-arms itself
    otpp::call(s, stamp::rearm{});
  }
  f.clock->advance(99ms);
  f.clock->advance(1ms);
  f.clock->advance(1s);
  auto at = otpp::call(s, stamp::log{});
  REQUIRE(at.size() == 1);
  CHECK(at[0] - t0 == 400ms);  // 100 ms after the last re-arm at 300
}

TEST_CASE("a zero timeout fires at once unless a message is waiting", "[timeout]") {
  fixture f;
  auto s = f.rt.start<idler>(-1ms).value();
  otpp::call(s, idler::arm_zero{});
  f.clock->settle();  // the reply goes out before the process goes idle: let it
  CHECK(timeouts(s) == 1);  // no clock movement needed
  otpp::call(s, idler::arm_zero_behind_message{});
  f.clock->advance(1s);
  CHECK(timeouts(s) == 1);
}

TEST_CASE("set_timeout(infinity) clears a timeout", "[timeout]") {
  fixture f;
  auto s = f.rt.start<idler>(-1ms).value();
  otpp::call(s, idler::clear{});
  f.clock->advance(1s);
  CHECK(timeouts(s) == 0);
}

TEST_CASE("a catch-all handle_info receives the timeout", "[timeout]") {
  struct catcher : otpp::gen_server<catcher> {
    struct got {};
    int n = 0;
    otpp::init_result init() { return set_timeout(10ms); }
    void handle_info(const otpp::message& m) {
      if (m.is<otpp::timeout>()) ++n;
    }
    int handle_call(got) { return n; }
  };
  fixture f;
  auto c = f.rt.start<catcher>().value();
  f.clock->advance(10ms);
  CHECK(otpp::call(c, catcher::got{}) == 1);
}

TEST_CASE("a process with a pending timeout exits cleanly", "[timeout]") {
  fixture f;
  auto s = f.rt.start<idler>(1h).value();
  otpp::stop(s);
  f.clock->advance(2h);  // the idle timer went with the process
  CHECK_FALSE(s.alive());
}

// -- hibernation ------------------------------------------------------------------------

namespace {

class sleeper : public otpp::gen_server<sleeper> {
 public:
  struct sleep_now {};
  struct sleep_behind_message {};
  struct count {};
  struct wake {};
  struct rearm {
    std::chrono::milliseconds d;
  };
  struct fail_next {};
  struct timeouts {};

  void on_hibernate() {
    if (fail_) throw std::runtime_error("cannot sleep");
    ++hibernations_;
    cache_.clear();
    cache_.shrink_to_fit();
  }
  void handle_call(sleep_now) { hibernate(); }
  void handle_call(sleep_behind_message) {
    otpp::cast(self(), wake{});
    hibernate();
  }
  int handle_call(count) { return hibernations_; }
  void handle_call(fail_next) { fail_ = true; }
  void handle_cast(wake) { cache_.assign(1000, 1); }
  void handle_call(rearm r) { set_timeout(r.d); }
  int handle_call(timeouts) { return timeouts_; }
  void handle_info(otpp::timeout) { ++timeouts_; }

 private:
  int hibernations_ = 0;
  int timeouts_ = 0;
  bool fail_ = false;
  std::vector<int> cache_;
};

int hibernations(const otpp::server<sleeper>& s) { return otpp::call(s, sleeper::count{}); }

}  // namespace

TEST_CASE("hibernate() runs on_hibernate once the process is idle", "[hibernate]") {
  fixture f;
  auto s = f.rt.start<sleeper>().value();
  otpp::call(s, sleeper::sleep_now{});
  // It hibernates once idle, after the reply: observed without waking it.
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!otpp::sys::is_hibernating(s) && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  CHECK(hibernations(s) == 1);
  otpp::call(s, sleeper::sleep_behind_message{});  // a message is waiting: go on at once
  CHECK(hibernations(s) == 1);
}

TEST_CASE("hibernate_after hibernates an idle process, reset by messages", "[hibernate]") {
  fixture f;
  auto s = f.rt.start<sleeper>(otpp::hibernate_after(1s)).value();
  f.clock->advance(999ms);
  // The call itself is a message: from here the idle second starts again.
  CHECK(hibernations(s) == 0);
  f.clock->advance(1s);
  CHECK(hibernations(s) == 1);
  f.clock->advance(5s);
  CHECK(hibernations(s) == 2);  // the count call woke it; a quiet second later it slept again
}

TEST_CASE("hibernate_after waits while a timeout is pending", "[hibernate]") {
  fixture f;
  auto s = f.rt.start<sleeper>(otpp::name("timer_test_sleeper"), otpp::hibernate_after(1s)).value();
  otpp::call(s, sleeper::rearm{5s});
  f.clock->advance(2s);
  otpp::call(s, sleeper::rearm{5s});  // still pending; no hibernation while it is
  f.clock->advance(4999ms);
  otpp::call(s, sleeper::rearm{5s});
  f.clock->advance(5s);  // the timeout fires; then idle for 1 s more
  CHECK(otpp::call(s, sleeper::timeouts{}) == 1);
  f.clock->advance(1s);
  CHECK(hibernations(s) == 1);
}

TEST_CASE("an exception in on_hibernate crashes the process", "[hibernate]") {
  otpp_test::log_capture logs;
  fixture f;
  auto s = f.rt.start<sleeper>().value();
  otpp::exit_watch w{s};
  otpp::call(s, sleeper::fail_next{});
  (void)otpp::try_call(s, sleeper::sleep_now{});
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->kind() == otpp::exit_kind::exception);
  CHECK(why->to_string().find("cannot sleep") != std::string::npos);
}

TEST_CASE("a runtime shut down with timers pending cancels and frees them", "[timer]") {
  otpp::timer_ref one_shot, interval, named;
  {
    fixture f;
    auto r = f.start_receiver();
    auto s = f.rt.start<starter>().value();
    one_shot = otpp::send_after(r, tick{1}, 1h);
    interval = otpp::send_interval(r, tick{2}, 10ms);
    named = otpp::call(s, starter::after{"timer_test_nobody", 3});
    f.clock->advance(30ms);
    CHECK(fixture::seen(r).size() == 3);
  }  // the runtime goes; the refs outlive it
  CHECK_FALSE(otpp::read_timer(one_shot));
  CHECK_FALSE(otpp::cancel_timer(interval));
  CHECK_FALSE(otpp::cancel_timer(named));
}

TEST_CASE("send_after to a process of a stopped runtime sets nothing", "[timer]") {
  fixture f;
  auto r = f.start_receiver();
  otpp::pid p = r;
  f.rt.shutdown();
  CHECK_FALSE(otpp::send_after(p, tick{1}, 1ms));
}
