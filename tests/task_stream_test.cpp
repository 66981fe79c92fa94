// otpp::async_stream: Elixir's Task.async_stream (ordered and unordered,
// max_concurrency, per-task timeouts, crashes, laziness, early exit).

#include <algorithm>
#include <atomic>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/task_stream.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

// 0, 1, 2, ... without end, counting what the stream took.
struct endless {
  std::atomic<int>* pulled;
  struct iterator {
    int n = 0;
    std::atomic<int>* pulled = nullptr;
    int operator*() const {
      ++*pulled;
      return n;
    }
    iterator& operator++() {
      ++n;
      return *this;
    }
    bool operator!=(const iterator&) const { return true; }
    bool operator==(const iterator&) const { return false; }
  };
  iterator begin() const { return {0, pulled}; }
  iterator end() const { return {}; }
};

int crash_on_three(int x) {
  if (x == 3) throw std::runtime_error("item three broke");
  return x;
}

// Iterates a stream inside a handler, as Elixir code runs one in a process.
class consumer : public otpp::gen_server<consumer> {
 public:
  struct run {};
  explicit consumer(bool trap) {
    if (trap) this->trap_exit();
  }
  std::vector<std::string> handle_call(run) {
    std::vector<std::string> seen;
    for (auto& r : otpp::async_stream(std::vector<int>{1, 2, 3, 4}, crash_on_three, {.max_concurrency = 2}))
      seen.push_back(r ? std::to_string(*r) : r.error().to_string());
    return seen;
  }
  void handle_info(const otpp::exit_signal&) {}
};

}  // namespace

TEST_CASE("async_stream gives every outcome in the items' order") {
  otpp::runtime rt{{.workers = 2}};
  std::vector<int> items(200);
  for (int i = 0; i < 200; ++i) items[i] = i;
  auto s = otpp::async_stream(rt, items, [](int x) { return x * 2; }, {.max_concurrency = 4});
  static_assert(std::input_iterator<decltype(s.begin())>);
  std::vector<int> out;
  for (auto& r : s) out.push_back(r.value());
  REQUIRE(out.size() == 200u);
  for (int i = 0; i < 200; ++i) CHECK(out[i] == i * 2);

  // An rvalue range is kept by the stream; a function may be a coroutine.
  auto b = otpp::task_async(rt, [] { return 1; });
  int sum = 0;
  for (auto& r : otpp::async_stream(rt, std::vector<int>{1, 2, 3}, [](int x) -> otpp::async<int> { co_return x + 1; }))
    sum += r.value();
  CHECK(sum == 9);
  CHECK(otpp::await(b) == 1);
}

TEST_CASE("async_stream never runs more functions at once than max_concurrency") {
  otpp::runtime rt{{.workers = 4}};  // room for three blocked tasks and the rest
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  otpp_test::gate g;
  auto fn = [&](int x) {
    const int now = ++running;
    int seen = most.load();
    while (seen < now && !most.compare_exchange_weak(seen, now)) {
    }
    if (x < 3) g.wait();  // the first wave holds until the test has looked
    --running;
    return x;
  };
  std::vector<int> items(60);
  for (int i = 0; i < 60; ++i) items[i] = i;
  std::vector<int> out;
  std::thread reader{[&] {
    for (auto& r : otpp::async_stream(rt, items, fn, {.max_concurrency = 3})) out.push_back(r.value());
  }};
  while (g.entered < 3) std::this_thread::yield();
  CHECK(running == 3);
  g.release();
  reader.join();
  CHECK(most <= 3);
  REQUIRE(out.size() == 60u);
  CHECK(std::is_sorted(out.begin(), out.end()));
}

TEST_CASE("async_stream unordered gives outcomes as the tasks finish") {
  otpp::runtime rt{{.workers = 3}};
  otpp_test::gate g;
  std::vector<int> items{0, 1, 2, 3, 4, 5, 6, 7};
  std::vector<int> out;
  for (auto& r : otpp::async_stream(
           rt,
           items,
           [&g](int x) {
             if (x == 0) g.wait();  // the slow one
             return x;
           },
           {.max_concurrency = 2, .ordered = false})) {
    out.push_back(r.value());
    if (out.size() == 7) g.release();  // everything else is in
  }
  REQUIRE(out.size() == 8u);
  CHECK(out.back() == 0);
}

TEST_CASE("async_stream: a task past its timeout is killed (kill_task) or ends the stream (exit)") {
  otpp_test::log_capture quiet;  // outlives the runtime: tasks log their deaths until it stops
  otpp::runtime rt{{.workers = 2}};
  auto h = rt.start<otpp_test::holder>().value();
  auto slow_one = [h](int x) -> otpp::async<int> {
    if (x == 1) co_await otpp::async_call(h, otpp_test::holder::hold{}, otpp::infinity);  // waits holding no thread
    co_return x;
  };
  std::vector<std::string> seen;
  for (auto& r : otpp::async_stream(rt, std::vector<int>{0, 1, 2}, slow_one,
                                    {.max_concurrency = 3, .timeout = 50ms, .on_timeout = otpp::stream_timeout::kill_task}))
    seen.push_back(r ? std::to_string(*r) : r.error().to_string());
  CHECK(seen == std::vector<std::string>{"0", "timeout", "2"});

  try {
    for (auto& r : otpp::async_stream(rt, std::vector<int>{0, 1, 2}, slow_one, {.timeout = 50ms})) (void)r;
    FAIL("the stream should have thrown");
  } catch (const otpp::exit_error& e) {
    CHECK(e.reason() == otpp::exit_reason::timeout());
    CHECK(std::string{e.what()}.find("otpp::async_stream") != std::string::npos);
  }
}

