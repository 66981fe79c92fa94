// otpp::task<R>: Elixir's Task (async, await, await_many, yield, shutdown),
// links with the caller, and awaiting from coroutine handlers.

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/task.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

class backend : public otpp::gen_server<backend> {
 public:
  struct get {
    int k;
  };
  // Never answered: a caller of it waits until it gives up or is stopped.
  struct hold {
    using reply_type = int;
  };
  int handle_call(get g) { return g.k * 10; }
  void handle_call(hold, otpp::reply_to<int> r) { held_.push_back(std::move(r)); }

 private:
  std::vector<otpp::reply_to<int>> held_;
};

// Starts tasks from inside a process, as Elixir code does.
class owner : public otpp::gen_server<owner> {
 public:
  struct fan {
    otpp::server<backend> b;
  };
  struct start_crashing {};
  struct ping {};
  explicit owner(bool trap) {
    if (trap) this->trap_exit();
  }
  // Three tasks at once, one of them a coroutine that calls a server.
  otpp::async<int> handle_call(fan f) {
    auto a = otpp::task_async([b = f.b]() -> otpp::async<int> { co_return co_await otpp::async_call(b, backend::get{1}); });
    auto c = otpp::task_async([] { return 2; });
    auto d = otpp::task_async([] {});
    const int x = co_await a.async_await();
    const int y = co_await c.async_await();
    co_await d.async_await();
    co_return x + y;
  }
  int handle_call(start_crashing) {
    kept_.push_back(otpp::task_async([]() -> int { throw std::runtime_error("task broke"); }));
    return 0;
  }
  int handle_call(ping) { return 1; }
  // A wait kept as an async<int> before it is awaited, after one dropped
  // unawaited (which leaves the result to the next).
  struct kept_wait {};
  otpp::async<int> handle_call(kept_wait) {
    auto t = otpp::task_async([] { return 7; });
    { auto dropped = t.async_await(); }
    otpp::async<int> w = t.async_await();
    co_return co_await std::move(w) + 1;
  }
  // One task after another, each awaited before the next starts.
  struct in_turn {
    int n;
  };
  otpp::async<long> handle_call(in_turn r) {
    long sum = 0;
    for (int i = 0; i < r.n; ++i) sum += co_await otpp::task_async([i] { return i; }).async_await();
    co_return sum;
  }
  void handle_info(const otpp::exit_signal& e) { exits_.push_back(e.reason.to_string()); }
  struct exits {};
  std::vector<std::string> handle_call(exits) { return exits_; }

 private:
  std::vector<otpp::task<int>> kept_;
  std::vector<std::string> exits_;
};

}  // namespace

TEST_CASE("task_async runs the function in a process; await gives its result") {
  otpp::runtime rt{{.workers = 2}};
  auto t = otpp::task_async([] { return std::string{"done"}; });
  CHECK(t.pid());
  CHECK(otpp::await(t) == "done");
  std::vector<otpp::task<int>> many;
  for (int i = 0; i < 10; ++i) many.push_back(otpp::task_async([i] { return i * i; }));
  const auto all = otpp::await_many(many);
  REQUIRE(all.size() == 10u);
  for (int i = 0; i < 10; ++i) CHECK(all[i] == i * i);
}

TEST_CASE("a task that crashes fails await with its reason") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::log_capture quiet;
  auto t = otpp::task_async([]() -> int { throw std::runtime_error("task broke"); });
  try {
    (void)otpp::await(t);
    FAIL("await should have thrown");
  } catch (const otpp::exit_error& e) {
    CHECK(std::string{e.what()}.find("otpp::await(task <") != std::string::npos);
    CHECK(std::string{e.what()}.find("task broke") != std::string::npos);
  }
}

TEST_CASE("await past its timeout kills the task and throws timeout") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::gate g;
  otpp_test::log_capture quiet;
  auto t = otpp::task_async([&g] {
    g.wait();
    return 1;
  });
  otpp::exit_watch w{t.pid()};
  try {
    (void)otpp::await(t, 20ms);
    FAIL("await should have timed out");
  } catch (const otpp::exit_error& e) {
    CHECK(e.reason() == otpp::exit_reason::timeout());
  }
  g.release();
  CHECK(w.wait(5s).value() == otpp::exit_reason::killed());
}

TEST_CASE("yield waits without giving up; shutdown stops a task that has not finished") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::gate g;
  auto t = otpp::task_async([&g] {
    g.wait();
    return 5;
  });
  CHECK_FALSE(otpp::yield(t, 10ms).has_value());
  CHECK(t.pid().alive());
  g.release();
  auto r = otpp::yield(t, 5s);
  REQUIRE(r.has_value());
  CHECK(r->value() == 5);

  auto b = rt.start<backend>().value();
  auto idle = otpp::task_async([b]() -> otpp::async<int> {
    co_return co_await otpp::async_call(b, backend::hold{}, otpp::infinity);  // waits holding no thread
  });
  CHECK_FALSE(otpp::shutdown(idle, 1s).has_value());
  CHECK_FALSE(idle.pid().alive());
}

TEST_CASE("tasks started in a coroutine handler are awaited without holding a worker") {
  otpp::runtime rt{{.workers = 2}};
  auto b = rt.start<backend>().value();
  auto o = rt.start<owner>(false).value();
  CHECK(otpp::call(o, owner::fan{b}) == 12);
  CHECK(rt.thread_count() == rt.workers());
}

