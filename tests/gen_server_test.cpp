// gen_server<Impl>: callbacks, call/cast/info dispatch, start outcomes,
// deferred replies, crashes, stop, and their failure cases.

#include <atomic>
#include <future>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

class counter : public otpp::gen_server<counter> {
 public:
  struct increment {};
  struct get_value {};
  struct reset {};
  struct add {
    int n;
  };

  explicit counter(int start) : value_{start} {}

  int handle_call(increment, otpp::from) { return ++value_; }
  int handle_call(get_value) { return value_; }
  void handle_cast(reset) { value_ = 0; }
  void handle_cast(add a) { value_ += a.n; }

 private:
  int value_;
};

using otpp_test::journal;

class recorder : public otpp::gen_server<recorder> {
 public:
  struct note {
    std::string text;
  };
  struct crash {};
  struct crash_call {};
  struct stop_with {
    otpp::exit_reason reason;
  };
  struct stop_and_reply {};
  struct events {};
  struct go_on {
    std::string text;
  };
  struct continue_then {
    std::string text;
  };
  struct ping {};
  struct tick {
    int n;
  };
  struct unknown_info {};
  using info_types = otpp::type_list<ping, tick>;

  explicit recorder(std::shared_ptr<journal> j) : j_{std::move(j)} {}

  void handle_cast(note n) { j_->add(n.text); }
  void handle_cast(crash) { throw std::runtime_error("boom"); }
  void handle_cast(stop_with s) { stop(s.reason); }
  void handle_cast(continue_then c) {
    j_->add("cast:" + c.text);
    continue_with(go_on{c.text});
  }
  int handle_call(crash_call) { throw std::logic_error("bad call"); }
  std::string handle_call(stop_and_reply) {
    stop(otpp::exit_reason::shutdown("done"));
    return "bye";
  }
  std::vector<std::string> handle_call(events) { return j_->get(); }
  void handle_continue(go_on g) { j_->add("continue:" + g.text); }
  void handle_info(ping) { j_->add("ping"); }
  void handle_info(tick t) { j_->add("tick:" + std::to_string(t.n)); }
  void terminate(const otpp::exit_reason& r) { j_->add("terminate:" + r.to_string()); }

 private:
  std::shared_ptr<journal> j_;
};

}  // namespace

TEST_CASE("call, cast and a flushing call keep order") {
  auto c = otpp::start<counter>(10).value();
  CHECK(otpp::call(c, counter::increment{}) == 11);
  otpp::cast(c, counter::reset{});
  otpp::cast(c, counter::add{5});
  CHECK(otpp::call(c, counter::get_value{}) == 5);
  otpp::stop(c);
  CHECK_FALSE(c.alive());
}

TEST_CASE("a stopped server's handle stays valid and answers noproc") {
  auto c = otpp::start<counter>(0).value();
  const auto id = c.id();
  otpp::pid copy = c;
  otpp::stop(c);
  CHECK(c.id() == id);
  CHECK(copy == c.pid());
  CHECK_FALSE(copy.alive());
  auto r = otpp::try_call(c, counter::get_value{});
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::noproc);
  CHECK_THROWS_AS(otpp::call(c, counter::get_value{}), otpp::exit_error);
  otpp::cast(c, counter::reset{});  // never fails
  auto s = otpp::try_stop(c);
  REQUIRE_FALSE(s);
  CHECK(s.error().kind() == otpp::exit_kind::noproc);
}

TEST_CASE("an empty handle answers noproc; cast and send to it are dropped") {
  otpp::server<counter> none;
  CHECK(otpp::try_call(none, counter::get_value{}).error().kind() == otpp::exit_kind::noproc);
  otpp::cast(none, counter::reset{});
  otpp::send(otpp::pid{}, 42);
  CHECK(otpp::try_stop(otpp::pid{}).error().kind() == otpp::exit_kind::noproc);
}

namespace {
class typed_replies : public otpp::gen_server<typed_replies> {
 public:
  struct nothing {};
  struct name {};
  struct ref {};
  struct who {};
  void handle_call(nothing) { ++calls_; }
  std::string handle_call(name) { return "typed"; }
  const std::string& handle_call(ref) { return text_; }  // decays to a copy
  otpp::pid handle_call(who, const otpp::from& f) { return f.caller(); }

