// The runtime: workers, shutdown, and blocking calls that must not starve the
// pool (chains of calls, fan-in, callees that need another process to run).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

struct order_log {
  std::mutex mutex;
  std::vector<int> stopped;
};

class tracked : public otpp::gen_server<tracked> {
 public:
  struct get {};
  tracked(int n, std::shared_ptr<order_log> log) : n_{n}, log_{std::move(log)} {}
  int handle_call(get) { return n_; }
  void terminate(const otpp::exit_reason& r) {
    std::lock_guard lock{log_->mutex};
    log_->stopped.push_back(r.kind() == otpp::exit_kind::shutdown ? n_ : -1);
  }

 private:
  int n_;
  std::shared_ptr<order_log> log_;
};

}  // namespace

TEST_CASE("runtime shutdown stops every process in reverse start order, calling terminate") {
  auto log = std::make_shared<order_log>();
  std::vector<otpp::server<tracked>> servers;
  {
    otpp::runtime rt{{.workers = 2}};
    CHECK(rt.workers() == 2);
    for (int i = 0; i < 5; ++i) servers.push_back(rt.start<tracked>(i, log).value());
    CHECK(rt.process_count() == 5);
    CHECK(otpp::call(servers[3], tracked::get{}) == 3);
    rt.shutdown();
    CHECK(rt.process_count() == 0);
    auto late = rt.start<tracked>(9, log);
    REQUIRE_FALSE(late);
    CHECK(late.error().kind() == otpp::exit_kind::shutdown);
    rt.shutdown();  // idempotent
  }
  CHECK(log->stopped == std::vector<int>{4, 3, 2, 1, 0});
  for (auto& s : servers) CHECK_FALSE(s.alive());
}

TEST_CASE("destroying a runtime with live processes stops them") {
  auto log = std::make_shared<order_log>();
  otpp::server<tracked> s;
  {
    otpp::runtime rt{{.workers = 1}};
    s = rt.start<tracked>(1, log).value();
  }
  CHECK_FALSE(s.alive());
  CHECK(log->stopped == std::vector<int>{1});
}

namespace {

// Each link calls the next; the last answers.
class chain_link : public otpp::gen_server<chain_link> {
 public:
  struct depth {};
  explicit chain_link(otpp::server<chain_link> next) : next_{std::move(next)} {}
  // No deadline: this is about blocked chains making progress, and under a
  // sanitizer with tests side by side one hop can take seconds.
  int handle_call(depth) { return next_ ? otpp::call(next_, depth{}, otpp::infinity) + 1 : 1; }

 private:
  otpp::server<chain_link> next_;
};

class chain_driver : public otpp::gen_server<chain_driver> {
 public:
  struct run {
    otpp::server<chain_link> head;
    int times;
    std::atomic<int>* sum;
    std::latch* done;
  };
  void handle_cast(run r) {
    try {
      for (int i = 0; i < r.times; ++i) r.sum->fetch_add(otpp::call(r.head, chain_link::depth{}, otpp::infinity));
    } catch (...) {
      // counted down all the same: the sum then shows the failure
    }
    r.done->count_down();
  }
};

}  // namespace

TEST_CASE("a chain of 50 processes each calling the next completes on 2 workers") {
  otpp::runtime rt{{.workers = 2}};
  otpp::server<chain_link> head;
  for (int i = 0; i < 50; ++i) head = rt.start<chain_link>(head).value();
  CHECK(otpp::call(head, chain_link::depth{}, std::chrono::seconds(60)) == 50);
  // Several processes drive the chain at once, so links are often busy and
  // calls block instead of running inline.
  constexpr int drivers = 8;
  std::atomic<int> sum{0};
  std::latch done{drivers};
  std::vector<otpp::server<chain_driver>> ds;
  for (int i = 0; i < drivers; ++i) {
    ds.push_back(rt.start<chain_driver>().value());
    otpp::cast(ds.back(), chain_driver::run{head, 50, &sum, &done});
  }
  done.wait();
  CHECK(sum.load() == drivers * 50 * 50);
}

namespace {

class hub : public otpp::gen_server<hub> {
 public:
  struct bump {
    unsigned client;
    unsigned seq;
  };
  struct total {};
  explicit hub(unsigned clients) : last_(clients, 0) {}
  std::uint64_t handle_call(bump b) {
    if (b.seq != last_[b.client] + 1) ++out_of_order_;
    last_[b.client] = b.seq;
    return ++count_;
  }
  std::pair<std::uint64_t, std::uint64_t> handle_call(total) { return {count_, out_of_order_}; }