TEST_CASE("tasks awaited one after another leave no process and no link behind") {
  otpp::runtime rt{{.workers = 2}};
  auto o = rt.start<owner>(false).value();
  const std::size_t before = rt.process_count();
  CHECK(otpp::call(o, owner::in_turn{2000}) == 1999L * 2000 / 2);
  // The last task may still be on its way out when the answer comes.
  CHECK(otpp_test::eventually([&] {
    auto info = otpp::sys::info(o);
    return info && info->links.empty();  // each finished task's exit signal ended its link
  }));
  CHECK(otpp_test::eventually([&] { return rt.process_count() == before; }));
  CHECK(otpp::call(o, owner::ping{}) == 1);  // the owner took no exit from its tasks
  CHECK(otpp::call(o, owner::kept_wait{}) == 8);
}

TEST_CASE("a crashing task takes its linked owner down, unless the owner traps exits") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::log_capture quiet;
  auto o = rt.start<owner>(false).value();
  otpp::exit_watch w{o};
  (void)otpp::call(o, owner::start_crashing{});
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->to_string().find("task broke") != std::string::npos);

  auto trapping = rt.start<owner>(true).value();
  (void)otpp::call(trapping, owner::start_crashing{});
  std::vector<std::string> exits;
  const auto until = std::chrono::steady_clock::now() + 10s;  // each call flushes what the owner was told
  while (exits.empty() && std::chrono::steady_clock::now() < until) exits = otpp::call(trapping, owner::exits{});
  REQUIRE(exits.size() == 1u);
  CHECK(exits[0].find("task broke") != std::string::npos);
}

TEST_CASE("then: a call's continuation runs in a process of the callee's runtime, as a task") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::log_capture quiet;  // the failing continuation's crash report
  auto b = rt.start<backend>().value();
  const auto here = std::this_thread::get_id();
  auto doubled = otpp::async_call(b, backend::get{4}).then([here](int v) {
    CHECK(std::this_thread::get_id() != here);  // never on the calling thread
    CHECK(otpp::self());                        // but in a process
    return v * 2;
  });
  CHECK(otpp::await(doubled) == 80);

  // async_try_call's continuation sees the failure as a value...
  auto seen = otpp::async_try_call(b, backend::hold{}, 30ms).then([](otpp::result<int> r) {
    return r ? std::string{"reply"} : r.error().to_string();
  });
  CHECK(otpp::await(seen) == "timeout");
  // ...async_call's fails the continuation with the call's exit reason.
  auto failed = otpp::async_call(b, backend::hold{}, 30ms).then([](int v) { return v; });
  try {
    (void)otpp::await(failed);
    FAIL("the call timed out: its continuation should have failed");
  } catch (const otpp::exit_error& e) {
    CHECK(e.reason() == otpp::exit_reason::timeout());
  }
  // Nothing to call: the continuation still runs, with noproc.
  auto none = otpp::async_try_call(otpp::server<backend>{}, backend::get{1}).then([](otpp::result<int> r) {
    return r.error() == otpp::exit_reason::noproc();
  });
  CHECK(otpp::await(none));
}

namespace {
// A function whose `throw_at`-th move throws (0: none), counting its moves:
// a task's start moves it several times, and any of them may fail.
struct fragile {
  std::shared_ptr<int> moves;
  int throw_at;
  fragile(std::shared_ptr<int> m, int t) : moves{std::move(m)}, throw_at{t} {}
  fragile(fragile&& o) : moves{o.moves}, throw_at{o.throw_at} {  // NOLINT: may throw, on purpose
    if (++*moves == throw_at) throw std::runtime_error("move failed");
  }
  fragile(const fragile&) = delete;
  fragile& operator=(const fragile&) = delete;
  fragile& operator=(fragile&&) = delete;
  ~fragile() = default;
  int operator()() const { return 7; }
};

class fragile_starter : public otpp::gen_server<fragile_starter> {
 public:
  struct run {};
  struct outcome {
    int moves = 0;    // what a start takes
    int refused = 0;  // starts that threw, one per failing move
    int started = 0;  // tasks that ran
  };
  otpp::async<outcome> handle_call(run) {
    outcome o;
    auto m = std::make_shared<int>(0);
    {
      auto t = otpp::task_async(fragile{m, 0});
      o.moves = *m;
      if (co_await t.async_await() == 7) ++o.started;
    }
    for (int k = 1; k <= o.moves; ++k) {
      *m = 0;
      try {
        auto t = otpp::task_async(fragile{m, k});
        if (co_await t.async_await() == 7) ++o.started;
      } catch (const std::exception&) {
        ++o.refused;
      }
    }
    co_return o;
  }
};
}  // namespace

// Each reference a start hands out (the task's result slot, the child's
// link, its handle) is given back whichever step fails: the address build's
// leak check finds any that is not.
TEST_CASE("a task whose start fails at any step leaves nothing behind, and its owner linked to nothing") {
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<fragile_starter>().value();
  const auto o = otpp::call(s, fragile_starter::run{});
  REQUIRE(o.moves >= 2);
  CHECK(o.started == 1);
  CHECK(o.refused == o.moves);
  auto info = otpp::sys::info(s);
  REQUIRE(info);
  CHECK(info->links.empty());  // the finished task's link is gone, the failed ones were never left
  otpp::stop(s);

  // A stopped runtime starts nothing: the start fails before any server exists.
  rt.shutdown();
  CHECK_THROWS_AS(otpp::task_async(rt, [] { return 1; }), otpp::exit_error);
}