 private:
  int calls_ = 0;
  std::string text_ = "by reference";
};
}  // namespace

TEST_CASE("the reply type is the handler's return type") {
  auto s = otpp::start<typed_replies>().value();
  otpp::call(s, typed_replies::nothing{});
  STATIC_REQUIRE(std::is_same_v<decltype(otpp::call(s, typed_replies::name{})), std::string>);
  CHECK(otpp::call(s, typed_replies::name{}) == "typed");
  CHECK(otpp::call(s, typed_replies::ref{}) == "by reference");
  CHECK_FALSE(otpp::call(s, typed_replies::who{}));  // a plain thread is no process
  otpp::stop(s);
}

namespace {
class asker : public otpp::gen_server<asker> {
 public:
  struct ask {
    otpp::server<typed_replies> target;
  };
  struct ask_self {};
  struct stop_self {};
  bool handle_call(ask a) { return otpp::call(a.target, typed_replies::who{}) == otpp::pid{self()}; }
  otpp::exit_kind handle_call(ask_self) { return otpp::try_call(self(), ask_self{}).error().kind(); }
  otpp::exit_kind handle_call(stop_self) { return otpp::try_stop(self()).error().kind(); }
};
}  // namespace

TEST_CASE("from names the calling process; calls and stops to self fail fast") {
  auto t = otpp::start<typed_replies>().value();
  auto a = otpp::start<asker>().value();
  CHECK(otpp::call(a, asker::ask{t}));
  CHECK(otpp::call(a, asker::ask_self{}) == otpp::exit_kind::calling_self);
  CHECK(otpp::call(a, asker::stop_self{}) == otpp::exit_kind::calling_self);
  CHECK(a.alive());
  otpp::stop(a);
  otpp::stop(t);
}

namespace {
// Answers `get` later: parks the reply_to until `release` arrives.
class deferring : public otpp::gen_server<deferring> {
 public:
  struct get {
    using reply_type = int;
  };
  struct release {
    int value;
  };
  struct release_oldest {
    int value;
  };
  struct pending {};
  struct crash {};
  struct hand_out {
    std::promise<otpp::reply_to<int>>* p;
  };

  void handle_call(get, otpp::reply_to<int> to) { waiting_.push_back(std::move(to)); }
  std::size_t handle_call(pending) { return waiting_.size(); }
  void handle_cast(release r) {
    for (auto& w : waiting_) last_ok_ = w.reply(r.value);
    waiting_.clear();
  }
  void handle_cast(release_oldest r) {
    last_ok_ = waiting_.front().reply(r.value);
    waiting_.erase(waiting_.begin());
  }
  void handle_cast(crash) { throw std::runtime_error("deferring crashed"); }
  void handle_cast(hand_out h) {
    h.p->set_value(waiting_.back());
    waiting_.pop_back();
  }

  bool last_ok_ = false;

 private:
  std::vector<otpp::reply_to<int>> waiting_;
};
}  // namespace

TEST_CASE("deferred reply from another thread; replying twice is a no-op") {
  auto d = otpp::start<deferring>().value();
  auto fut = std::async(std::launch::async, [&] { return otpp::call(d, deferring::get{}, 10s); });
  // Wait until the call is parked in the server (a call flushes the mailbox).
  while (otpp::call(d, deferring::pending{}) == 0) std::this_thread::yield();
  std::promise<otpp::reply_to<int>> handed;
  otpp::cast(d, deferring::hand_out{&handed});
  auto to = handed.get_future().get();
  std::thread replier{[to] {
    CHECK(to.reply(7));
    CHECK_FALSE(to.reply(8));
  }};
  replier.join();
  CHECK(fut.get() == 7);
  otpp::stop(d);
}

TEST_CASE("a call that times out leaves the server running and drops the late reply") {
  auto d = otpp::start<deferring>().value();
  auto r = otpp::try_call(d, deferring::get{}, 20ms);
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::timeout);
  std::promise<otpp::reply_to<int>> handed;
  otpp::cast(d, deferring::hand_out{&handed});
  auto to = handed.get_future().get();
  CHECK_FALSE(to.reply(1));  // the caller gave up: nobody receives it
  CHECK(d.alive());
  CHECK(otpp::call(d, deferring::pending{}) == 0);
  otpp::stop(d);
}

