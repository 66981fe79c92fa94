// Introspection: state, statistics, process info, process listing.

#include <chrono>
#include <future>
#include <latch>
#include <memory>
#include <thread>
#include <string>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {
class box : public otpp::gen_server<box> {
 public:
  struct get {};
  struct put {
    int v;
  };
  struct hold {
    std::shared_future<void> until;
  };
  struct trap {};
  struct watch {
    otpp::pid p;
  };
  struct link_to {
    otpp::pid p;
  };
  explicit box(int v) : v_{v} {}
  int handle_call(get) const { return v_; }
  void handle_cast(put p) { v_ = p.v; }
  void handle_cast(hold h) { h.until.wait(); }
  void handle_call(trap) { trap_exit(); }
  void handle_call(watch w) { (void)otpp::monitor(w.p); }
  void handle_call(link_to l) { otpp::link(l.p); }
  int value() const { return v_; }
  void set(int v) { v_ = v; }

 private:
  int v_;
};
}  // namespace

TEST_CASE("get_state and replace_state run on the server") {
  auto b = otpp::start<box>(3).value();
  CHECK(otpp::sys::get_state(b, [](const box& x) { return x.value(); }).value() == 3);
  CHECK(otpp::sys::get_state(b)->value() == 3);  // a copy
  CHECK(otpp::sys::replace_state(b, [](box& x) { x.set(9); }));
  CHECK(otpp::call(b, box::get{}) == 9);
  auto bad = otpp::sys::replace_state(b, [](box&) { throw std::runtime_error("nope"); });
  REQUIRE_FALSE(bad);
  CHECK(bad.error().detail() == "std::runtime_error: nope");
  CHECK(b.alive());  // a failing visitor does not crash the server
  otpp::stop(b);
  CHECK(otpp::sys::get_state(b).error().kind() == otpp::exit_kind::noproc);
}

TEST_CASE("statistics count handled messages and the waiting ones") {
  auto b = otpp::start<box>(0).value();
  for (int i = 0; i < 10; ++i) otpp::cast(b, box::put{i});
  (void)otpp::call(b, box::get{});
  auto st = otpp::sys::statistics(b).value();
  CHECK(st.messages_handled >= 11);
  CHECK(st.mailbox_length == 0);

  std::promise<void> gate;
  otpp::cast(b, box::hold{gate.get_future().share()});
  for (int i = 0; i < 5; ++i) otpp::cast(b, box::put{i});
  auto pending = std::async(std::launch::async, [&] { return otpp::sys::statistics(b, 10s); });
  gate.set_value();
  auto st2 = pending.get().value();
  CHECK(st2.mailbox_length <= 5);  // what was still queued behind the request
  CHECK(st2.messages_handled >= st.messages_handled + 1);
  otpp::stop(b);
}

TEST_CASE("process info: name, type, links, monitors, trap_exit") {
  otpp_test::log_capture logs;  // b has no handle_info(down): its down is logged and dropped
  auto a = otpp::start<box>(otpp::name("sys.info.a"), 1).value();
  auto b = otpp::start<box>(2).value();
  otpp::call(a, box::trap{});
  otpp::call(a, box::link_to{b});
  otpp::call(b, box::watch{a});
  (void)otpp::call(b, box::get{});
  (void)otpp::call(a, box::get{});
  auto ia = otpp::sys::info(a).value();
  CHECK(ia.pid == a.pid());
  CHECK(ia.name == "sys.info.a");
  CHECK(ia.type.find("box") != std::string::npos);
  CHECK(ia.trap_exit);
  REQUIRE(ia.links.size() == 1);
  CHECK(ia.links[0] == b.pid());
  CHECK(ia.monitored_by == 1);
  CHECK(!ia.parent);  // started from this thread
  CHECK(ia.memory >= sizeof(int));
  auto ib = otpp::sys::info(b).value();
  CHECK(ib.monitoring == 1);
  CHECK(ib.links.size() == 1);
  CHECK_FALSE(ib.trap_exit);
  CHECK(ib.memory > 0);
  otpp::stop(a);
  otpp::stop(b);
  CHECK(otpp::sys::info(a).error().kind() == otpp::exit_kind::noproc);
}

TEST_CASE("process info: the parent a process was start_link-ed from") {
  auto t = otpp::task_async([] {
    auto child = otpp::start_link<box>(7).value();
    auto i = otpp::sys::info(child).value();
    const bool ok = i.parent == otpp::self();
    otpp::unlink(child.pid());
    otpp::stop(child);
    return ok;
  });
  CHECK(otpp::await(t, 60s));
}

