// otpp::agent<T>: Elixir's Agent (get, update, get_and_update, cast, stop),
// its failure cases, supervision, and use from coroutine handlers.

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <otpp/agent.hpp>
#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

TEST_CASE("an agent holds a value: get, update, get_and_update, cast, stop") {
  otpp::runtime rt{{.workers = 2}};
  otpp::agent<std::vector<int>> a;
  {
    // start_link from a plain thread is start: a thread is never linked.
    a = otpp::agent<std::vector<int>>::start_link([] { return std::vector<int>{1, 2}; }).value();
  }
  CHECK(a.get([](const std::vector<int>& v) { return v.size(); }) == 2u);
  a.update([](std::vector<int> v) {
    v.push_back(3);
    return v;
  });
  CHECK(a.get_and_update([](const std::vector<int>& v) { return std::pair{v.front(), std::vector<int>(v.begin() + 1, v.end())}; }) == 1);
  a.cast([](std::vector<int> v) {
    v.push_back(4);
    return v;
  });
  CHECK(a.get([](const std::vector<int>& v) { return v; }) == std::vector<int>{2, 3, 4});  // the cast came first
  a.stop();
  CHECK_FALSE(a.pid().alive());
  CHECK_THROWS_AS(a.get([](const std::vector<int>& v) { return v.size(); }), otpp::exit_error);
}

TEST_CASE("update and cast also take a function that changes the value in place; get_and_update takes a tuple") {
  otpp::runtime rt{{.workers = 2}};
  auto a = otpp::agent<std::vector<int>>::start(rt, [] { return std::vector<int>{1}; }).value();
  a.update([](std::vector<int>& v) { v.push_back(2); });
  a.cast([](auto& v) { v.push_back(3); });
  const auto* before = a.get([](const std::vector<int>& v) { return v.data(); });
  a.update([](std::vector<int>& v) { v.front() = 10; });
  // Changed where it lies: the in-place form neither moves nor copies the value.
  CHECK(a.get([](const std::vector<int>& v) { return v.data(); }) == before);
  CHECK(a.get_and_update([](const std::vector<int>& v) { return std::tuple{v.size(), std::vector<int>{v.back()}}; }) == 3u);
  CHECK(a.get([](const std::vector<int>& v) { return v; }) == std::vector<int>{3});
  a.stop();
}

TEST_CASE("a function that throws crashes the agent; the caller gets the reason") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::log_capture quiet;
  auto a = otpp::agent<int>::start([] { return 1; }).value();
  try {
    a.update([](int) -> int { throw std::runtime_error("bad update"); });
    FAIL("update should have failed");
  } catch (const otpp::exit_error& e) {
    CHECK(std::string{e.what()}.find("bad update") != std::string::npos);
  }
  CHECK(otpp::await_exit(a.pid(), 5s).has_value());
}

TEST_CASE("a caller that times out leaves nothing dangling: the function was moved into the message") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::gate g;
  auto a = otpp::agent<std::string>::start([] { return std::string{"x"}; }).value();
  a.cast([&g](std::string s) {
    g.wait();  // the agent is busy until the test opens the gate
    return s;
  });
  {
    auto big = std::make_shared<std::string>("captured");
    CHECK_THROWS_AS(a.get([big](const std::string& s) { return s + *big; }, 20ms), otpp::exit_error);
  }  // the caller's copy is gone; the message keeps its own
  g.release();
  CHECK(a.get([](const std::string& s) { return s; }) == "x");
}

TEST_CASE("a named agent is found by name, and a supervised one is restarted with a fresh value") {
  otpp::runtime rt{{.workers = 2}};
  auto a = otpp::agent<int>::start([] { return 7; }, otpp::name("seven")).value();
  CHECK(otpp::whereis("seven") == a.pid());

  auto spec = otpp::agent<int>::child_spec([] { return 100; });
  spec.id = "numbers";
  auto sup = rt.start<otpp::supervisor>(std::vector<otpp::child_spec>{spec}, otpp::supervisor_flags{}).value();
  auto first = otpp::testing::await_child(sup, "numbers");
  otpp::agent<int> n{otpp::server_cast<otpp::agent<int>::server_type>(first).value()};
  n.update([](int v) { return v + 1; });
  CHECK(n.get([](int v) { return v; }) == 101);
  otpp::exit(first, otpp::exit_reason::kill());
  auto again = otpp::testing::await_child(sup, "numbers", first);
  REQUIRE(again);
  otpp::agent<int> n2{otpp::server_cast<otpp::agent<int>::server_type>(again).value()};
  CHECK(n2.get([](int v) { return v; }) == 100);
}

namespace {
class tally : public otpp::gen_server<tally> {
 public:
  struct add {
    int n;
  };
  explicit tally(otpp::agent<int> a) : a_{std::move(a)} {}
  otpp::async<int> handle_call(add x) {
    co_await a_.async_update([n = x.n](int v) { return v + n; });
    co_return co_await a_.async_get([](int v) { return v; });
  }

 private:
  otpp::agent<int> a_;
};
}  // namespace

TEST_CASE("from a coroutine handler, an agent is used without holding the worker") {
  otpp::runtime rt{{.workers = 2}};
  auto a = otpp::agent<int>::start(rt, [] { return 0; }).value();  // in this runtime, beside its user
  CHECK(a.pid().alive());
  auto t = rt.start<tally>(a).value();
  CHECK(otpp::call(t, tally::add{5}) == 5);
  CHECK(otpp::call(t, tally::add{2}) == 7);
}

TEST_CASE("stress: 4 threads x 20000 updates; per sender nothing lost, duplicated or reordered") {
  otpp::runtime rt{{.workers = 2}};
  using seen = std::map<int, std::vector<int>>;
  auto a = otpp::agent<seen>::start([] { return seen{}; }).value();
  constexpr int senders = 4, each = 20000;
  std::vector<std::thread> ts;
  for (int s = 0; s < senders; ++s) {
    ts.emplace_back([&a, s] {
      for (int i = 0; i < each; ++i) {
        auto f = [s, i](seen v) {
          v[s].push_back(i);
          return v;
        };
        if (i % 2) {
          a.cast(std::move(f));
        } else {
          a.update(std::move(f));
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  const seen v = a.get([](const seen& x) { return x; });
  REQUIRE(v.size() == static_cast<std::size_t>(senders));
  for (auto& [s, xs] : v) {
    REQUIRE(xs.size() == static_cast<std::size_t>(each));
    bool in_order = true;
    for (int i = 0; i < each; ++i) in_order = in_order && xs[i] == i;
    CHECK(in_order);
  }
}
