// Links, exit signals, trap_exit, monitors and start_link: the propagation
// table (OTP semantics §3) row by row, and when terminate runs (§1.2).

#include <chrono>
#include <latch>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

using otpp_test::journal;

// A process that does what the test asks and writes down what happens to it.
class probe : public otpp::gen_server<probe> {
 public:
  struct link_to {
    otpp::pid other;
  };
  struct unlink_from {
    otpp::pid other;
  };
  struct trap {
    bool on;
  };
  struct watch {
    otpp::pid other;
  };
  struct unwatch {
    otpp::monitor_ref ref;
  };
  struct kill_other {
    otpp::pid other;
    otpp::exit_reason reason;
  };
  struct spawn_child {
    std::string name;
  };
  struct spawn_failing_child {
    int mode;  // 0 stop(r), 1 throw, 2 ignore, 3 error(r), 4 the constructor throws, 5 its name is taken
  };
  struct ping {};

  probe(std::string name, std::shared_ptr<journal> j) : name_{std::move(name)}, j_{std::move(j)} {}

  bool handle_call(link_to l) { return otpp::link(l.other); }
  void handle_call(unlink_from u) { otpp::unlink(u.other); }
  void handle_call(trap t) { trap_exit(t.on); }
  otpp::monitor_ref handle_call(watch w) { return otpp::monitor(w.other); }
  bool handle_call(unwatch u) { return otpp::demonitor(u.ref); }
  void handle_call(kill_other k) { otpp::exit(k.other, k.reason); }
  int handle_call(ping) { return 1; }
  otpp::server<probe> handle_call(spawn_child s) { return otpp::start_link<probe>(s.name, j_).value(); }
  otpp::exit_reason handle_call(spawn_failing_child s);

  void handle_info(const otpp::exit_signal& e) { j_->add(name_ + " EXIT " + e.reason.to_string()); }
  void handle_info(const otpp::down& d) {
    j_->add(name_ + " DOWN " + d.reason.to_string() + (d.ref.target() == d.process ? "" : " (bad ref)"));
  }
  void terminate(const otpp::exit_reason& r) { j_->add(name_ + " terminate " + r.to_string()); }

 private:
  std::string name_;
  std::shared_ptr<journal> j_;
};

class failing : public otpp::gen_server<failing> {
 public:
  explicit failing(int mode) : mode_{mode} {
    if (mode == 4) throw std::runtime_error("constructor throw");
  }
  otpp::init_result init() {
    switch (mode_) {
      case 0: return stop(otpp::exit_reason::error("init stop"));
      case 1: throw std::runtime_error("init throw");
      case 2: return ignore();
      default: return error(otpp::exit_reason::error("init error"));
    }
  }

 private:
  int mode_;
};

otpp::exit_reason probe::handle_call(spawn_failing_child s) {
  auto r = s.mode == 5 ? otpp::start_link<failing>(otpp::name("process_test_taken"), 2) : otpp::start_link<failing>(s.mode);
  return r ? otpp::exit_reason::normal() : r.error();
}

// Polls with calls (each one flushes the probe's mailbox) until `event` shows.
bool eventually(journal& j, const otpp::server<probe>& p, const std::string& event) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < until) {
    if (j.has(event)) return true;
    if (p.alive()) (void)otpp::try_call(p, probe::ping{});
    std::this_thread::yield();
  }
  return j.has(event);
}

struct fixture {
  otpp_test::log_capture logs;  // crash reports are expected here
  std::shared_ptr<journal> j = std::make_shared<journal>();
  otpp::server<probe> make(const std::string& name) { return otpp::start<probe>(name, j).value(); }
};

}  // namespace

TEST_CASE_METHOD(fixture, "not trapping: normal from another process is ignored") {
  auto a = make("a");
  otpp::exit(a, otpp::exit_reason::normal());
  CHECK(otpp::call(a, probe::ping{}) == 1);
  auto b = make("b");
  REQUIRE(otpp::call(a, probe::link_to{b}));
  otpp::stop(b);  // b exits normal: its link signal is ignored by a
  CHECK(otpp::call(a, probe::ping{}) == 1);
  CHECK(a.alive());
  otpp::stop(a);
}

