// Supervisors (OTP semantics §2): specs and their validation, start order
// and rollback, strategies, restart types, intensity, the child API,
// auto_shutdown, nesting, shutdown policies and backoff. Time-dependent
// cases run on a virtual clock.

#include <atomic>
#include <chrono>
#include <memory>
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

// A child that writes down its start and its terminate, and fails on demand.
class worker : public otpp::gen_server<worker> {
 public:
  struct crash {};
  struct ping {};

  worker(std::string name, std::shared_ptr<journal> j, bool trap = false, std::shared_ptr<std::atomic<int>> fail_init = nullptr)
      : name_{std::move(name)}, j_{std::move(j)}, trap_{trap}, fail_init_{std::move(fail_init)} {}

  otpp::init_result init() {
    if (fail_init_ && fail_init_->load() > 0) {
      fail_init_->fetch_sub(1);
      j_->add("fail " + name_);
      return stop(otpp::exit_reason::error("cannot start"));
    }
    if (trap_) trap_exit(true);
    j_->add("start " + name_);
    return {};
  }
  void terminate(const otpp::exit_reason& r) { j_->add("stop " + name_ + " " + r.to_string()); }
  int handle_call(ping) { return 1; }
  void handle_call(crash) { throw std::runtime_error("boom"); }

 private:
  std::string name_;
  std::shared_ptr<journal> j_;
  bool trap_;
  std::shared_ptr<std::atomic<int>> fail_init_;
};

otpp::child_spec spec(const std::string& id, const std::shared_ptr<journal>& j, bool trap = true) {
  return otpp::child<worker>(id, j, trap).with_id(id);
}

otpp::pid child_pid(const otpp::server<otpp::supervisor>& sup, const std::string& id) {
  for (auto& c : otpp::which_children(sup).value())
    if (c.id == id) return c.process;
  return {};
}

// Waits (bounded) until the supervisor's counts satisfy `ok`.
template <class F>
bool await_counts(const otpp::server<otpp::supervisor>& sup, F ok) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ok(otpp::count_children(sup).value())) return true;
    std::this_thread::yield();
  }
  return false;
}

void kill(const otpp::pid& p) {
  otpp::exit_watch w{p};
  otpp::exit(p, otpp::exit_reason::kill());
  REQUIRE(w.wait(5s));
}

struct fixture {
  std::shared_ptr<otpp::testing::virtual_clock> clock = std::make_shared<otpp::testing::virtual_clock>();
  otpp::runtime rt{{.workers = 2, .clock = clock}};
  std::shared_ptr<journal> j = std::make_shared<journal>();

  otpp::result<otpp::server<otpp::supervisor>> start(std::vector<otpp::child_spec> kids, otpp::supervisor_flags f = {}) {
    return rt.start<otpp::supervisor>(std::move(kids), f);
  }
};

}  // namespace

TEST_CASE("children start in order and stop in reverse order", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("a", f.j), spec("b", f.j), spec("c", f.j)}).value();
  otpp::stop(sup);
  CHECK(f.j->get() == std::vector<std::string>{"start a", "start b", "start c", "stop c shutdown", "stop b shutdown",
                                               "stop a shutdown"});
}

TEST_CASE("a suspended child still shuts down with its supervisor, terminate run, in order", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("a", f.j), spec("b", f.j), spec("c", f.j)}).value();
  // The parent's exit signal is not a message a suspension holds (OTP's
  // suspended loop takes it too).
  REQUIRE(otpp::sys::suspend(child_pid(sup, "b")));
  otpp::stop(sup);
  CHECK(f.j->get() == std::vector<std::string>{"start a", "start b", "start c", "stop c shutdown", "stop b shutdown",
                                               "stop a shutdown"});
}

TEST_CASE("bad specs and flags are start errors", "[supervisor]") {
  fixture f;
  auto detail = [&](std::vector<otpp::child_spec> kids, otpp::supervisor_flags fl = {}) {
    auto r = f.start(std::move(kids), fl);
    REQUIRE_FALSE(r);
    return std::string{r.error().detail()};
  };
  CHECK(detail({spec("a", f.j), spec("a", f.j)}) == "start_spec: duplicate_child_name: a");
  CHECK(detail({spec("", f.j)}) == "start_spec: missing_id");
  otpp::child_spec no_start;
  no_start.id = "x";
  CHECK(detail({no_start}) == "start_spec: missing_start");
  CHECK(detail({spec("a", f.j).with_shutdown(otpp::shutdown_policy::timeout(-1ms))}) == "start_spec: invalid_shutdown: -1");
  CHECK(detail({spec("a", f.j).with_significant()}).find("bad_combination") != std::string::npos);
  CHECK(detail({spec("a", f.j).with_restart(otpp::restart_type::transient).with_significant()}) ==
        "start_spec: bad_combination: a: significant with auto_shutdown never");
  CHECK(detail({}, {.max_restarts = -1}) == "supervisor_data: invalid_intensity: -1");
  CHECK(detail({}, {.max_seconds = 0ms}) == "supervisor_data: invalid_period: 0");
  CHECK(f.j->get().empty());  // nothing started
}

