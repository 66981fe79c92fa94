// Dynamic supervisors (OTP semantics §2.6): start_child and its limits,
// terminate_child by pid, extra arguments at start and restart, restart
// types, ignore, intensity, concurrent shutdown.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

using otpp_test::journal;

// Writes down its arguments at every start; ignores its start while
// `ignore` is positive.
class conn : public otpp::gen_server<conn> {
 public:
  struct ping {};

  conn(std::string db, int n, std::shared_ptr<journal> j, std::shared_ptr<std::atomic<int>> ignore = nullptr)
      : db_{std::move(db)}, n_{n}, j_{std::move(j)}, ignore_{std::move(ignore)} {}

  otpp::init_result init() {
    if (ignore_ && ignore_->load() > 0) {
      ignore_->fetch_sub(1);
      return ignore();
    }
    j_->add(db_ + " " + std::to_string(n_));
    return {};
  }
  int handle_call(ping) { return n_; }

 private:
  std::string db_;
  int n_;
  std::shared_ptr<journal> j_;
  std::shared_ptr<std::atomic<int>> ignore_;
};

class plain : public otpp::gen_server<plain> {
 public:
  struct ping {};
  explicit plain(std::shared_ptr<std::atomic<int>> fail = nullptr) : fail_{std::move(fail)} {}
  otpp::init_result init() {
    if (fail_ && fail_->load() > 0) {
      fail_->fetch_sub(1);
      return stop(otpp::exit_reason::error("cannot start"));
    }
    return {};
  }
  int handle_call(ping) { return 1; }

 private:
  std::shared_ptr<std::atomic<int>> fail_;
};

using db_sup = otpp::basic_dynamic_supervisor<std::string>;

struct fixture {
  std::shared_ptr<otpp::testing::virtual_clock> clock = std::make_shared<otpp::testing::virtual_clock>();
  otpp::runtime rt{{.workers = 2, .clock = clock}};
  std::shared_ptr<journal> j = std::make_shared<journal>();

  otpp::server<otpp::dynamic_supervisor> start(otpp::dynamic_supervisor_flags f = {}) {
    return rt.start<otpp::dynamic_supervisor>(f).value();
  }
};

void kill(const otpp::pid& p) {
  otpp::exit_watch w{p};
  otpp::exit(p, otpp::exit_reason::kill());
  REQUIRE(w.wait(5s));
}

// The supervisor sees a child's exit asynchronously: wait (bounded) until
// its children satisfy `ok`.
template <class Sup, class F>
bool await_children(const Sup& sup, F ok) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ok(otpp::which_children(sup).value())) return true;
    std::this_thread::yield();
  }
  return false;
}

}  // namespace

TEST_CASE("dynamic: start_child, which_children, count_children, terminate_child by pid", "[dynamic_supervisor]") {
  fixture f;
  auto sup = f.start();
  CHECK(otpp::which_children(sup).value().empty());
  auto a = otpp::start_child(sup, otpp::child<plain>()).value();
  auto b = otpp::start_child(sup, otpp::child<plain>()).value();  // same id: ids are ignored
  CHECK(a.alive());
  CHECK(b.alive());
  auto kids = otpp::which_children(sup).value();
  REQUIRE(kids.size() == 2);
  CHECK(kids[0].process == b);  // newest first
  CHECK(kids[1].process == a);
  CHECK(kids[0].id.empty());
  auto n = otpp::count_children(sup).value();
  CHECK(n.specs == 2);
  CHECK(n.active == 2);
  CHECK(n.workers == 2);
  CHECK(n.supervisors == 0);

  CHECK(otpp::terminate_child(sup, a));
  CHECK_FALSE(a.alive());
  CHECK(otpp::terminate_child(sup, a).error() == otpp::exit_reason::error("not_found"));  // Elixir, not OTP's ok
  CHECK(otpp::terminate_child(sup, otpp::pid{}).error() == otpp::exit_reason::error("not_found"));
  CHECK(otpp::terminate_child(sup, sup.pid()).error() == otpp::exit_reason::error("not_found"));
  CHECK(otpp::count_children(sup).value().specs == 1);
}