TEST_CASE("a server that dies with calls pending fails them at once with its reason") {
  otpp_test::log_capture logs;
  auto d = otpp::start<deferring>().value();
  auto fut = std::async(std::launch::async, [&] { return otpp::try_call(d, deferring::get{}, 60s); });
  while (otpp::call(d, deferring::pending{}) == 0) std::this_thread::yield();
  const auto t0 = std::chrono::steady_clock::now();
  otpp::cast(d, deferring::crash{});
  auto r = fut.get();
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::exception);
  CHECK(r.error().detail().find("deferring crashed") != std::string_view::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);  // not the 60 s timeout
}

TEST_CASE("many deferred calls, some answered: the answered ones are let go, the rest fail with the exit reason") {
  // The server tracks each kept reply_to and drops the answered ones from
  // time to time (past 16): the oldest, answered first, must go without
  // taking an open one with it.
  otpp_test::log_capture logs;
  auto d = otpp::start<deferring>().value();
  std::vector<otpp::pending_call<int>> calls;
  for (std::size_t i = 0; i < 21; ++i) {
    calls.push_back(otpp::async_call(d, deferring::get{}, 60s));
    while (otpp::call(d, deferring::pending{}) != i + 1) std::this_thread::yield();
  }
  otpp::cast(d, deferring::release_oldest{7});
  REQUIRE(calls.front().get().value() == 7);
  for (std::size_t i = 0; i < 20; ++i) {
    calls.push_back(otpp::async_call(d, deferring::get{}, 60s));
    while (otpp::call(d, deferring::pending{}) != i + 21) std::this_thread::yield();
  }
  otpp::cast(d, deferring::crash{});
  for (std::size_t i = 1; i < calls.size(); ++i) {
    auto r = calls[i].get();
    REQUIRE_FALSE(r);
    CHECK(r.error().kind() == otpp::exit_kind::exception);
    CHECK(r.error().detail().find("deferring crashed") != std::string_view::npos);
  }
}

TEST_CASE("an exception in handle_call crashes the server; the caller gets the reason") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<journal>();
  auto s = otpp::start<recorder>(j).value();
  auto r = otpp::try_call(s, recorder::crash_call{});
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::exception);
  CHECK(r.error().detail() == "std::logic_error: bad call");
  CHECK_FALSE(s.alive());
  auto ev = j->get();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0] == "terminate:exception(std::logic_error: bad call)");
  CHECK(logs.contains("recorder"));
  CHECK(logs.contains("crash_call"));
  CHECK(logs.contains("bad call"));
}

TEST_CASE("an exception in handle_cast crashes the server and logs a crash report") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<journal>();
  auto s = otpp::start<recorder>(j).value();
  otpp::cast(s, recorder::crash{});
  auto r = otpp::try_call(s, recorder::events{});
  REQUIRE_FALSE(r);
  // The call was queued behind the crash: it fails with the crash reason.
  CHECK((r.error().kind() == otpp::exit_kind::exception || r.error().kind() == otpp::exit_kind::noproc));
  CHECK_FALSE(s.alive());
  CHECK(logs.contains("terminating"));
  CHECK(logs.contains("recorder::crash (cast)"));
  CHECK(logs.contains("std::runtime_error: boom"));
}

TEST_CASE("set_log_level drops crash reports below it; none drops everything") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<journal>();
  otpp::set_log_level(otpp::log_level::none);
  auto s = otpp::start<recorder>(j).value();
  CHECK_FALSE(otpp::try_call(s, recorder::crash_call{}));
  CHECK(logs.size() == 0);
  otpp::set_log_level(otpp::log_level::warning);
  otpp::log(otpp::log_level::info, "quiet {}", 1);
  otpp::log(otpp::log_level::warning, "loud {}", 2);
  otpp::set_log_level(otpp::log_level::debug);
  CHECK_FALSE(logs.contains("quiet"));
  CHECK(logs.contains("loud 2"));
  CHECK(logs.size() == 1);
}

