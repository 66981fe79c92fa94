// The scheduler and shutdown under memory exhaustion, with every large
// allocation failing: processes woken while no run queue can grow all
// run, each message once; shutdown, with no memory for its list of live
// processes, still stops every process and joins every thread, and a
// second shutdown has nothing left.

#include <atomic>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "failing_new.hpp"
#include "support.hpp"

using otpp_test::failing_new::refuse_large;
using otpp_test::failing_new::refused;

namespace {
class plain : public otpp::gen_server<plain> {
 public:
  struct get {};
  int handle_call(get) { return 1; }
};

/// Counts the pokes it handles.
class poked : public otpp::gen_server<poked> {
 public:
  struct poke {
    std::atomic<int>* handled;
  };
  void handle_cast(poke p) { p.handled->fetch_add(1, std::memory_order_relaxed); }
};

/// Pokes every process of a list from one handler: each poke wakes one,
/// and all of them queue on this worker before any can run here.
class poker : public otpp::gen_server<poker> {
 public:
  struct poke_all {
    const std::vector<otpp::server<poked>>* targets;
    std::atomic<int>* handled;
  };
  /// `times` pokes to one process: one wake.
  struct poke_one {
    otpp::server<poked> target;
    int times;
    std::atomic<int>* handled;
  };
  struct flush {};
  void handle_cast(poke_all a) {
    for (const auto& t : *a.targets) otpp::cast(t, poked::poke{a.handled});
  }
  void handle_cast(poke_one a) {
    for (int i = 0; i < a.times; ++i) otpp::cast(a.target, poked::poke{a.handled});
  }
  int handle_call(flush) { return 0; }
};

// Every poke of `rounds` rounds from `pokers` processes at once, with
// every large allocation refused, is handled exactly once.
void poke_rounds(otpp::runtime& rt, int pokers, int targets, int rounds) {
  std::vector<otpp::server<poked>> ts;
  for (int i = 0; i < targets; ++i) ts.push_back(rt.start<poked>().value());
  std::vector<otpp::server<poker>> ps;
  for (int i = 0; i < pokers; ++i) ps.push_back(rt.start<poker>().value());
  std::atomic<int> handled{0};
  // As many messages with memory first, all to one process: the message
  // nodes' pool has what the starved rounds take, and the run queues have
  // not grown, so they must then.
  for (auto& p : ps) otpp::cast(p, poker::poke_one{ts.front(), targets, &handled});
  REQUIRE(otpp_test::eventually([&] { return handled.load() == pokers * targets; }));
  handled = 0;
  const long refused_before = refused.load();
  refuse_large = true;
  for (int r = 0; r < rounds; ++r) {
    for (auto& p : ps) otpp::cast(p, poker::poke_all{&ts, &handled});
    CHECK(otpp_test::eventually([&] { return handled.load() == (r + 1) * pokers * targets; }));
  }
  for (auto& p : ps) CHECK(otpp::call(p, poker::flush{}) == 0);
  for (auto& t : ts) otpp::cast(t, poked::poke{&handled});
  CHECK(otpp_test::eventually([&] { return handled.load() == (rounds * pokers + 1) * targets; }));
  refuse_large = false;
  CHECK(refused.load() > refused_before);
  CHECK(rt.process_count() == static_cast<std::size_t>(pokers + targets));
}
}  // namespace

TEST_CASE("processes woken while the run queues have no memory to grow all run, each message once") {
  // One worker: a handler's thousands of wakes all queue behind it (past
  // its deque's 256 and the global queue's 256, neither of which can grow).
  SECTION("one worker") {
    otpp::runtime rt{{.workers = 1}};
    poke_rounds(rt, 1, 3000, 3);
  }
  // Two: the other worker steals and takes from the global queue while
  // more are stranded and adopted.
  SECTION("two workers, two pokers") {
    otpp::runtime rt{{.workers = 2}};
    poke_rounds(rt, 2, 3000, 3);
  }
}

TEST_CASE("shutdown with no memory for its list of processes still stops them all") {
  otpp_test::log_capture logs;
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::server<plain>> procs;
  for (int i = 0; i < 2000; ++i) procs.push_back(rt.start<plain>().value());
  refuse_large = true;
  rt.shutdown();  // the 16 KB list cannot be had: one at a time instead
  refuse_large = false;
  CHECK(refused.load() > 0);
  CHECK(rt.process_count() == 0);
  for (auto& p : procs) CHECK_FALSE(p.alive());
  rt.shutdown();  // done already: returns at once
  CHECK(rt.process_count() == 0);
}