TEST_CASE("dynamic: bad specs are refused, significant among them", "[dynamic_supervisor]") {
  fixture f;
  auto sup = f.start();
  otpp::child_spec none;
  CHECK(otpp::start_child(sup, none).error() == otpp::exit_reason::error("invalid_child_spec: missing_start"));
  CHECK(otpp::start_child(sup, otpp::child<plain>().with_shutdown(otpp::shutdown_policy::timeout(-1ms))).error() ==
        otpp::exit_reason::error("invalid_child_spec: invalid_shutdown: -1"));
  CHECK(otpp::start_child(sup, otpp::child<plain>().with_restart(otpp::restart_type::temporary).with_significant())
            .error() == otpp::exit_reason::error("invalid_child_spec: significant"));
  CHECK(otpp::count_children(sup).value().specs == 0);
  auto bad = f.rt.start<otpp::dynamic_supervisor>(otpp::dynamic_supervisor_flags{.max_restarts = -1});
  CHECK(bad.error() == otpp::exit_reason::error("supervisor_data: invalid_intensity: -1"));
}

TEST_CASE("dynamic: a failed start keeps nothing; an ignored start returns an empty pid", "[dynamic_supervisor]") {
  fixture f;
  auto sup = f.start();
  auto fail = std::make_shared<std::atomic<int>>(1);
  CHECK(otpp::start_child(sup, otpp::child<plain>(fail)).error() == otpp::exit_reason::error("cannot start"));
  auto ign = std::make_shared<std::atomic<int>>(1);
  auto r = otpp::start_child(sup, otpp::child<conn>(std::string{"db"}, 1, f.j, ign));
  REQUIRE(r);
  CHECK_FALSE(*r);
  CHECK(otpp::count_children(sup).value().specs == 0);
  CHECK(sup.alive());
}

TEST_CASE("dynamic: max_children counts restarting children", "[dynamic_supervisor]") {
  fixture f;
  auto sup = f.start({.max_restarts = 100, .max_children = 2});
  auto a = otpp::start_child(sup, otpp::child<plain>().with_backoff({.initial = 1s, .max = 1s})).value();
  auto b = otpp::start_child(sup, otpp::child<plain>()).value();
  CHECK(otpp::start_child(sup, otpp::child<plain>()).error() == otpp::exit_reason::error("max_children"));
  kill(a);
  f.clock->settle();  // a waits out its backoff: restarting
  auto kids = otpp::which_children(sup).value();
  REQUIRE(kids.size() == 2);
  CHECK(kids[1].state == otpp::child_info::status::restarting);
  CHECK(otpp::count_children(sup).value().active == 1);
  CHECK(otpp::start_child(sup, otpp::child<plain>()).error() == otpp::exit_reason::error("max_children"));
  f.clock->advance(1s);
  CHECK(otpp::count_children(sup).value().active == 2);
  CHECK(otpp::terminate_child(sup, b));
  CHECK(otpp::start_child(sup, otpp::child<plain>()));
}

