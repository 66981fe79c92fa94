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