TEST_CASE("a child failing to start rolls back the ones started", "[supervisor]") {
  fixture f;
  auto fail = std::make_shared<std::atomic<int>>(1);
  auto r = f.start({spec("a", f.j), spec("b", f.j), otpp::child<worker>("c", f.j, true, fail).with_id("c"), spec("d", f.j)});
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::shutdown);
  CHECK(r.error().detail() == "failed_to_start_child: c: error(cannot start)");
  CHECK(f.j->get() == std::vector<std::string>{"start a", "start b", "fail c", "stop b shutdown", "stop a shutdown"});
}

TEST_CASE("one_for_one restarts only the child that died", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("a", f.j), spec("b", f.j), spec("c", f.j)}).value();
  auto a = child_pid(sup, "a"), b = child_pid(sup, "b"), c = child_pid(sup, "c");
  kill(b);
  auto b2 = otpp::testing::await_child(sup, "b", b);
  REQUIRE(b2);
  CHECK(child_pid(sup, "a") == a);
  CHECK(child_pid(sup, "c") == c);
  CHECK(otpp::call(otpp::server_cast<worker>(b2).value(), worker::ping{}) == 1);
}

TEST_CASE("restarts and giving up are telemetry events", "[supervisor][telemetry]") {
  otpp::testing::telemetry_capture cap{otpp::supervisor_events::child_restarting, otpp::supervisor_events::max_restarts};
  fixture f;
  otpp_test::log_capture logs;
  auto sup = f.start({spec("a", f.j)}, {.max_restarts = 1}).value();
  otpp::exit_watch w{sup};
  auto a = child_pid(sup, "a");
  kill(a);
  kill(otpp::testing::await_child(sup, "a", a));
  REQUIRE(w.wait(5s));
  auto evs = cap.events();
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].name == otpp::supervisor_events::child_restarting.name());
  CHECK(evs[0].metadata.at("child") == otpp::testing::captured_value{std::string{"a"}});
  CHECK(evs[0].metadata.at("reason") == otpp::testing::captured_value{std::string{"killed"}});
  CHECK(evs[0].metadata.at("supervisor") == otpp::testing::captured_value{sup.pid()});
  CHECK(evs[1].name == otpp::supervisor_events::max_restarts.name());
}

TEST_CASE("one_for_all restarts every child, in order, after stopping the rest newest first", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("a", f.j), spec("b", f.j), spec("c", f.j)}, {.strategy = otpp::strategy::one_for_all}).value();
  auto a = child_pid(sup, "a");
  kill(child_pid(sup, "b"));
  REQUIRE(otpp::testing::await_child(sup, "a", a));
  (void)otpp::which_children(sup);
  CHECK(f.j->get() == std::vector<std::string>{"start a", "start b", "start c", "stop c shutdown", "stop a shutdown",
                                               "start a", "start b", "start c"});
}

TEST_CASE("one_for_all also starts a child stopped by terminate_child; temporary siblings are dropped", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("a", f.j), spec("b", f.j), spec("t", f.j).with_restart(otpp::restart_type::temporary),
                      spec("c", f.j)},
                     {.strategy = otpp::strategy::one_for_all})
                 .value();
  REQUIRE(otpp::terminate_child(sup, "c"));
  CHECK_FALSE(child_pid(sup, "c"));
  auto a = child_pid(sup, "a");
  kill(child_pid(sup, "b"));
  REQUIRE(otpp::testing::await_child(sup, "a", a));
  CHECK(child_pid(sup, "c"));
  auto n = otpp::count_children(sup).value();
  CHECK(n.specs == 3);  // t went with the group restart
  CHECK(n.active == 3);
}