TEST_CASE_METHOD(fixture, "not trapping: kill makes the process die with killed, without terminate") {
  auto a = make("a");
  otpp::exit_watch wa{a};
  otpp::exit(a, otpp::exit_reason::kill());
  auto r = wa.wait(10s);
  REQUIRE(r);
  CHECK(r->kind() == otpp::exit_kind::killed);
  CHECK_FALSE(j->has("a terminate killed"));
}

TEST_CASE_METHOD(fixture, "not trapping: any other reason kills the process and propagates through its links") {
  auto a = make("a");
  auto b = make("b");
  auto c = make("c");
  REQUIRE(otpp::call(a, probe::link_to{b}));
  REQUIRE(otpp::call(b, probe::link_to{c}));
  otpp::exit_watch wa{a}, wb{b}, wc{c};
  otpp::exit(a, otpp::exit_reason::error("boom"));
  CHECK(*wa.wait(10s) == otpp::exit_reason::error("boom"));
  CHECK(*wb.wait(10s) == otpp::exit_reason::error("boom"));
  CHECK(*wc.wait(10s) == otpp::exit_reason::error("boom"));
  CHECK(j->get().empty());  // no terminate for a process killed by a signal
}

TEST_CASE_METHOD(fixture, "shutdown and killed propagate like any reason") {
  auto a = make("a");
  auto b = make("b");
  REQUIRE(otpp::call(a, probe::link_to{b}));
  otpp::exit_watch wb{b};
  otpp::exit(a, otpp::exit_reason::shutdown("bye"));
  CHECK(*wb.wait(10s) == otpp::exit_reason::shutdown("bye"));

  auto x = make("x");
  auto y = make("y");
  REQUIRE(otpp::call(x, probe::link_to{y}));
  otpp::exit_watch wy{y};
  otpp::exit(x, otpp::exit_reason::kill());
  CHECK(wy.wait(10s)->kind() == otpp::exit_kind::killed);  // links see killed
}

TEST_CASE_METHOD(fixture, "trapping: kill is untrappable") {
  auto a = make("a");
  otpp::call(a, probe::trap{true});
  otpp::exit_watch wa{a};
  otpp::exit(a, otpp::exit_reason::kill());
  CHECK(wa.wait(10s)->kind() == otpp::exit_kind::killed);
  CHECK_FALSE(j->has("a terminate killed"));
}

TEST_CASE_METHOD(fixture, "trapping: every other reason, normal included, arrives as a message") {
  auto a = make("a");
  otpp::call(a, probe::trap{true});
  otpp::exit(a, otpp::exit_reason::normal());
  otpp::exit(a, otpp::exit_reason::shutdown());
  otpp::exit(a, otpp::exit_reason::error("custom"));
  CHECK(eventually(*j, a, "a EXIT error(custom)"));
  CHECK(j->has("a EXIT normal"));
  CHECK(j->has("a EXIT shutdown"));
  CHECK(a.alive());

  auto b = make("b");
  REQUIRE(otpp::call(a, probe::link_to{b}));
  otpp::exit(b, otpp::exit_reason::kill());
  CHECK(eventually(*j, a, "a EXIT killed"));  // links of a killed process receive killed
  CHECK(a.alive());
  otpp::stop(a);
}

TEST_CASE_METHOD(fixture, "linking to a dead process: noproc") {
  auto dead = make("dead");
  otpp::stop(dead);
  auto t = make("t");
  otpp::call(t, probe::trap{true});
  CHECK(otpp::call(t, probe::link_to{dead}));
  CHECK(eventually(*j, t, "t EXIT noproc"));
  otpp::stop(t);

  // Not trapping: link raises noproc at the call (Erlang's link/1); escaping
  // the handler, it ends the process with exactly that reason.
  auto n = make("n");
  otpp::exit_watch wn{n};
  auto r = otpp::try_call(n, probe::link_to{dead});
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::noproc);
  CHECK(wn.wait(10s)->kind() == otpp::exit_kind::noproc);
}