TEST_CASE("dynamic: a child held restarting keeps its old pid; terminate_child stops the retries", "[dynamic_supervisor]") {
  fixture f;
  otpp_test::log_capture logs;
  auto sup = f.start({.max_restarts = 100});
  // Held by its backoff...
  auto a = otpp::start_child(sup, otpp::child<plain>().with_backoff({.initial = 1s, .max = 1s})).value();
  kill(a);
  f.clock->settle();
  REQUIRE(otpp::which_children(sup).value().at(0).state == otpp::child_info::status::restarting);
  CHECK(otpp::terminate_child(sup, a));
  CHECK(otpp::which_children(sup).value().empty());
  f.clock->advance(2s);  // the retry that was scheduled finds nothing
  CHECK(otpp::which_children(sup).value().empty());
  CHECK(otpp::terminate_child(sup, a).error() == otpp::exit_reason::error("not_found"));

  // ...or by starts that keep failing (each retry is a message to itself,
  // so the call gets in between two of them).
  auto sup2 = f.start({.max_restarts = 100'000});
  auto fail = std::make_shared<std::atomic<int>>(0);
  auto b = otpp::start_child(sup2, otpp::child<plain>(fail)).value();
  fail->store(1'000'000);
  kill(b);
  while (fail->load() > 1'000'000 - 3) std::this_thread::yield();  // retrying
  CHECK(otpp::terminate_child(sup2, b));
  const int left = fail->load();
  CHECK(otpp::count_children(sup2).value().specs == 0);
  CHECK(otpp::count_children(sup2).value().specs == 0);  // two flushes: no retry was left queued
  CHECK(fail->load() == left);
  CHECK(sup2.alive());
  CHECK(sup.alive());
}

TEST_CASE("dynamic: extra arguments go first at every start and restart", "[dynamic_supervisor]") {
  fixture f;
  auto sup = f.rt.start<db_sup>(otpp::dynamic_supervisor_flags{}, std::string{"pg"}).value();
  auto c = otpp::start_child(sup, otpp::child<conn>(7, f.j)).value();
  CHECK(f.j->get() == std::vector<std::string>{"pg 7"});
  kill(c);
  REQUIRE(await_children(sup, [&](const std::vector<otpp::child_info>& k) {
    return k.size() == 1 && k[0].process && k[0].process != c;
  }));
  CHECK(f.j->get() == std::vector<std::string>{"pg 7", "pg 7"});

  // A name stays first: start_link<conn>(name, "pg", 8, j).
  auto named = otpp::start_child(sup, otpp::child<conn>(otpp::name("dyn_test_conn"), 8, f.j)).value();
  CHECK(otpp::whereis("dyn_test_conn") == named);
  CHECK(otpp::call(otpp::server_cast<conn>(named).value(), conn::ping{}) == 8);
  kill(named);
  REQUIRE(await_children(sup, [&](const std::vector<otpp::child_info>& k) {
    return k.size() == 2 && k[0].process && k[0].process != named;
  }));
  CHECK(otpp::whereis("dyn_test_conn") == otpp::which_children(sup).value()[0].process);
}

TEST_CASE("dynamic: restart types decide by exit reason; ignore on restart removes the child", "[dynamic_supervisor]") {
  fixture f;
  auto sup = f.start();
  auto perm = otpp::start_child(sup, otpp::child<plain>()).value();
  auto trans = otpp::start_child(sup, otpp::child<plain>().with_restart(otpp::restart_type::transient)).value();
  auto temp = otpp::start_child(sup, otpp::child<plain>().with_restart(otpp::restart_type::temporary)).value();
  otpp::stop(trans);  // normal: for good
  kill(temp);         // temporary: never restarted
  REQUIRE(await_children(sup, [](const std::vector<otpp::child_info>& k) { return k.size() == 1; }));
  CHECK(otpp::which_children(sup).value()[0].process == perm);
  otpp::stop(perm);  // permanent: even a normal exit restarts it
  REQUIRE(await_children(sup, [&](const std::vector<otpp::child_info>& k) {
    return k.size() == 1 && k[0].process && k[0].process != perm;
  }));

  auto ign = std::make_shared<std::atomic<int>>(0);
  auto c = otpp::start_child(sup, otpp::child<conn>(std::string{"db"}, 1, f.j, ign)).value();
  ign->store(1);  // its restart will ignore
  kill(c);
  REQUIRE(await_children(sup, [](const std::vector<otpp::child_info>& k) { return k.size() == 1; }));
  CHECK(sup.alive());
}

TEST_CASE("dynamic: too many restarts stop the supervisor and its children", "[dynamic_supervisor][intensity]") {
  fixture f;
  otpp_test::log_capture logs;
  auto sup = f.start({.max_restarts = 1});
  auto a = otpp::start_child(sup, otpp::child<plain>()).value();
  auto other = otpp::start_child(sup, otpp::child<plain>()).value();
  otpp::exit_watch w{sup};
  kill(a);
  REQUIRE(await_children(sup, [&](const std::vector<otpp::child_info>& k) {
    return k.size() == 2 && k[1].process && k[1].process != a;
  }));
  kill(otpp::which_children(sup).value()[1].process);  // a second restart within 5 s: over the limit
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->kind() == otpp::exit_kind::shutdown);
  CHECK_FALSE(other.alive());
  CHECK(logs.contains("reached max restart intensity"));
}

TEST_CASE("dynamic: a restart that keeps failing escalates", "[dynamic_supervisor][intensity]") {
  fixture f;
  otpp_test::log_capture logs;
  auto sup = f.start({.max_restarts = 3});
  auto fail = std::make_shared<std::atomic<int>>(0);
  auto a = otpp::start_child(sup, otpp::child<plain>(fail)).value();
  otpp::exit_watch w{sup};
  fail->store(1000);
  kill(a);
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->kind() == otpp::exit_kind::shutdown);
  CHECK(fail->load() == 1000 - 3);  // the restart and two retries counted; the fourth attempt is over the limit
}