TEST_CASE("stop from handle_call: terminate runs first, then the reply is sent") {
  auto j = std::make_shared<journal>();
  auto s = otpp::start<recorder>(j).value();
  otpp::exit_watch w{s.pid()};
  CHECK(otpp::call(s, recorder::stop_and_reply{}) == "bye");
  // The reply goes out before the process is gone (as OTP's gen_server:
  // terminate, reply, exit), so the caller waits for the death itself.
  auto why = w.wait(std::chrono::seconds{5});
  REQUIRE(why.has_value());
  CHECK(*why == otpp::exit_reason::shutdown("done"));
  CHECK_FALSE(s.alive());
  auto ev = j->get();  // written by terminate before the reply reached us
  REQUIRE(ev.size() == 1);
  CHECK(ev[0] == "terminate:shutdown(done)");
}

TEST_CASE("stop from handle_cast with a custom reason fails the queued call with it") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<journal>();
  auto s = otpp::start<recorder>(j).value();
  otpp::cast(s, recorder::stop_with{otpp::exit_reason::error("custom")});
  auto r = otpp::try_call(s, recorder::events{});
  REQUIRE_FALSE(r);
  CHECK((r.error() == otpp::exit_reason::error("custom") || r.error().kind() == otpp::exit_kind::noproc));
  CHECK(j->get() == std::vector<std::string>{"terminate:error(custom)"});
  CHECK(logs.contains("error(custom)"));
}

TEST_CASE("sane exit reasons are not crash-logged") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<journal>();
  auto s = otpp::start<recorder>(j).value();
  otpp::stop(s, otpp::exit_reason::shutdown());
  auto s2 = otpp::start<recorder>(j).value();
  otpp::stop(s2);
  CHECK(logs.size() == 0);
  CHECK(j->get() == std::vector<std::string>{"terminate:shutdown", "terminate:normal"});
}

TEST_CASE("continue_with runs handle_continue before any queued message") {
  auto j = std::make_shared<journal>();
  auto s = otpp::start<recorder>(j).value();
  otpp::cast(s, recorder::continue_then{"a"});
  otpp::cast(s, recorder::note{"b"});
  auto ev = otpp::call(s, recorder::events{});
  CHECK(ev == std::vector<std::string>{"cast:a", "continue:a", "b"});
  otpp::stop(s);
}

TEST_CASE("typed and untyped handle_info") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<journal>();
  auto s = otpp::start<recorder>(j).value();
  otpp::send(s, recorder::ping{});                  // typed: compile-time dispatch
  otpp::send(s.pid(), recorder::tick{3});           // untyped: matched against info_types
  otpp::send(s.pid(), recorder::unknown_info{});    // no match, no catch-all: logged, dropped
  otpp::send(s.pid(), std::string{"also unknown"});
  CHECK(otpp::call(s, recorder::events{}) == std::vector<std::string>{"ping", "tick:3"});
  CHECK(s.alive());
  CHECK(logs.contains("unexpected message of type"));
  CHECK(logs.contains("unknown_info"));
  otpp::stop(s);
}

namespace {
class catch_all : public otpp::gen_server<catch_all> {
 public:
  struct seen {};
  std::vector<std::string> handle_call(seen) { return seen_; }
  void handle_info(const otpp::message& m) {
    if (auto* i = m.get_if<int>()) {
      seen_.push_back("int:" + std::to_string(*i));
    } else {
      seen_.push_back(std::string{m.type_name()});
    }
  }

 private:
  std::vector<std::string> seen_;
};
}  // namespace

TEST_CASE("a catch-all handle_info receives what no declared type matches") {
  auto s = otpp::start<catch_all>().value();
  otpp::send(s.pid(), 5);
  otpp::send(s.pid(), 2.5);
  auto seen = otpp::call(s, catch_all::seen{});
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == "int:5");
  CHECK(seen[1] == "double");
  otpp::stop(s);
}