 private:
  std::vector<unsigned> last_;
  std::uint64_t count_ = 0;
  std::uint64_t out_of_order_ = 0;
};

class hub_client : public otpp::gen_server<hub_client> {
 public:
  struct go {
    otpp::server<hub> h;
    unsigned id;
    unsigned calls;
    std::latch* done;
  };
  void handle_cast(go g) {
    try {
      for (unsigned i = 1; i <= g.calls; ++i) otpp::call(g.h, hub::bump{g.id, i}, std::chrono::seconds(60));
    } catch (...) {
      // counted down all the same: the total then shows the failure
    }
    g.done->count_down();
  }
};

}  // namespace

TEST_CASE("64 processes all calling one server complete on 2 workers, in order per caller") {
  otpp::runtime rt{{.workers = 2}};
  constexpr unsigned clients = 64;
  constexpr unsigned calls = 2000;
  auto h = rt.start<hub>(clients).value();
  std::latch done{clients};
  std::vector<otpp::server<hub_client>> cs;
  for (unsigned i = 0; i < clients; ++i) cs.push_back(rt.start<hub_client>().value());
  for (unsigned i = 0; i < clients; ++i) otpp::cast(cs[i], hub_client::go{h, i, calls, &done});
  done.wait();
  auto [count, disorder] = otpp::call(h, hub::total{});
  CHECK(count == std::uint64_t{clients} * calls);
  CHECK(disorder == 0);
}

namespace {

// Replies to `wait` only after `open` arrives from another process: callers
// block their workers, and the opener must still get to run.
class gate : public otpp::gen_server<gate> {
 public:
  struct wait {
    using reply_type = int;
  };
  struct open {};
  struct waiting {};
  void handle_call(wait, otpp::reply_to<int> to) { waiters_.push_back(std::move(to)); }
  std::size_t handle_call(waiting) { return waiters_.size(); }
  void handle_cast(open) {
    for (auto& w : waiters_) w.reply(1);
    waiters_.clear();
  }

 private:
  std::vector<otpp::reply_to<int>> waiters_;
};

class waiter : public otpp::gen_server<waiter> {
 public:
  struct go {
    otpp::server<gate> g;
    std::atomic<int>* got;
    std::latch* done;
  };
  void handle_cast(go x) {
    x.got->fetch_add(otpp::call(x.g, gate::wait{}, 30s));
    x.done->count_down();
  }
};

class opener : public otpp::gen_server<opener> {
 public:
  struct go {
    otpp::server<gate> g;
    std::size_t expect;
  };
  void handle_cast(go x) {
    // Runs only if some worker is free while the waiters block theirs.
    while (otpp::call(x.g, gate::waiting{}) < x.expect) std::this_thread::yield();
    otpp::cast(x.g, gate::open{});
  }
};

}  // namespace

TEST_CASE("workers blocked in calls hand their queues over, so other processes still run") {
  otpp::runtime rt{{.workers = 2}};
  auto g = rt.start<gate>().value();
  constexpr int waiters = 6;  // more blocked callers than workers
  std::atomic<int> got{0};
  std::latch done{waiters};
  std::vector<otpp::server<waiter>> ws;
  for (int i = 0; i < waiters; ++i) ws.push_back(rt.start<waiter>().value());
  for (auto& w : ws) otpp::cast(w, waiter::go{g, &got, &done});
  auto o = rt.start<opener>().value();
  otpp::cast(o, opener::go{g, static_cast<std::size_t>(waiters)});
  done.wait();
  CHECK(got.load() == waiters);
}

namespace {
/// Keeps the worker (as a computation or a lock would) until `flag` is set;
/// 10 s is a failure, not a wait that ends it.
bool keep_worker_until(const std::atomic<bool>& flag) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!flag.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  return flag.load();
}

/// Sets its flag when poked.
class pokee : public otpp::gen_server<pokee> {
 public:
  struct poke {
    std::atomic<bool>* flag;
  };
  void handle_cast(poke p) {
    p.flag->store(true);
    p.flag->notify_all();
  }
};