namespace {
// Counts the children inside terminate at the same time; each waits
// (bounded) for all of them, so a one-at-a-time shutdown shows as "alone".
struct rendezvous {
  std::mutex m;
  std::condition_variable cv;
  int inside = 0;
  int expected = 0;
  std::shared_ptr<journal> j;
};

class slow_stopper : public otpp::gen_server<slow_stopper> {
 public:
  explicit slow_stopper(std::shared_ptr<rendezvous> r) : r_{std::move(r)} {}
  void init() { trap_exit(true); }
  void terminate(const otpp::exit_reason&) {
    std::unique_lock lock{r_->m};
    ++r_->inside;
    r_->cv.notify_all();
    const bool together = r_->cv.wait_for(lock, 3s, [&] { return r_->inside == r_->expected; });
    r_->j->add(together ? "together" : "alone");
  }

 private:
  std::shared_ptr<rendezvous> r_;
};
}  // namespace

TEST_CASE("dynamic: shutdown stops every child at once", "[dynamic_supervisor]") {
  otpp::runtime rt{{.workers = 4}};  // the three terminates block side by side
  auto j = std::make_shared<journal>();
  auto r = std::make_shared<rendezvous>();
  r->expected = 3;
  r->j = j;
  auto sup = rt.start<otpp::dynamic_supervisor>().value();
  for (int i = 0; i < 3; ++i) REQUIRE(otpp::start_child(sup, otpp::child<slow_stopper>(r)));
  otpp::stop(sup);
  CHECK(j->get() == std::vector<std::string>{"together", "together", "together"});
}

TEST_CASE("dynamic: a child of a supervisor, and dead ones answer noproc", "[dynamic_supervisor]") {
  fixture f;
  auto top = f.rt.start<otpp::supervisor>(std::vector<otpp::child_spec>{
                                               otpp::child<otpp::dynamic_supervisor>(otpp::name("dyn_test_sessions"))})
                 .value();
  CHECK(otpp::count_children(top).value().supervisors == 1);
  auto dyn = otpp::whereis<otpp::dynamic_supervisor>("dyn_test_sessions");
  auto c = otpp::start_child(dyn, otpp::child<plain>()).value();
  otpp::stop(top);
  CHECK_FALSE(c.alive());
  CHECK(otpp::which_children(dyn).error().kind() == otpp::exit_kind::noproc);
  CHECK(otpp::start_child(dyn, otpp::child<plain>()).error().kind() == otpp::exit_kind::noproc);
}