namespace {
struct init_probe {
  enum class mode { ok, ignore, error, stop, throws, ctor_throws, cont };
};
class initializing : public otpp::gen_server<initializing> {
 public:
  struct events {};
  struct go_on {};
  initializing(init_probe::mode m, std::shared_ptr<journal> j) : mode_{m}, j_{std::move(j)} {
    if (m == init_probe::mode::ctor_throws) throw std::runtime_error("ctor failed");
  }
  otpp::init_result init() {
    j_->add("init");
    switch (mode_) {
      case init_probe::mode::ok: return {};
      case init_probe::mode::ignore: return ignore();
      case init_probe::mode::error: return error(otpp::exit_reason::error("bad config"));
      case init_probe::mode::stop: return stop(otpp::exit_reason::error("no way"));
      case init_probe::mode::throws: throw std::runtime_error("init failed");
      case init_probe::mode::cont:
        otpp::cast(self(), note{"queued during init"});
        return continue_with(go_on{});
      default: return {};
    }
  }
  struct note {
    std::string text;
  };
  void handle_cast(note n) { j_->add(n.text); }
  void handle_continue(go_on) { j_->add("continue"); }
  std::vector<std::string> handle_call(events) { return j_->get(); }
  void terminate(const otpp::exit_reason&) { j_->add("terminate"); }

 private:
  init_probe::mode mode_;
  std::shared_ptr<journal> j_;
};
}  // namespace

TEST_CASE("init outcomes") {
  otpp_test::log_capture logs;
  using m = init_probe::mode;
  auto j = std::make_shared<journal>();
  otpp::runtime rt{{.workers = 2}};
  const auto before = rt.process_count();

  SECTION("ok") {
    auto s = rt.start<initializing>(m::ok, j);
    REQUIRE(s);
    CHECK(s->alive());
    CHECK(rt.process_count() == before + 1);
    otpp::stop(*s);
  }
  SECTION("ignore: no process, no terminate, nothing logged") {
    auto s = rt.start<initializing>(m::ignore, j);
    REQUIRE_FALSE(s);
    CHECK(s.error().kind() == otpp::exit_kind::ignore);
    CHECK(j->get() == std::vector<std::string>{"init"});
    CHECK(logs.size() == 0);
  }
  SECTION("error(r): start returns r, the process exits normally") {
    auto s = rt.start<initializing>(m::error, j);
    REQUIRE_FALSE(s);
    CHECK(s.error() == otpp::exit_reason::error("bad config"));
    CHECK(j->get() == std::vector<std::string>{"init"});
    CHECK(logs.size() == 0);
  }
  SECTION("stop(r): start returns r, terminate is not called") {
    auto s = rt.start<initializing>(m::stop, j);
    REQUIRE_FALSE(s);
    CHECK(s.error() == otpp::exit_reason::error("no way"));
    CHECK(j->get() == std::vector<std::string>{"init"});
  }
  SECTION("init throws: a start error holding the exception, never an abort") {
    auto s = rt.start<initializing>(m::throws, j);
    REQUIRE_FALSE(s);
    CHECK(s.error().kind() == otpp::exit_kind::exception);
    CHECK(s.error().detail() == "std::runtime_error: init failed");
    CHECK(j->get() == std::vector<std::string>{"init"});
    CHECK(logs.contains("init failed"));
  }
  SECTION("the constructor throws: a start error, init never runs") {
    auto s = rt.start<initializing>(m::ctor_throws, j);
    REQUIRE_FALSE(s);
    CHECK(s.error().detail() == "std::runtime_error: ctor failed");
    CHECK(j->get().empty());
    CHECK_THROWS_AS(rt.start<initializing>(m::ctor_throws, j).value(), otpp::exit_error);
  }
  SECTION("continue_with from init runs before messages sent during init") {
    auto s = rt.start<initializing>(m::cont, j).value();
    CHECK(otpp::call(s, initializing::events{}) ==
          std::vector<std::string>{"init", "continue", "queued during init"});
    otpp::stop(s);
  }
  CHECK(rt.process_count() == before);
}

namespace {
class stubborn : public otpp::gen_server<stubborn> {
 public:
  struct wait_for {
    std::shared_future<void> f;
  };
  struct get {};
  void handle_cast(wait_for w) { w.f.wait(); }
  int handle_call(get) { return 1; }
  void terminate(const otpp::exit_reason&) { throw std::runtime_error("terminate failed"); }
};
}  // namespace