TEST_CASE_METHOD(fixture, "linking to a dead process: a caught noproc leaves the caller running and unlinked") {
  auto dead = make("dead");
  otpp::stop(dead);
  class careful : public otpp::gen_server<careful> {
   public:
    struct try_link {
      otpp::pid other;
    };
    std::string handle_call(try_link l) {
      try {
        otpp::link(l.other);
        return "linked";
      } catch (const otpp::exit_error& e) {
        return e.what();
      }
    }
  };
  auto c = otpp::start<careful>().value();
  const std::string what = otpp::call(c, careful::try_link{dead});
  CHECK(what == fmt::format("otpp::link({}): noproc", dead));
  CHECK(c.alive());
  CHECK(otpp::sys::info(c)->links.empty());
  otpp::stop(c);
}

TEST_CASE_METHOD(fixture, "kill is never lost: it overrides a stop already asked for") {
  // A handler asks to stop, and a kill arrives before it returns: the kill
  // wins (killed, and terminate does not run), as in Erlang where the kill
  // would have ended the process at once.
  class slow_stopper : public otpp::gen_server<slow_stopper> {
   public:
    struct stop_slowly {};
    slow_stopper(std::shared_ptr<journal> j, std::shared_ptr<std::latch> in, std::shared_ptr<std::latch> go)
        : j_{std::move(j)}, in_{std::move(in)}, go_{std::move(go)} {}
    void handle_cast(stop_slowly) {
      trap_exit(true);
      stop(otpp::exit_reason::shutdown());
      in_->count_down();
      go_->wait();
    }
    void terminate(const otpp::exit_reason& r) { j_->add("terminate " + r.to_string()); }

   private:
    std::shared_ptr<journal> j_;
    std::shared_ptr<std::latch> in_, go_;
  };
  auto in = std::make_shared<std::latch>(1);
  auto go = std::make_shared<std::latch>(1);
  auto s = otpp::start<slow_stopper>(j, in, go).value();
  otpp::exit_watch w{s};
  otpp::cast(s, slow_stopper::stop_slowly{});
  in->wait();
  otpp::exit(s, otpp::exit_reason::kill());
  go->count_down();
  CHECK(w.wait(10s)->kind() == otpp::exit_kind::killed);
  CHECK(j->get().empty());
}

TEST_CASE_METHOD(fixture, "kill is never lost: a trapping child busy when its parent sends shutdown, then kill") {
  // What a supervisor does when a child outlasts its shutdown timeout.
  class busy_child : public otpp::gen_server<busy_child> {
   public:
    struct hold {};
    busy_child(std::shared_ptr<journal> j, std::shared_ptr<std::latch> in, std::shared_ptr<std::latch> go)
        : j_{std::move(j)}, in_{std::move(in)}, go_{std::move(go)} {}
    void init() { trap_exit(true); }
    void handle_cast(hold) {
      in_->count_down();
      go_->wait();
    }
    void terminate(const otpp::exit_reason& r) { j_->add("child terminate " + r.to_string()); }

   private:
    std::shared_ptr<journal> j_;
    std::shared_ptr<std::latch> in_, go_;
  };
  class parent : public otpp::gen_server<parent> {
   public:
    struct spawn {
      std::shared_ptr<journal> j;
      std::shared_ptr<std::latch> in, go;
    };
    struct signal {
      otpp::pid child;
      otpp::exit_reason reason;
    };
    void init() { trap_exit(true); }
    otpp::server<busy_child> handle_call(spawn s) { return otpp::start_link<busy_child>(s.j, s.in, s.go).value(); }
    void handle_call(signal s) { otpp::exit(s.child, s.reason); }
    void handle_info(const otpp::exit_signal&) {}
  };
  auto in = std::make_shared<std::latch>(1);
  auto go = std::make_shared<std::latch>(1);
  auto p = otpp::start<parent>().value();
  auto c = otpp::call(p, parent::spawn{j, in, go});
  otpp::exit_watch w{c};
  otpp::cast(c, busy_child::hold{});
  in->wait();
  otpp::call(p, parent::signal{c, otpp::exit_reason::shutdown()});
  otpp::call(p, parent::signal{c, otpp::exit_reason::kill()});
  go->count_down();
  CHECK(w.wait(10s)->kind() == otpp::exit_kind::killed);
  CHECK_FALSE(j->has("child terminate shutdown"));
  otpp::stop(p);
}