TEST_CASE("listing the live processes of a runtime") {
  otpp::runtime rt{{.workers = 1}};
  auto x = rt.start<box>(1).value();
  auto y = rt.start<box>(2).value();
  auto all = otpp::sys::processes(rt);
  REQUIRE(all.size() == 2);
  CHECK(all[0] == x.pid());
  CHECK(all[1] == y.pid());
  otpp::stop(x);
  CHECK(otpp::sys::processes(rt).size() == 1);
}

namespace {
class slow_consumer : public otpp::gen_server<slow_consumer> {
 public:
  struct hold {
    std::shared_ptr<std::latch> in, go;
  };
  struct item {};
  struct nap {};
  void handle_cast(hold h) {
    h.in->count_down();
    h.go->wait();
  }
  void handle_cast(item) { ++items_; }
  int handle_call(item) { return items_; }
  void handle_call(nap) { hibernate(); }

 private:
  int items_ = 0;
};
}  // namespace

TEST_CASE("peek reads status and queue length at once, behind a backlog, without a message") {
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<slow_consumer>().value();
  auto in = std::make_shared<std::latch>(1);
  auto go = std::make_shared<std::latch>(1);
  otpp::cast(s, slow_consumer::hold{in, go});
  in->wait();
  for (int i = 0; i < 10'000; ++i) otpp::cast(s, slow_consumer::item{});
  auto snap = otpp::sys::peek(s);
  CHECK(snap.status == otpp::sys::process_snapshot::status_t::running);
  CHECK(snap.message_queue_len == 10'000);
  CHECK_FALSE(otpp::sys::statistics(s, 20ms));  // a system message waits behind the backlog
  go->count_down();
  CHECK(otpp::call(s, slow_consumer::item{}) == 10'000);
  CHECK(otpp::sys::peek(s).message_queue_len == 0);
  (void)otpp::call(s, slow_consumer::item{}, otpp::infinity);  // inline calls count as taken too
  CHECK(otpp::sys::peek(s).message_queue_len == 0);

  // Hibernation is observable without waking the process.
  otpp::call(s, slow_consumer::nap{});
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!otpp::sys::is_hibernating(s) && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  CHECK(otpp::sys::is_hibernating(s));
  CHECK(otpp::sys::peek(s).status == otpp::sys::process_snapshot::status_t::hibernating);
  CHECK(otpp::call(s, slow_consumer::item{}) == 10'000);  // a message wakes it
  CHECK_FALSE(otpp::sys::is_hibernating(s));

  otpp::stop(s);
  CHECK(otpp::sys::peek(s).status == otpp::sys::process_snapshot::status_t::exited);
  CHECK(otpp::sys::peek(otpp::pid{}).status == otpp::sys::process_snapshot::status_t::exited);
}

namespace {
// Records what it is cast, in order.
class recorder : public otpp::gen_server<recorder> {
 public:
  struct append {
    int v;
  };
  struct items {};
  struct suspend_self {};
  void handle_cast(append a) { log_.push_back(a.v); }
  std::vector<int> handle_call(items) const { return log_; }
  otpp::exit_kind handle_call(suspend_self) {
    auto r = otpp::sys::suspend(otpp::self());
    return r ? otpp::exit_kind::normal : r.error().kind();
  }
  const std::vector<int>& log() const { return log_; }

 private:
  std::vector<int> log_;
};

std::vector<int> one_to(int n) {
  std::vector<int> v;
  for (int i = 1; i <= n; ++i) v.push_back(i);
  return v;
}
}  // namespace

TEST_CASE("suspend holds every message but signals and system requests; resume hands them over in order") {
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<recorder>().value();
  otpp::cast(s, recorder::append{1});
  CHECK(otpp::call(s, recorder::items{}) == std::vector<int>{1});
  REQUIRE(otpp::sys::suspend(s.pid()));
  for (int i = 2; i <= 101; ++i) otpp::cast(s, recorder::append{i});
  // A call waits like any message: past its timeout it fails, as in OTP.
  auto late = otpp::try_call(s, recorder::items{}, 50ms);
  REQUIRE_FALSE(late);
  CHECK(late.error().kind() == otpp::exit_kind::timeout);
  // System requests are answered meanwhile, and see nothing of the held casts.
  CHECK(otpp::sys::get_state(s, [](const recorder& r) { return r.log(); }).value() == std::vector<int>{1});
  auto info = otpp::sys::info(s.pid()).value();
  CHECK(info.suspended);
  CHECK(info.mailbox_length >= 100);  // the held casts (and the timed-out call, if not yet dropped)
  CHECK(otpp::sys::suspend(s.pid()));  // again: still suspended, nothing else changes
  REQUIRE(otpp::sys::resume(s.pid()));
  otpp::cast(s, recorder::append{102});  // after what was held
  CHECK(otpp::call(s, recorder::items{}) == one_to(102));
  CHECK_FALSE(otpp::sys::info(s.pid()).value().suspended);
  CHECK(otpp::sys::resume(s.pid()));  // not suspended: nothing to do
  otpp::stop(s);
}

TEST_CASE("a suspended process still dies of exit signals; a call held there fails with the reason at once") {
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<recorder>().value();
  REQUIRE(otpp::sys::suspend(s.pid()));
  auto pending = otpp::async_try_call(s, recorder::items{}, 30s);
  // Held, not answered: the suspended process has taken it in.
  REQUIRE(otpp_test::eventually([&] { return otpp::sys::info(s.pid()).value().mailbox_length == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  otpp::exit(s.pid(), otpp::exit_reason::kill());
  auto r = pending.get();
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::killed);
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);  // the reason, not the 30 s timeout
  CHECK_FALSE(s.alive());
}

TEST_CASE("suspend: a process cannot suspend itself; a dead one is noproc; stop still stops a suspended one") {
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<recorder>().value();
  CHECK(otpp::call(s, recorder::suspend_self{}) == otpp::exit_kind::calling_self);
  CHECK_FALSE(otpp::sys::info(s.pid()).value().suspended);
  REQUIRE(otpp::sys::suspend(s.pid()));
  otpp::cast(s, recorder::append{1});
  CHECK(otpp::try_stop(s.pid(), otpp::exit_reason::shutdown(), 5s));  // a system request
  CHECK(otpp::sys::suspend(s.pid()).error().kind() == otpp::exit_kind::noproc);
  CHECK(otpp::sys::resume(s.pid()).error().kind() == otpp::exit_kind::noproc);
}

namespace {
// Answers `ask` only when told to (a deferred reply).
class answerer : public otpp::gen_server<answerer> {
 public:
  struct ask {
    using reply_type = int;
  };
  struct answer {};
  struct asked {};
  void handle_call(ask, otpp::reply_to<int> r) { waiting_.push_back(std::move(r)); }
  void handle_call(answer) {
    for (auto& r : waiting_) (void)r.reply(7);
    waiting_.clear();
  }
  std::size_t handle_call(asked) const { return waiting_.size(); }

 private:
  std::vector<otpp::reply_to<int>> waiting_;
};

// A handler that waits for the answerer without holding its worker.
class asker : public otpp::gen_server<asker> {
 public:
  struct go {
    otpp::server<answerer> from;
  };
  otpp::async<void> handle_cast(go g) { log_.push_back(co_await otpp::async_call(g.from, answerer::ask{})); }
  void handle_cast(recorder::append a) { log_.push_back(a.v); }
  std::vector<int> handle_call(recorder::items) const { return log_; }
  const std::vector<int>& log() const { return log_; }

 private:
  std::vector<int> log_;
};
}  // namespace

TEST_CASE("suspend while a handler awaits: the handler still finishes; what came after waits for resume") {
  otpp::runtime rt{{.workers = 2}};
  auto a = rt.start<answerer>().value();
  auto s = rt.start<asker>().value();
  otpp::cast(s, asker::go{a});
  REQUIRE(otpp_test::eventually([&] { return otpp::call(a, answerer::asked{}) == 1; }));
  REQUIRE(otpp::sys::suspend(s.pid()));  // a system request: answered while the handler awaits
  otpp::cast(s, recorder::append{1});
  otpp::call(a, answerer::answer{});
  // The awaited reply resumes the handler (part of the message it was
  // handling), and the cast sent meanwhile stays held.
  REQUIRE(otpp_test::eventually([&] {
    return otpp::sys::get_state(s, [](const asker& x) { return x.log(); }).value() == std::vector<int>{7};
  }));
  CHECK(otpp::sys::info(s.pid()).value().mailbox_length == 1);
  REQUIRE(otpp::sys::resume(s.pid()));
  CHECK(otpp::call(s, recorder::items{}) == std::vector<int>{7, 1});
  otpp::stop(s);
  otpp::stop(a);
}