TEST_CASE("stop: timeout on a busy server; a throwing terminate changes the reason") {
  otpp_test::log_capture logs;
  auto s = otpp::start<stubborn>().value();
  std::promise<void> gate;
  otpp::cast(s, stubborn::wait_for{gate.get_future().share()});
  auto r = otpp::try_stop(s, otpp::exit_reason::shutdown(), 20ms);
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::timeout);
  CHECK(otpp::try_call(s, stubborn::get{}, 20ms).error().kind() == otpp::exit_kind::timeout);
  gate.set_value();
  // The earlier stop request is still queued: the server now stops, and its
  // terminate throws, so the exit reason is the terminate's exception.
  auto r2 = otpp::try_stop(s);
  REQUIRE_FALSE(r2);
  CHECK((r2.error().kind() == otpp::exit_kind::exception || r2.error().kind() == otpp::exit_kind::noproc));
  CHECK_FALSE(s.alive());
  CHECK(logs.contains("terminate failed"));
}

TEST_CASE("exit_reason, pid and server format with fmt") {
  CHECK(fmt::format("{}", otpp::exit_reason::normal()) == "normal");
  CHECK(fmt::format("{}", otpp::exit_reason::shutdown("bye")) == "shutdown(bye)");
  auto c = otpp::start<counter>(0).value();
  CHECK(fmt::format("{}", c.pid()) == fmt::format("<0.{}.0>", c.id()));
  CHECK(fmt::format("{}", c) == fmt::format("<0.{}.0>", c.id()));
  otpp::stop(c);
}

// -- exit(reason), errors that name the call, requests by lvalue ------------

namespace {

class exiter : public otpp::gen_server<exiter> {
 public:
  struct exit_with {
    otpp::exit_reason reason;
  };
  struct call_dead {
    otpp::server<counter> dead;
  };
  struct call_myself {};
  explicit exiter(std::shared_ptr<otpp_test::journal> j, int init_mode = 0) : j_{std::move(j)}, init_mode_{init_mode} {}
  void init() {
    if (init_mode_ == 1) otpp::exit(otpp::exit_reason::shutdown("not today"));
  }
  void handle_cast(exit_with e) { otpp::exit(e.reason); }
  int handle_call(call_dead c) { return otpp::call(c.dead, counter::get_value{}); }
  int handle_call(call_myself) { return otpp::call(self(), call_myself{}); }
  void terminate(const otpp::exit_reason& r) {
    j_->add("terminate " + r.to_string());
    if (init_mode_ == 2) otpp::exit(otpp::exit_reason::error("from terminate"));
  }

 private:
  std::shared_ptr<otpp_test::journal> j_;
  int init_mode_;
};

}  // namespace

TEST_CASE("otpp::exit(r) from a callback ends the process with exactly r") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<otpp_test::journal>();
  for (auto reason : {otpp::exit_reason::normal(), otpp::exit_reason::shutdown(), otpp::exit_reason::shutdown("done"),
                      otpp::exit_reason::error("custom")}) {
    CAPTURE(reason);
    auto s = otpp::start<exiter>(j).value();
    otpp::exit_watch w{s};
    otpp::cast(s, exiter::exit_with{reason});
    CHECK(*w.wait(10s) == reason);
    CHECK(j->has("terminate " + reason.to_string()));  // terminate runs, as after any crash
  }
  // Sane reasons are not crash reports; a custom one is.
  CHECK_FALSE(logs.contains("terminating: normal"));
  CHECK_FALSE(logs.contains("terminating: shutdown"));
  CHECK(logs.contains("terminating: error(custom)"));
}

TEST_CASE("otpp::exit(r) in init is the start error; in terminate it replaces the reason") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<otpp_test::journal>();
  auto r = otpp::start<exiter>(j, 1);
  REQUIRE_FALSE(r);
  CHECK(r.error() == otpp::exit_reason::shutdown("not today"));

  auto s = otpp::start<exiter>(j, 2).value();
  otpp::exit_watch w{s};
  auto stopped = otpp::try_stop(s, otpp::exit_reason::shutdown(), 10s);
  REQUIRE_FALSE(stopped);
  CHECK(stopped.error() == otpp::exit_reason::error("from terminate"));
  CHECK(*w.wait(10s) == otpp::exit_reason::error("from terminate"));
}