TEST_CASE_METHOD(fixture, "unlink: a later death is not felt; link is idempotent and a no-op on self") {
  auto a = make("a");
  auto b = make("b");
  REQUIRE(otpp::call(a, probe::link_to{b}));
  REQUIRE(otpp::call(a, probe::link_to{b}));
  REQUIRE(otpp::call(a, probe::link_to{a}));
  otpp::call(a, probe::unlink_from{b});
  otpp::call(a, probe::unlink_from{b});  // unlinking twice is fine
  otpp::exit_watch wb{b};
  otpp::exit(b, otpp::exit_reason::error("gone"));
  CHECK(*wb.wait(10s) == otpp::exit_reason::error("gone"));
  CHECK(otpp::call(a, probe::ping{}) == 1);
  CHECK(a.alive());
  otpp::stop(a);
  CHECK_FALSE(otpp::link(a));  // a plain thread cannot link
}

TEST_CASE_METHOD(fixture, "monitors: down with the reason, noproc for the dead, stackable, demonitor flushes") {
  auto w = make("w");
  auto t = make("t");
  auto r1 = otpp::call(w, probe::watch{t});
  auto r2 = otpp::call(w, probe::watch{t});
  CHECK(r1.id() != r2.id());
  CHECK(r1.target() == t.pid());
  otpp::exit(t, otpp::exit_reason::error("bye"));
  CHECK(eventually(*j, w, "w DOWN error(bye)"));
  // Both monitors fire.
  (void)otpp::call(w, probe::ping{});
  auto ev = j->get();
  CHECK(std::count(ev.begin(), ev.end(), "w DOWN error(bye)") == 2);

  auto r3 = otpp::call(w, probe::watch{t});  // t is dead now
  CHECK(r3);
  CHECK(eventually(*j, w, "w DOWN noproc"));

  auto u = make("u");
  auto r4 = otpp::call(w, probe::watch{u});
  CHECK(otpp::call(w, probe::unwatch{r4}));
  CHECK_FALSE(otpp::call(w, probe::unwatch{r4}));
  otpp::stop(u, otpp::exit_reason::shutdown("quiet"));
  (void)otpp::call(w, probe::ping{});
  (void)otpp::call(w, probe::ping{});
  CHECK_FALSE(j->has("w DOWN shutdown(quiet)"));
  otpp::stop(w);
}

TEST_CASE_METHOD(fixture, "await_exit from a plain thread") {
  auto a = make("a");
  auto late = otpp::await_exit(a, 20ms);
  REQUIRE_FALSE(late);
  CHECK(late.error().kind() == otpp::exit_kind::timeout);
  otpp::exit_watch wa{a};
  CHECK(wa.wait(1ms).error().kind() == otpp::exit_kind::timeout);  // and waiting again works
  std::thread stopper{[&] { otpp::stop(a, otpp::exit_reason::shutdown()); }};
  auto r = wa.wait(10s);
  stopper.join();
  REQUIRE(r);
  CHECK(r->kind() == otpp::exit_kind::shutdown);
  CHECK(otpp::await_exit(a)->kind() == otpp::exit_kind::noproc);
  CHECK(otpp::await_exit(otpp::pid{}).error().kind() == otpp::exit_kind::noproc);
}

TEST_CASE_METHOD(fixture, "terminate: runs on the parent's exit signal when trapping") {
  auto parent = make("parent");
  auto child = otpp::call(parent, probe::spawn_child{"child"});
  otpp::call(child, probe::trap{true});
  otpp::exit_watch wc{child};
  otpp::stop(parent, otpp::exit_reason::shutdown());
  CHECK(wc.wait(10s)->kind() == otpp::exit_kind::shutdown);
  CHECK(j->has("child terminate shutdown"));
}

TEST_CASE_METHOD(fixture, "terminate: a parent exiting normal still ends a trapping child") {
  auto parent = make("parent");
  auto child = otpp::call(parent, probe::spawn_child{"child"});
  otpp::call(child, probe::trap{true});
  otpp::exit_watch wc{child};
  otpp::stop(parent);
  CHECK(wc.wait(10s)->is_normal());
  CHECK(j->has("child terminate normal"));
}