/// Holds its worker at a gate; pokes; then holds its worker until the
/// poked process has run (or 10 s have passed: the test then fails).
class poker : public otpp::gen_server<poker> {
 public:
  struct hold {
    std::atomic<bool>* entered;
    std::atomic<bool>* open;
  };
  struct poke {
    otpp::server<pokee> target;
    std::atomic<bool>* flag;
  };
  struct wait_for_it {
    std::atomic<bool>* flag;
  };
  struct saw {
    using reply_type = bool;
  };
  void handle_cast(hold h) {
    h.entered->store(true);
    h.entered->notify_all();
    h.open->wait(false);
  }
  void handle_cast(poke p) { otpp::cast(p.target, pokee::poke{p.flag}); }
  void handle_cast(wait_for_it w) { saw_ = keep_worker_until(*w.flag); }
  struct poke_and_wait {
    otpp::server<pokee> target;
    std::atomic<bool>* flag;
  };
  void handle_cast(poke_and_wait p) {
    otpp::cast(p.target, pokee::poke{p.flag});
    saw_ = keep_worker_until(*p.flag);
  }
  bool handle_call(saw) { return saw_; }

 private:
  bool saw_ = false;
};
}  // namespace

// A process a handler wakes waits on that worker to run next (the fast way
// for a reply to reach its caller); if the handler after it keeps the
// worker, another worker must be able to take it.
TEST_CASE("a process woken by one handler runs on another worker while the next handler keeps this one") {
  otpp::runtime rt{{.workers = 2}};
  auto target = rt.start<pokee>().value();
  auto p = rt.start<poker>().value();
  std::atomic<bool> entered{false}, open{false}, flag{false};
  otpp::cast(p, poker::hold{&entered, &open});
  entered.wait(false);
  // Both queue behind the hold, so that they run in one turn.
  otpp::cast(p, poker::poke{target, &flag});
  otpp::cast(p, poker::wait_for_it{&flag});
  open.store(true);
  open.notify_all();
  CHECK(otpp::call(p, poker::saw{}, 30s));
}

// Turns are not preempted, so a handler that wakes a process and then keeps
// its worker holds what it woke where only that worker would run it: an
// idle worker must notice the stall and take it.
TEST_CASE("a process woken by a handler that then keeps its worker runs on another worker") {
  otpp::runtime rt{{.workers = 2}};
  auto target = rt.start<pokee>().value();
  auto p = rt.start<poker>().value();
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> flag{false};
    otpp::cast(p, poker::poke_and_wait{target, &flag});
    CHECK(otpp::call(p, poker::saw{}, 30s));
  }
}

namespace {
/// Answers a call at once, then keeps its worker until the caller says it
/// has the answer.
class early_replier : public otpp::gen_server<early_replier> {
 public:
  struct ask {
    using reply_type = int;
    std::atomic<bool>* got;
  };
  struct saw {
    using reply_type = bool;
  };
  void handle_call(ask a, otpp::reply_to<int> r) {
    r.reply(42);
    saw_ = keep_worker_until(*a.got);
  }
  bool handle_call(saw) { return saw_; }

 private:
  bool saw_ = false;
};

/// Calls the replier (blocking: its fiber parks) and says when it has the answer.
class early_asker : public otpp::gen_server<early_asker> {
 public:
  struct go {
    using reply_type = int;
    otpp::server<early_replier> to;
    std::atomic<bool>* got;
  };
  int handle_call(go g) {
    const int v = otpp::call(g.to, early_replier::ask{g.got}, 30s);
    g.got->store(true);
    return v;
  }
};
}  // namespace

// The same for a process whose blocking call that handler answered: its
// fiber, parked on this worker, is resumed here next, unless the worker
// stalls.
TEST_CASE("a caller answered by a handler that then keeps its worker resumes on another worker") {
  otpp::runtime rt{{.workers = 2}};
  auto replier = rt.start<early_replier>().value();
  auto asker = rt.start<early_asker>().value();
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> got{false};
    CHECK(otpp::call(asker, early_asker::go{replier, &got}, 30s) == 42);
    CHECK(otpp::call(replier, early_replier::saw{}, 30s));
  }
}

TEST_CASE("the default runtime needs no set-up") {
  auto log = std::make_shared<order_log>();
  auto s = otpp::start<tracked>(7, log).value();
  CHECK(otpp::default_runtime().workers() >= 1);
  CHECK(otpp::call(s, tracked::get{}) == 7);
  otpp::stop(s, otpp::exit_reason::shutdown());
}

namespace {
class spawner : public otpp::gen_server<spawner> {
 public:
  struct spawn_one {};
  std::uint64_t handle_call(spawn_one) {
    auto child = otpp::start<chain_link>(otpp::server<chain_link>{}).value();
    children_.push_back(child);
    return child.id();
  }
  std::vector<otpp::server<chain_link>> children_;
};
}  // namespace