TEST_CASE("a failed nested call ends the process with that call's reason; calling yourself is calling_self") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<otpp_test::journal>();
  auto dead = otpp::start<counter>(0).value();
  otpp::stop(dead);
  auto s = otpp::start<exiter>(j).value();
  otpp::exit_watch w{s};
  auto r = otpp::try_call(s, exiter::call_dead{dead});
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::noproc);
  CHECK(w.wait(10s)->kind() == otpp::exit_kind::noproc);

  auto me = otpp::start<exiter>(j).value();
  auto r2 = otpp::try_call(me, exiter::call_myself{});
  REQUIRE_FALSE(r2);
  CHECK(r2.error() == otpp::exit_reason::calling_self());
}

TEST_CASE("exit_error::what() names the operation, the process, the request and the timeout") {
  auto dead = otpp::start<counter>(0).value();
  otpp::stop(dead);
  try {
    (void)otpp::call(dead, counter::increment{});
    FAIL("the call should have failed");
  } catch (const otpp::exit_error& e) {
    const std::string what = e.what();
    CHECK(what.starts_with(fmt::format("otpp::call({} ", dead)));
    CHECK(what.find("counter::increment") != std::string::npos);
    CHECK(what.ends_with(", 5000 ms): noproc"));
    CHECK(e.reason().kind() == otpp::exit_kind::noproc);
  }
  try {
    otpp::stop(dead);
    FAIL("the stop should have failed");
  } catch (const otpp::exit_error& e) {
    CHECK(std::string{e.what()} == fmt::format("otpp::stop({}, normal, infinity): noproc", dead));
  }
}

namespace {

/// A request whose copy throws when asked to, and counts live copies.
struct fragile {
  static inline std::atomic<int> live{0};
  bool throw_on_copy = false;
  std::string text = "kept";
  fragile() { ++live; }
  fragile(const fragile& o) : throw_on_copy{o.throw_on_copy}, text{o.text} {
    if (throw_on_copy) throw std::runtime_error("copy refused");
    ++live;
  }
  fragile(fragile&& o) noexcept : throw_on_copy{o.throw_on_copy}, text{std::move(o.text)} { ++live; }
  ~fragile() { --live; }
};

class takes_fragile : public otpp::gen_server<takes_fragile> {
 public:
  std::string handle_call(fragile f) { return f.text; }
  void handle_cast(fragile f) { last_ = f.text; }
  std::string handle_call(counter::get_value) { return last_; }

 private:
  std::string last_;
};

}  // namespace

TEST_CASE("requests passed as lvalues are copied, and a throwing copy leaves nothing behind on every path") {
  auto s = otpp::start<takes_fragile>().value();
  fragile ok;
  CHECK(otpp::call(s, ok) == "kept");                  // queued (finite timeout)
  CHECK(otpp::call(s, ok, otpp::infinity) == "kept");  // inline when idle
  otpp::cast(s, ok);
  CHECK(otpp::call(s, counter::get_value{}) == "kept");
  CHECK(ok.text == "kept");  // the caller's request was copied, not moved from

  fragile bad;
  bad.throw_on_copy = true;
  const int before = fragile::live.load();
  CHECK_THROWS_WITH(otpp::call(s, bad), "copy refused");
  CHECK_THROWS_WITH(otpp::call(s, bad, otpp::infinity), "copy refused");
  CHECK_THROWS_WITH(otpp::cast(s, bad), "copy refused");
  CHECK_THROWS_WITH((void)otpp::async_call(s, bad), "copy refused");  // the request and its reply slot are one block
  CHECK(fragile::live.load() == before);
  CHECK(s.alive());
  CHECK(otpp::call(s, counter::get_value{}) == "kept");
  otpp::stop(s);
}