TEST_CASE("async_stream: a long per-item timeout (taken on the coarse clock) is never early") {
  otpp_test::log_capture quiet;
  otpp::runtime rt{{.workers = 2}};
  auto h = rt.start<otpp_test::holder>().value();
  auto slow_one = [h](int x) -> otpp::async<int> {
    if (x == 1) co_await otpp::async_call(h, otpp_test::holder::hold{}, otpp::infinity);
    co_return x;
  };
  // 1.1 s: past the 256 kernel ticks (1.024 s at 250 Hz) from which the
  // deadline is read on the coarse clock.
  const auto timeout = std::chrono::milliseconds(1100);
  std::vector<std::string> seen;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& r : otpp::async_stream(rt, std::vector<int>{0, 1, 2}, slow_one,
                                    {.max_concurrency = 3, .timeout = timeout, .on_timeout = otpp::stream_timeout::kill_task}))
    seen.push_back(r ? std::to_string(*r) : r.error().to_string());
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(seen == std::vector<std::string>{"0", "timeout", "2"});
  CHECK(took >= timeout);
  CHECK(took < timeout + std::chrono::seconds(5));  // late by a few ticks at most, give or take the machine's load
}

TEST_CASE("async_stream: a crash is an outcome on a thread or for a trapping process, and takes a linked process down") {
  otpp_test::log_capture quiet;  // outlives the runtime: tasks log their deaths until it stops
  otpp::runtime rt{{.workers = 2}};
  std::vector<std::string> seen;
  for (auto& r : otpp::async_stream(rt, std::vector<int>{1, 2, 3, 4}, crash_on_three, {.max_concurrency = 2}))
    seen.push_back(r ? std::to_string(*r) : r.error().to_string());
  REQUIRE(seen.size() == 4u);
  CHECK(seen[2].find("item three broke") != std::string::npos);
  CHECK(seen[3] == "4");

  auto trapping = rt.start<consumer>(true).value();
  auto got = otpp::call(trapping, consumer::run{});
  REQUIRE(got.size() == 4u);
  CHECK(got[2].find("item three broke") != std::string::npos);

  auto linked = rt.start<consumer>(false).value();
  otpp::exit_watch w{linked};
  auto r = otpp::try_call(linked, consumer::run{});
  REQUIRE_FALSE(r);
  auto why = w.wait(5s);
  REQUIRE(why);
  CHECK(why->to_string().find("item three broke") != std::string::npos);
}

TEST_CASE("async_stream is lazy, and leaving it early kills the tasks still running") {
  otpp_test::log_capture quiet;  // outlives the runtime: tasks log their deaths until it stops
  std::atomic<int> pulled{0};
  std::mutex m;
  std::vector<otpp::pid> started;  // outlives the runtime too: a stopped task may still be starting
  otpp::runtime rt{{.workers = 2}};
  auto h = rt.start<otpp_test::holder>().value();
  {
    int taken = 0;
    for (auto& r : otpp::async_stream(
           rt,
             endless{&pulled},
             [&](int x) -> otpp::async<int> {
               {
                 std::lock_guard lock{m};
                 started.push_back(otpp::self());
               }
               if (x >= 2) co_await otpp::async_call(h, otpp_test::holder::hold{}, otpp::infinity);
               co_return x;
             },
             {.max_concurrency = 3})) {
      CHECK(r.value() == taken);
      if (++taken == 2) break;
    }
  }
  CHECK(pulled <= 2 + 3);
  std::vector<otpp::pid> ran;
  {
    std::lock_guard lock{m};
    ran = started;
  }
  CHECK(ran.size() >= 2u);
  for (auto& p : ran) {
    otpp::exit_watch w{p};
    auto why = w.wait(5s);
    REQUIRE(why);
    INFO(why->to_string());
    // normal: finished before the break; noproc: gone before it was watched.
    CHECK((*why == otpp::exit_reason::normal() || *why == otpp::exit_reason::shutdown() ||
           *why == otpp::exit_reason::noproc()));
  }
}

TEST_CASE("async_stream stress: concurrent streams lose, duplicate and reorder nothing") {
  otpp::runtime rt{{.workers = 2}};
  constexpr int streams = 4;
  constexpr int items = 1500;
  std::vector<int> input(items);
  for (int i = 0; i < items; ++i) input[i] = i;
  auto h = rt.start<otpp_test::holder>().value();
  std::vector<std::vector<int>> got(streams);
  std::vector<std::thread> consumers;
  for (int s = 0; s < streams; ++s) {
    consumers.emplace_back([&, s] {
      // Half the streams ordered, half not; all finishing out of order.
      for (auto& r : otpp::async_stream(
               rt, input, [h](int x) -> otpp::async<int> {
                 // Some finish a round trip later than the rest.
                 if (x % 7 == 0) (void)co_await otpp::async_call(h, otpp_test::holder::ping{});
                 co_return x;
               },
               {.max_concurrency = 8, .ordered = s % 2 == 0}))
        got[s].push_back(r.value());
    });
  }
  for (auto& c : consumers) c.join();
  for (int s = 0; s < streams; ++s) {
    REQUIRE(got[s].size() == static_cast<std::size_t>(items));
    if (s % 2 == 0) CHECK(std::is_sorted(got[s].begin(), got[s].end()));
    std::vector<int> sorted = got[s];
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // no duplicates
    CHECK(sorted.front() == 0);
    CHECK(sorted.back() == items - 1);
  }
}