TEST_CASE("rest_for_one restarts the child and the ones started after it", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("a", f.j), spec("b", f.j), spec("c", f.j)}, {.strategy = otpp::strategy::rest_for_one}).value();
  auto a = child_pid(sup, "a"), c = child_pid(sup, "c");
  kill(child_pid(sup, "b"));
  REQUIRE(otpp::testing::await_child(sup, "c", c));
  CHECK(child_pid(sup, "a") == a);
  CHECK(f.j->get() == std::vector<std::string>{"start a", "start b", "start c", "stop c shutdown", "start b", "start c"});
}

TEST_CASE("restart types decide by exit reason", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("perm", f.j, false), spec("trans", f.j, false).with_restart(otpp::restart_type::transient),
                      spec("temp", f.j, false).with_restart(otpp::restart_type::temporary)})
                 .value();
  // A permanent child is restarted even after a normal exit.
  auto perm = child_pid(sup, "perm");
  otpp::stop(perm);
  REQUIRE(otpp::testing::await_child(sup, "perm", perm));
  // A transient child: not after shutdown, but after a crash.
  auto trans = child_pid(sup, "trans");
  {
    otpp::exit_watch w{trans};
    otpp::exit(trans, otpp::exit_reason::shutdown());
    REQUIRE(w.wait(5s));
  }
  CHECK(await_counts(sup, [](const otpp::child_counts& n) { return n.active == 2; }));
  CHECK(otpp::count_children(sup).value().specs == 3);  // kept, not running
  // A temporary child is never restarted and its spec goes.
  kill(child_pid(sup, "temp"));
  CHECK(await_counts(sup, [](const otpp::child_counts& n) { return n.specs == 2; }));
  CHECK(otpp::count_children(sup).value().active == 1);
  CHECK_FALSE(child_pid(sup, "temp"));
}

TEST_CASE("a transient child that crashes is restarted", "[supervisor]") {
  fixture f;
  otpp_test::log_capture logs;
  auto sup = f.start({spec("t", f.j).with_restart(otpp::restart_type::transient)}).value();
  auto t = child_pid(sup, "t");
  (void)otpp::try_call(otpp::server_cast<worker>(t).value(), worker::crash{});
  CHECK(otpp::testing::await_child(sup, "t", t));
}

TEST_CASE("restart intensity: max 0 gives up at the first crash", "[supervisor][intensity]") {
  fixture f;
  otpp_test::log_capture logs;
  auto sup = f.start({spec("a", f.j), spec("b", f.j)}, {.max_restarts = 0}).value();
  otpp::exit_watch w{sup};
  kill(child_pid(sup, "a"));
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->kind() == otpp::exit_kind::shutdown);
  CHECK(f.j->has("stop b shutdown"));
  CHECK(logs.contains("reached max restart intensity"));
}

TEST_CASE("restart intensity: exactly max restarts survive, one more inside the window does not", "[supervisor][intensity]") {
  fixture f;
  otpp_test::log_capture logs;
  auto sup = f.start({spec("a", f.j)}, {.max_restarts = 3, .max_seconds = 5s}).value();
  otpp::exit_watch w{sup};
  for (int i = 0; i < 3; ++i) {
    auto a = child_pid(sup, "a");
    kill(a);
    REQUIRE(otpp::testing::await_child(sup, "a", a));
    f.clock->advance(1s);
  }
  CHECK(sup.alive());
  kill(child_pid(sup, "a"));  // the 4th within 5 s
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->kind() == otpp::exit_kind::shutdown);
}

TEST_CASE("restart intensity: crashes spaced beyond the window never add up", "[supervisor][intensity]") {
  fixture f;
  auto sup = f.start({spec("a", f.j)}, {.max_restarts = 1, .max_seconds = 5s}).value();
  for (int i = 0; i < 6; ++i) {
    auto a = child_pid(sup, "a");
    kill(a);
    REQUIRE(otpp::testing::await_child(sup, "a", a));
    f.clock->advance(5s);
  }
  CHECK(sup.alive());
}

TEST_CASE("a restart that keeps failing escalates", "[supervisor][intensity]") {
  fixture f;
  otpp_test::log_capture logs;
  auto fail = std::make_shared<std::atomic<int>>(0);
  auto sup = f.start({otpp::child<worker>("a", f.j, true, fail).with_id("a")}, {.max_restarts = 3}).value();
  otpp::exit_watch w{sup};
  fail->store(1000);  // every restart from now on fails
  kill(child_pid(sup, "a"));
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->kind() == otpp::exit_kind::shutdown);
  CHECK(fail->load() == 1000 - 3);  // the crash counted once, each failed attempt once more
}