TEST_CASE("server_cast checks the process's type; start_child with a recipe gives a typed handle") {
  auto c = otpp::start<counter>(3).value();
  otpp::pid as_pid = c;
  auto back = otpp::server_cast<counter>(as_pid);
  REQUIRE(back);
  CHECK(otpp::call(*back, counter::get_value{}) == 3);

  auto wrong = otpp::server_cast<takes_fragile>(as_pid);
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().kind() == otpp::exit_kind::custom);
  CHECK(std::string{wrong.error().detail()}.starts_with(fmt::format("wrong_type: {} is a ", as_pid)));
  CHECK(otpp::server_cast<counter>(otpp::pid{}).error().kind() == otpp::exit_kind::noproc);

  otpp::stop(c);
  auto dead = otpp::server_cast<counter>(as_pid);  // still the right type: a handle that answers noproc
  REQUIRE(dead);
  CHECK(otpp::try_call(*dead, counter::get_value{}).error().kind() == otpp::exit_kind::noproc);

  auto sup = otpp::start<otpp::dynamic_supervisor>().value();
  otpp::server<counter> child = otpp::start_child(sup, otpp::child<counter>(9)).value();
  CHECK(otpp::call(child, counter::get_value{}) == 9);
  otpp::stop(sup);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<otpp::server<counter>, otpp::pid>);
}

namespace {

class slow_start : public otpp::gen_server<slow_start> {
 public:
  struct ping {};
  explicit slow_start(std::shared_ptr<std::latch> go, int mode = 0) : go_{std::move(go)}, mode_{mode} {}
  otpp::init_result init() {
    if (go_) go_->wait();
    if (mode_ == 1) return stop(otpp::exit_reason::error("no thanks"));
    if (mode_ == 2) return ignore();
    return {};
  }
  int handle_call(ping) { return 1; }

 private:
  std::shared_ptr<std::latch> go_;
  int mode_;
};

// Starts one more of itself from init, `left` times.
class nester : public otpp::gen_server<nester> {
 public:
  explicit nester(int left, std::shared_ptr<otpp::exit_reason> failure) : left_{left}, failure_{std::move(failure)} {}
  otpp::init_result init() {
    if (left_ == 0) return {};
    auto r = otpp::start<nester>(left_ - 1, failure_);
    if (!r) {
      if (failure_->is_normal()) *failure_ = r.error();
      return error(r.error());
    }
    child_ = *r;
    return {};
  }
  void terminate(const otpp::exit_reason&) {
    if (child_) otpp::stop(child_);
  }

 private:
  int left_;
  std::shared_ptr<otpp::exit_reason> failure_;
  otpp::server<nester> child_;
};

}  // namespace

TEST_CASE("start_timeout: an init slower than it fails the start with timeout, and the process is killed") {
  otpp::runtime rt{{.workers = 2}};
  auto go = std::make_shared<std::latch>(1);
  auto t0 = std::chrono::steady_clock::now();
  auto r = rt.start<slow_start>(otpp::name("slow_start"), otpp::start_timeout(50ms), go);
  const auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::timeout);
  CHECK(waited < 2s);
  auto p = otpp::whereis("slow_start");  // still in init, holding its name
  REQUIRE(p);
  otpp::exit_watch w{p};
  go->count_down();
  CHECK(w.wait(10s)->kind() == otpp::exit_kind::killed);
  CHECK_FALSE(otpp::whereis("slow_start"));

  // In time: a running server; init's refusals come back as with start.
  auto ok = rt.start<slow_start>(otpp::start_timeout(5s), nullptr);
  REQUIRE(ok);
  CHECK(otpp::call(*ok, slow_start::ping{}) == 1);
  CHECK(rt.start<slow_start>(otpp::start_timeout(5s), nullptr, 1).error() == otpp::exit_reason::error("no thanks"));
  CHECK(rt.start<slow_start>(otpp::start_timeout(5s), nullptr, 2).error().kind() == otpp::exit_kind::ignore);
  CHECK_THROWS_AS((void)rt.start<slow_start>(otpp::start_timeout(-1ms), nullptr), std::invalid_argument);
}

TEST_CASE("start nested in init past the depth limit fails cleanly instead of overflowing the stack") {
  auto failure = std::make_shared<otpp::exit_reason>();
  auto r = otpp::start<nester>(1500, failure);
  REQUIRE_FALSE(r);
  CHECK(failure->detail() == "start nested too deep: 1000 levels of start inside init");
  auto fine = otpp::start<nester>(200, failure);
  CHECK(fine);
  otpp::stop(*fine);
}
