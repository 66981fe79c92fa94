// otpp::task_supervisor: Elixir's Task.Supervisor (start_child, async,
// async_nolink, children, terminate_child, as a child spec), following
// the cases of Elixir's own Task.Supervisor tests where they apply.

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/supervisor.hpp>
#include <otpp/task_supervisor.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

// Starts tasks under a supervisor from inside a process, as Elixir code does.
class client : public otpp::gen_server<client> {
 public:
  struct async_crash {};
  struct async_idle {
    otpp::server<otpp_test::holder> h;
  };
  struct nolink_crash {};
  struct ping {};
  client(otpp::task_supervisor sup, bool trap) : sup_{std::move(sup)} {
    if (trap) this->trap_exit();
  }
  otpp::pid handle_call(async_crash) {
    kept_.push_back(sup_.async([]() -> int { throw std::runtime_error("supervised task broke"); }));
    return kept_.back().pid();
  }
  otpp::pid handle_call(async_idle a) {
    kept_.push_back(sup_.async([h = a.h]() -> otpp::async<int> {
      co_await otpp::async_call(h, otpp_test::holder::hold{}, otpp::infinity);  // waits holding no thread
      co_return 0;
    }));
    return kept_.back().pid();
  }
  // The crash arrives as await's exit_error; the client lives on.
  std::string handle_call(nolink_crash) {
    auto t = sup_.async_nolink([]() -> int { throw std::runtime_error("nolink task broke"); });
    try {
      (void)otpp::await(t);
      return "no crash";
    } catch (const otpp::exit_error& e) {
      return e.reason().to_string();
    }
  }
  int handle_call(ping) { return 1; }
  void handle_info(const otpp::exit_signal& e) { exits_.push_back(e.reason.to_string()); }
  struct exits {};
  std::vector<std::string> handle_call(exits) { return exits_; }

 private:
  otpp::task_supervisor sup_;
  std::vector<otpp::task<int>> kept_;
  std::vector<std::string> exits_;
};

// Asks the supervisor (each call a flush of what it has been told) until it
// has `expected` children, for up to 10 s.
std::vector<otpp::pid> children_once_settled(const otpp::task_supervisor& sup, std::size_t expected) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<otpp::pid> c = sup.children().value();
  while (c.size() != expected && std::chrono::steady_clock::now() < until) c = sup.children().value();
  return c;
}

}  // namespace

TEST_CASE("task_supervisor: async runs the task as a child and await gives its result") {
  otpp::runtime rt{{.workers = 2}};
  auto sup = otpp::task_supervisor::start(rt).value();
  otpp_test::gate g;
  auto t = sup.async([&g] {
    g.wait();
    return std::string{"priced"};
  });
  auto kids = sup.children().value();
  REQUIRE(kids.size() == 1u);
  CHECK(kids[0] == t.pid());
  g.release();
  CHECK(otpp::await(t) == "priced");
  CHECK(children_once_settled(sup, 0).empty());

  auto moved_only = sup.async([p = std::make_unique<int>(7)] { return *p * 6; });
  CHECK(otpp::await(moved_only) == 42);
}

TEST_CASE("task_supervisor: a crashing async task takes its linked caller down") {
  otpp_test::log_capture quiet;  // outlives the runtime: tasks log their deaths until it stops
  otpp::runtime rt{{.workers = 2}};
  auto sup = otpp::task_supervisor::start(rt).value();
  auto c = rt.start<client>(sup, false).value();
  otpp::exit_watch w{c};
  (void)otpp::call(c, client::async_crash{});
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->to_string().find("supervised task broke") != std::string::npos);
  CHECK(sup.pid().alive());  // the supervisor does not restart or die: the task was temporary

  auto trapping = rt.start<client>(sup, true).value();
  (void)otpp::call(trapping, client::async_crash{});
  std::vector<std::string> exits;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (exits.empty() && std::chrono::steady_clock::now() < until) exits = otpp::call(trapping, client::exits{});
  REQUIRE(exits.size() == 1u);
  CHECK(exits[0].find("supervised task broke") != std::string::npos);
}

TEST_CASE("task_supervisor: the caller's death takes its async tasks with it") {
  otpp_test::log_capture quiet;  // both deaths are reported; they are the point
  otpp::runtime rt{{.workers = 2}};
  auto sup = otpp::task_supervisor::start(rt).value();
  auto c = rt.start<client>(sup, false).value();
  auto h = rt.start<otpp_test::holder>().value();
  otpp::pid task = otpp::call(c, client::async_idle{h});
  otpp::exit_watch w{task};
  otpp::exit(c, otpp::exit_reason::error("owner gone"));
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->to_string().find("owner gone") != std::string::npos);
}

TEST_CASE("task_supervisor: async_nolink reports a crash as an exit reason and the caller lives on") {
  otpp_test::log_capture quiet;  // outlives the runtime: tasks log their deaths until it stops
  otpp::runtime rt{{.workers = 2}};
  auto sup = otpp::task_supervisor::start(rt).value();
  auto c = rt.start<client>(sup, false).value();
  CHECK(otpp::call(c, client::nolink_crash{}).find("nolink task broke") != std::string::npos);
  CHECK(otpp::call(c, client::ping{}) == 1);

  auto t = sup.async_nolink([]() -> int { throw std::runtime_error("seen by yield"); });
  auto r = otpp::yield(t, 5s);
  REQUIRE(r.has_value());
  REQUIRE_FALSE(r->has_value());
  CHECK(r->error().to_string().find("seen by yield") != std::string::npos);
}