TEST_CASE("the child API answers as OTP's", "[supervisor][api]") {
  fixture f;
  auto sup = f.start({spec("a", f.j)}).value();
  auto b = otpp::start_child(sup, spec("b", f.j));
  REQUIRE(b);
  CHECK(b->alive());
  auto again = otpp::start_child(sup, spec("b", f.j));
  REQUIRE_FALSE(again);
  CHECK(again.error().kind() == otpp::exit_kind::already_started);
  CHECK(otpp::holder(again.error()) == *b);

  auto kids = otpp::which_children(sup).value();
  REQUIRE(kids.size() == 2);
  CHECK(kids[0].id == "b");  // newest first
  CHECK(kids[1].id == "a");

  CHECK(otpp::terminate_child(sup, "b"));
  CHECK_FALSE(b->alive());
  CHECK(otpp::terminate_child(sup, "b"));  // already stopped: still ok
  CHECK(otpp::terminate_child(sup, "zz").error() == otpp::exit_reason::error("not_found"));
  CHECK(otpp::start_child(sup, spec("b", f.j)).error() == otpp::exit_reason::error("already_present"));
  auto counts = otpp::count_children(sup).value();
  CHECK(counts.specs == 2);
  CHECK(counts.active == 1);
  CHECK(counts.workers == 2);

  CHECK(otpp::restart_child(sup, "a").error() == otpp::exit_reason::error("running"));
  CHECK(otpp::delete_child(sup, "a").error() == otpp::exit_reason::error("running"));
  auto b2 = otpp::restart_child(sup, "b");
  REQUIRE(b2);
  CHECK(b2->alive());
  CHECK(otpp::terminate_child(sup, "b"));
  CHECK(otpp::delete_child(sup, "b"));
  CHECK(otpp::delete_child(sup, "b").error() == otpp::exit_reason::error("not_found"));
  CHECK(otpp::restart_child(sup, "b").error() == otpp::exit_reason::error("not_found"));

  auto fail = std::make_shared<std::atomic<int>>(1);
  auto bad = otpp::start_child(sup, otpp::child<worker>("c", f.j, true, fail).with_id("c"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == otpp::exit_reason::error("cannot start"));
  CHECK(otpp::count_children(sup).value().specs == 1);  // a failed start keeps no spec

  auto temp = otpp::start_child(sup, spec("t", f.j).with_restart(otpp::restart_type::temporary));
  REQUIRE(temp);
  CHECK(otpp::terminate_child(sup, "t"));
  CHECK(otpp::count_children(sup).value().specs == 1);  // a temporary spec goes with it
}

TEST_CASE("calls to a dead supervisor fail with noproc", "[supervisor][api]") {
  fixture f;
  auto sup = f.start({}).value();
  otpp::stop(sup);
  CHECK(otpp::which_children(sup).error().kind() == otpp::exit_kind::noproc);
  CHECK(otpp::start_child(sup, spec("a", f.j)).error().kind() == otpp::exit_kind::noproc);
}

TEST_CASE("auto_shutdown any_significant: a significant child's exit stops the supervisor", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("a", f.j), spec("s", f.j).with_restart(otpp::restart_type::transient).with_significant()},
                     {.auto_shutdown = otpp::auto_shutdown::any_significant})
                 .value();
  otpp::exit_watch w{sup};
  otpp::stop(child_pid(sup, "s"));  // normal: transient, for good
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->kind() == otpp::exit_kind::shutdown);
  CHECK(f.j->has("stop a shutdown"));
}

TEST_CASE("auto_shutdown all_significant waits for the last one; terminate_child never triggers it", "[supervisor]") {
  fixture f;
  auto sig = [&](const std::string& id) {
    return spec(id, f.j).with_restart(otpp::restart_type::temporary).with_significant();
  };
  auto sup = f.start({sig("x"), sig("y"), sig("z")}, {.auto_shutdown = otpp::auto_shutdown::all_significant}).value();
  otpp::exit_watch w{sup};
  CHECK(otpp::terminate_child(sup, "z"));
  otpp::stop(child_pid(sup, "x"));
  CHECK(await_counts(sup, [](const otpp::child_counts& n) { return n.specs == 1; }));  // x gone, y left
  CHECK(sup.alive());
  otpp::stop(child_pid(sup, "y"));
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->kind() == otpp::exit_kind::shutdown);
}

TEST_CASE("named children come back under their name", "[supervisor]") {
  fixture f;
  auto sup = f.start({otpp::child<worker>(otpp::name("sup_test_named"), std::string{"n"}, f.j, true)}).value();
  auto first = otpp::whereis("sup_test_named");
  REQUIRE(first);
  CHECK(child_pid(sup, "sup_test_named") == first);
  kill(first);
  auto second = otpp::testing::await_child(sup, "sup_test_named", first);
  REQUIRE(second);
  CHECK(otpp::whereis("sup_test_named") == second);
}