TEST_CASE("a process started from inside a process joins its runtime") {
  otpp::runtime rt{{.workers = 1}};
  auto s = rt.start<spawner>().value();
  CHECK(rt.process_count() == 1);
  (void)otpp::call(s, spawner::spawn_one{});
  CHECK(rt.process_count() == 2);
  rt.shutdown();
  CHECK(rt.process_count() == 0);
}

TEST_CASE("a chain deeper than the inline limit still completes") {
  otpp::runtime rt{{.workers = 2}};
  otpp::server<chain_link> head;
  for (int i = 0; i < 300; ++i) head = rt.start<chain_link>(head).value();
  CHECK(otpp::call(head, chain_link::depth{}, std::chrono::seconds(30)) == 300);
}

#if defined(__linux__)
namespace {
// The CPUs the calling thread may run on.
std::vector<int> my_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  (void)pthread_getaffinity_np(pthread_self(), sizeof set, &set);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// Reports the CPUs its worker may use, once `met` says both reporters are
// in their handlers at the same time: then they run on different workers.
class cpu_reporter : public otpp::gen_server<cpu_reporter> {
 public:
  struct report {
    std::atomic<int>* met;
  };
  std::vector<int> handle_call(report r) {
    r.met->fetch_add(1);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (r.met->load() < 2 && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
    return my_cpus();
  }
};

// Both reporters' answers, asked from two threads at once.
std::pair<std::vector<int>, std::vector<int>> report_both(otpp::runtime& rt) {
  auto a = rt.start<cpu_reporter>().value();
  auto b = rt.start<cpu_reporter>().value();
  std::atomic<int> met{0};
  std::vector<int> from_b;
  std::thread t{[&] { from_b = otpp::call(b, cpu_reporter::report{&met}, std::chrono::seconds(30)); }};
  std::vector<int> from_a = otpp::call(a, cpu_reporter::report{&met}, std::chrono::seconds(30));
  t.join();
  REQUIRE(met.load() == 2);
  return {from_a, from_b};
}
}  // namespace

TEST_CASE("bind_workers: each worker runs on a CPU of its own among those allowed; by default workers keep them all") {
  const std::vector<int> allowed = my_cpus();
  if (allowed.size() < 2) {
    WARN("one CPU allowed: nothing to bind to");
    return;
  }
  {
    otpp::runtime rt{{.workers = 2, .bind_workers = true}};
    const auto [a, b] = report_both(rt);
    REQUIRE(a.size() == 1);
    REQUIRE(b.size() == 1);
    CHECK(a != b);
    for (int c : {a[0], b[0]}) CHECK(std::find(allowed.begin(), allowed.end(), c) != allowed.end());
  }
  {
    otpp::runtime rt{{.workers = 2}};
    const auto [a, b] = report_both(rt);
    CHECK(a == allowed);
    CHECK(b == allowed);
  }
}

TEST_CASE("worker_cpus: worker i runs on the i-th CPU listed, round robin; a CPU the thread may not use is refused by name") {
  const std::vector<int> allowed = my_cpus();
  REQUIRE_FALSE(allowed.empty());
  {
    // Two workers on one CPU (the last allowed): both run there.
    otpp::runtime rt{{.workers = 2, .worker_cpus = {allowed.back()}}};
    const auto [a, b] = report_both(rt);
    CHECK(a == std::vector<int>{allowed.back()});
    CHECK(b == std::vector<int>{allowed.back()});
  }
  if (allowed.size() >= 2) {
    // Listed in reverse: each worker on one of the two, both used.
    otpp::runtime rt{{.workers = 2, .worker_cpus = {allowed[1], allowed[0]}}};
    const auto [a, b] = report_both(rt);
    REQUIRE(a.size() == 1);
    REQUIRE(b.size() == 1);
    CHECK(std::minmax(a[0], b[0]) == std::minmax(allowed[0], allowed[1]));
  }
  const int outside = allowed.back() + 1;  // not in the set, whatever the machine has
  for (int bad : {outside, -1}) {
    try {
      otpp::runtime rt{{.workers = 1, .worker_cpus = {allowed.front(), bad}}};
      FAIL("a runtime started with CPU " << bad << " in worker_cpus");
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      CHECK(what.find("worker_cpus") != std::string::npos);
      CHECK(what.find("CPU " + std::to_string(bad) + ",") != std::string::npos);
      std::string listed = "(allowed: ";
      for (std::size_t i = 0; i < allowed.size(); ++i) listed += (i == 0 ? "" : ",") + std::to_string(allowed[i]);
      CHECK(what.find(listed + ")") != std::string::npos);
    }
  }
}
#endif