TEST_CASE_METHOD(fixture, "terminate: not run for a non-trapping child killed by its parent's exit") {
  auto parent = make("parent");
  auto child = otpp::call(parent, probe::spawn_child{"child"});
  otpp::exit_watch wc{child};
  otpp::exit(parent, otpp::exit_reason::error("crash"));
  CHECK(*wc.wait(10s) == otpp::exit_reason::error("crash"));
  CHECK_FALSE(j->has("child terminate error(crash)"));
  // A normal parent exit does not end a child that does not trap.
  auto p2 = make("p2");
  auto c2 = otpp::call(p2, probe::spawn_child{"c2"});
  otpp::stop(p2);
  CHECK(otpp::call(c2, probe::ping{}) == 1);
  otpp::stop(c2);
}

TEST_CASE_METHOD(fixture, "terminate: an exit signal from a non-parent while trapping is only a message") {
  auto a = make("a");
  auto b = make("b");
  otpp::call(a, probe::trap{true});
  REQUIRE(otpp::call(a, probe::link_to{b}));
  otpp::exit(b, otpp::exit_reason::error("x"));
  CHECK(eventually(*j, a, "a EXIT error(x)"));
  CHECK_FALSE(j->has("a terminate error(x)"));
  CHECK(a.alive());
  otpp::stop(a);
  CHECK(j->has("a terminate normal"));  // stop runs terminate, trapping or not
}

TEST_CASE_METHOD(fixture, "start_link: a failed init leaves no exit signal; stop/throw kill a non-trapping caller") {
  auto t = make("t");
  otpp::call(t, probe::trap{true});
  for (int mode = 0; mode < 4; ++mode) CHECK_FALSE(otpp::call(t, probe::spawn_failing_child{mode}).is_normal());
  (void)otpp::call(t, probe::ping{});
  for (auto& e : j->get()) CHECK(e.find("EXIT") == std::string::npos);
  CHECK(t.alive());
  otpp::stop(t);

  auto quiet = make("quiet");
  CHECK(otpp::call(quiet, probe::spawn_failing_child{2}).kind() == otpp::exit_kind::ignore);
  CHECK(otpp::call(quiet, probe::spawn_failing_child{3}) == otpp::exit_reason::error("init error"));
  CHECK(quiet.alive());  // ignore and error never kill the caller
  otpp::stop(quiet);

  auto victim = make("victim");
  otpp::exit_watch wv{victim};
  CHECK(otpp::call(victim, probe::spawn_failing_child{0}) == otpp::exit_reason::error("init stop"));
  CHECK(*wv.wait(10s) == otpp::exit_reason::error("init stop"));

  // Refused before init (the constructor threw, the name is taken): the
  // link was never made, and the references the start would have handed
  // out are given back (the address build's leak check).
  auto holder = otpp::start<probe>(otpp::name("process_test_taken"), std::string{"holder"}, j).value();
  auto calm = make("calm");
  CHECK(otpp::call(calm, probe::spawn_failing_child{4}).detail() == "std::runtime_error: constructor throw");
  CHECK(otpp::call(calm, probe::spawn_failing_child{5}).kind() == otpp::exit_kind::already_started);
  CHECK(calm.alive());
  CHECK(otpp::sys::info(calm)->links.empty());
  otpp::stop(calm);
  otpp::stop(holder);

  // From a plain thread, start_link is start: the thread just gets the error.
  auto r = otpp::start_link<failing>(0);
  REQUIRE_FALSE(r);
  CHECK(r.error() == otpp::exit_reason::error("init stop"));
}

TEST_CASE_METHOD(fixture, "a crashing process takes its linked, non-trapping neighbours with it") {
  auto parent = make("parent");
  auto child = otpp::call(parent, probe::spawn_child{"child"});
  otpp::exit_watch wp{parent};
  otpp::exit(child, otpp::exit_reason::error("child crash"));
  CHECK(*wp.wait(10s) == otpp::exit_reason::error("child crash"));
}