TEST_CASE("nested supervisors: an inner one that gives up is restarted by the outer", "[supervisor]") {
  fixture f;
  otpp_test::log_capture logs;
  std::vector<otpp::child_spec> inner_kids{spec("leaf", f.j)};
  auto sup = f.start({otpp::child<otpp::supervisor>(inner_kids, otpp::supervisor_flags{.max_restarts = 0}).with_id("inner")})
                 .value();
  CHECK(otpp::count_children(sup).value().supervisors == 1);
  auto inner = child_pid(sup, "inner");
  auto inner_sup = otpp::server_cast<otpp::supervisor>(inner).value();
  otpp::exit_watch w{inner};
  kill(child_pid(inner_sup, "leaf"));
  REQUIRE(w.wait(5s));  // the inner one reached its limit
  auto inner2 = otpp::testing::await_child(sup, "inner", inner);
  REQUIRE(inner2);
  CHECK(child_pid(otpp::server_cast<otpp::supervisor>(inner2).value(), "leaf").alive());
}

TEST_CASE("shutdown policies: timeout lets terminate run, brutal_kill does not", "[supervisor]") {
  fixture f;
  auto sup = f.start({spec("gentle", f.j).with_shutdown(otpp::shutdown_policy::timeout(5s)),
                      spec("brutal", f.j).with_shutdown(otpp::shutdown_policy::brutal_kill())})
                 .value();
  CHECK(otpp::terminate_child(sup, "brutal"));
  CHECK(otpp::terminate_child(sup, "gentle"));
  CHECK(f.j->has("stop gentle shutdown"));
  for (auto& e : f.j->get()) CHECK(e.rfind("stop brutal", 0) == std::string::npos);
}

TEST_CASE("opt-in backoff delays restarts exponentially", "[supervisor][backoff]") {
  fixture f;
  auto sup = f.start({spec("a", f.j).with_backoff({.initial = 100ms, .max = 400ms})}, {.max_restarts = 100}).value();
  auto a = child_pid(sup, "a");
  kill(a);
  f.clock->settle();  // the supervisor has seen the exit and set its delay
  CHECK_FALSE(child_pid(sup, "a"));  // waiting
  f.clock->advance(99ms);
  CHECK_FALSE(child_pid(sup, "a"));
  f.clock->advance(1ms);
  auto a2 = child_pid(sup, "a");
  REQUIRE(a2);
  kill(a2);  // again right away: 200 ms this time
  f.clock->settle();
  f.clock->advance(199ms);
  CHECK_FALSE(child_pid(sup, "a"));
  f.clock->advance(1ms);
  CHECK(child_pid(sup, "a"));
}

TEST_CASE("the init-callback form runs inside the supervisor; nullopt is ignore; get_childspec") {
  fixture f;
  std::atomic<bool> ran_inside{false};
  auto sup = f.rt.start<otpp::supervisor>(otpp::supervisor::init_fn{[&]() -> std::optional<otpp::supervisor_spec> {
    ran_inside = static_cast<bool>(otpp::self());
    return otpp::supervisor_spec{{otpp::child<worker>(otpp::name("cb_w1"), "w1", f.j)},
                                 {.strategy = otpp::strategy::one_for_one, .max_restarts = 0}};
  }}).value();
  CHECK(ran_inside.load());
  auto w = otpp::whereis("cb_w1");
  REQUIRE(w);
  auto spec = otpp::get_childspec(sup, "cb_w1");
  REQUIRE(spec);
  CHECK(spec->id == "cb_w1");
  CHECK(otpp::get_childspec(sup, "nobody").error() == otpp::exit_reason::error("not_found"));
  // The callback's flags are the ones in force: max_restarts 0 ends it at the first crash.
  otpp_test::log_capture logs;
  otpp::exit_watch ws{sup};
  otpp::exit(w, otpp::exit_reason::error("crash"));
  CHECK(ws.wait(10s)->kind() == otpp::exit_kind::shutdown);

  auto ignored = f.rt.start<otpp::supervisor>(otpp::supervisor::init_fn{[] { return std::optional<otpp::supervisor_spec>{}; }});
  REQUIRE_FALSE(ignored);
  CHECK(ignored.error().kind() == otpp::exit_kind::ignore);
}