TEST_CASE("task_supervisor: start_child runs fire-and-forget tasks; transient ones are restarted after a crash") {
  otpp_test::log_capture quiet;  // outlives the runtime: tasks log their deaths until it stops
  otpp::runtime rt{{.workers = 2}};
  auto sup = otpp::task_supervisor::start(rt).value();
  std::atomic<int> runs{0};
  otpp_test::gate g;
  auto p = sup.start_child([&runs, &g] {
    ++runs;
    g.wait();
  });
  REQUIRE(p);
  CHECK(children_once_settled(sup, 1).size() == 1u);
  otpp::exit_watch w{*p};
  g.release();
  CHECK(w.wait(5s).value() == otpp::exit_reason::normal());
  CHECK(runs == 1);
  CHECK(children_once_settled(sup, 0).empty());

  // Crashes twice, then succeeds: restarted each time (copies of the function).
  std::atomic<int> attempts{0};
  std::promise<void> third;
  auto flaky = sup.start_child(
      [&attempts, &third] {
        const int n = ++attempts;
        if (n < 3) throw std::runtime_error("flaky");
        if (n == 3) third.set_value();
      },
      {.restart = otpp::restart_type::transient});
  REQUIRE(flaky);
  REQUIRE(third.get_future().wait_for(10s) == std::future_status::ready);
  CHECK(children_once_settled(sup, 0).empty());  // it ended normally: not restarted again
  CHECK(attempts == 3);

  auto refused = sup.start_child([] {}, {.restart = otpp::restart_type::permanent});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().to_string().find("permanent") != std::string::npos);
}

TEST_CASE("task_supervisor: terminate_child stops a task; its awaiter hears why") {
  otpp::runtime rt{{.workers = 2}};
  auto sup = otpp::task_supervisor::start(rt).value();
  auto b = otpp::task_async([] { return 0; });  // not a child of sup
  auto h = rt.start<otpp_test::holder>().value();
  auto idle = sup.async_nolink([h]() -> otpp::async<int> {
    co_await otpp::async_call(h, otpp_test::holder::hold{}, otpp::infinity);  // waits holding no thread
    co_return 1;
  });
  CHECK(sup.terminate_child(idle.pid()));
  try {
    (void)otpp::await(idle, 5s);
    FAIL("await should have thrown");
  } catch (const otpp::exit_error& e) {
    CHECK(e.reason() == otpp::exit_reason::shutdown());
  }
  auto again = sup.terminate_child(idle.pid());
  REQUIRE_FALSE(again);
  CHECK(again.error() == otpp::exit_reason::error("not_found"));
  CHECK_FALSE(sup.terminate_child(b.pid()));
  CHECK(otpp::await(b) == 0);
}

TEST_CASE("task_supervisor: max_children refuses a start; stopping the supervisor stops its tasks") {
  otpp::runtime rt{{.workers = 2}};
  auto sup = otpp::task_supervisor::start(rt, otpp::dynamic_supervisor_flags{.max_children = 1}).value();
  auto h = rt.start<otpp_test::holder>().value();
  auto first = sup.async_nolink([h]() -> otpp::async<int> {
    co_await otpp::async_call(h, otpp_test::holder::hold{}, otpp::infinity);
    co_return 1;
  });
  try {
    auto second = sup.async_nolink([] { return 2; });
    FAIL("a second child is past max_children");
  } catch (const otpp::exit_error& e) {
    CHECK(e.reason() == otpp::exit_reason::error("max_children"));
    CHECK(std::string{e.what()}.find("otpp::task_supervisor::async_nolink") != std::string::npos);
  }
  otpp::stop(sup.server_handle());
  try {
    (void)otpp::await(first, 5s);
    FAIL("await should have thrown");
  } catch (const otpp::exit_error& e) {
    CHECK(e.reason() == otpp::exit_reason::shutdown());
  }
  try {
    auto late = sup.async([] { return 3; });
    FAIL("the supervisor is gone");
  } catch (const otpp::exit_error& e) {
    CHECK(e.reason() == otpp::exit_reason::noproc());
  }
}

TEST_CASE("task_supervisor: as a named child of a supervision tree") {
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::child_spec> children;
  children.push_back(otpp::task_supervisor::child_spec(otpp::name("ts_tasks")));
  auto top = rt.start<otpp::supervisor>(std::move(children)).value();
  auto found = otpp::whereis<otpp::dynamic_supervisor>("ts_tasks");
  REQUIRE(found);
  otpp::task_supervisor sup{found};
  auto t = sup.async([] { return 9; });
  CHECK(otpp::await(t) == 9);
  otpp::stop(top);
}

TEST_CASE("task_supervisor: async_stream runs each item as a child; nolink streams give crashes as outcomes") {
  otpp_test::log_capture quiet;  // outlives the runtime: tasks log their deaths until it stops
  otpp::runtime rt{{.workers = 2}};
  auto sup = otpp::task_supervisor::start(rt).value();
  int sum = 0;
  for (auto& r : sup.async_stream(std::vector<int>{1, 2, 3, 4}, [](int x) { return x * x; }, {.max_concurrency = 2}))
    sum += r.value();
  CHECK(sum == 30);

  std::vector<std::string> seen;
  for (auto& r : sup.async_stream_nolink(std::vector<int>{1, 2, 3}, [](int x) -> int {
         if (x == 2) throw std::runtime_error("two broke");
         return x;
       }))
    seen.push_back(r ? std::to_string(*r) : r.error().to_string());
  REQUIRE(seen.size() == 3u);
  CHECK(seen[0] == "1");
  CHECK(seen[1].find("two broke") != std::string::npos);
  CHECK(seen[2] == "3");
  CHECK(children_once_settled(sup, 0).empty());
}
