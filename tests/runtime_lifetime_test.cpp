// The runtime's end: shutdown is bounded by shutdown_timeout in total and
// abandons a stuck process once; destroying a runtime while other threads
// still call, cast, send and set timers into it is safe (they get noproc,
// shutdown or timeout); handles outlive it.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

using otpp_test::gate;

class stuck : public otpp::gen_server<stuck> {
 public:
  struct block {};
  struct get {};
  stuck(std::shared_ptr<gate> g, bool in_terminate) : g_{std::move(g)}, in_terminate_{in_terminate} {}
  void handle_cast(block) { g_->wait(); }
  int handle_call(get) { return 1; }
  void terminate(const otpp::exit_reason&) {
    if (in_terminate_) g_->wait();
  }

 private:
  std::shared_ptr<gate> g_;
  bool in_terminate_;
};

std::size_t count_lines(const otpp_test::log_capture& logs, const std::string& needle) {
  std::size_t n = 0;
  const std::string all = logs.all();
  for (auto at = all.find(needle); at != std::string::npos; at = all.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("runtime shutdown is bounded by shutdown_timeout in total; a stuck process is abandoned once") {
  for (bool in_terminate : {false, true}) {
    CAPTURE(in_terminate);
    otpp_test::log_capture logs;
    auto g = std::make_shared<gate>();
    otpp::pid stuck_pid;
    std::vector<otpp::pid> others;
    double ms = 0;
    std::string type;
    {
      otpp::runtime rt{{.workers = 2, .shutdown_timeout = 300ms}};
      for (int i = 0; i < 20; ++i) others.push_back(rt.start<stuck>(g, false).value());  // these stop at once
      auto s = rt.start<stuck>(g, in_terminate).value();
      stuck_pid = s;
      type = otpp::sys::info(s).value().type;  // as the log spells it (compilers differ)
      if (!in_terminate) {
        otpp::cast(s, stuck::block{});
        while (g->entered.load() == 0) std::this_thread::yield();
      }
      for (int i = 0; i < 20; ++i) others.push_back(rt.start<stuck>(g, false).value());
      auto t0 = clk::now();
      rt.shutdown();
      ms = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
    }  // destroying it now does not wait again
    CHECK(ms >= 250);
    CHECK(ms < 1500);
    const std::string name = fmt::format("{}", stuck_pid);
    CHECK(count_lines(logs, name + " (" + type + ") did not stop within the runtime's shutdown timeout (300 ms)") == 1);
    g->release();  // the abandoned thread ends, and frees what it kept
    // Those asked after the time was up still stopped (await_exit on one
    // already gone answers noproc).
    for (auto& p : others) CHECK(otpp::await_exit(p, 10s).has_value());
    CHECK(otpp::await_exit(stuck_pid, 10s).has_value());
  }
}

namespace {

class target : public otpp::gen_server<target> {
 public:
  struct get {};
  struct bump {};
  struct tick {};
  int handle_call(get) { return n_; }
  void handle_cast(bump) { ++n_; }
  void handle_info(tick) { ++n_; }

 private:
  int n_ = 0;
};

bool acceptable(const otpp::exit_reason& r) {
  return r.kind() == otpp::exit_kind::noproc || r.kind() == otpp::exit_kind::shutdown ||
         r.kind() == otpp::exit_kind::timeout;
}

}  // namespace

TEST_CASE("destroying a runtime while 8 threads call, cast, send and set timers into it", "[stress]") {
  std::atomic<int> bad{0};
  for (int round = 0; round < 40; ++round) {
    auto rt = std::make_unique<otpp::runtime>(otpp::runtime_config{.workers = 2, .shutdown_timeout = 2000ms});
    std::vector<otpp::server<target>> servers;
    for (int i = 0; i < 4; ++i) servers.push_back(rt->start<target>().value());
    std::atomic<bool> stop{false};
    std::atomic<long> ops{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        std::minstd_rand rng(static_cast<unsigned>(round * 8 + t + 1));
        std::vector<otpp::timer_ref> refs;
        while (!stop.load(std::memory_order_relaxed)) {
          auto& s = servers[rng() % servers.size()];
          switch (rng() % 5) {
            case 0: {
              auto r = otpp::try_call(s, target::get{}, 200ms);
              if (!r && !acceptable(r.error())) ++bad;
              break;
            }
            case 1: otpp::cast(s, target::bump{}); break;
            case 2: otpp::send(s, target::tick{}); break;
            case 3: refs.push_back(otpp::send_after(s, target::tick{}, std::chrono::microseconds(rng() % 3000))); break;
            default:
              if (!refs.empty()) {
                (void)otpp::cancel_timer(refs.back());
                (void)otpp::read_timer(refs.front());
                refs.pop_back();
              }
          }
          ops.fetch_add(1, std::memory_order_relaxed);
        }
      });
    }
    while (ops.load() < 2000) std::this_thread::yield();
    rt.reset();  // destroyed under fire
    const long at_destroy = ops.load();
    while (ops.load() < at_destroy + 2000) std::this_thread::yield();  // and used after
    stop = true;
    for (auto& th : threads) th.join();
    for (auto& s : servers) {
      auto r = otpp::try_call(s, target::get{});
      REQUIRE_FALSE(r);
      CHECK(r.error().kind() == otpp::exit_kind::noproc);
    }
  }
  CHECK(bad.load() == 0);
}
