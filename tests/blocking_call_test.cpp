// The blocking call inside a process: the process waits holding no thread
// (its stack is parked, see runtime_config::stack_size), so chains and
// fan-ins of blocked callers run on the worker threads alone, and the
// call's promises (timeouts, the callee's death, exceptions) still hold.

#include <atomic>
#include <chrono>
#include <exception>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <otpp/otpp.hpp>

#include "support.hpp"

namespace {

using namespace std::chrono_literals;

// Each link calls the next with a finite timeout (so nothing runs inline on
// the caller's stack); the last answers.
class link_server : public otpp::gen_server<link_server> {
 public:
  struct depth {};
  explicit link_server(otpp::server<link_server> next) : next_{std::move(next)} {}
  int handle_call(depth) { return next_ ? otpp::call(next_, depth{}, 60s) + 1 : 1; }

 private:
  otpp::server<link_server> next_;
};

// Counts per sender: a sequence number that must arrive in order.
class counter_server : public otpp::gen_server<counter_server> {
 public:
  struct bump {
    int sender;
    int seq;
  };
  struct total {};
  explicit counter_server(int senders) : next_(static_cast<std::size_t>(senders), 0) {}
  int handle_call(bump b) {
    auto& expected = next_.at(static_cast<std::size_t>(b.sender));
    if (b.seq != expected) throw std::logic_error("out of order");
    ++expected;
    return ++count_;
  }
  int handle_call(total) const { return count_; }

 private:
  std::vector<int> next_;
  int count_ = 0;
};

// A client process: makes `n` blocking calls to the counter when told.
class client : public otpp::gen_server<client> {
 public:
  struct go {
    otpp::server<counter_server> to;
    int id;
    int n;
    std::shared_ptr<std::atomic<int>> ok;
    std::shared_ptr<std::latch> done;
  };
  void handle_cast(go g) {
    int last = 0;
    bool fine = true;
    for (int i = 0; i < g.n; ++i) {
      auto r = otpp::try_call(g.to, counter_server::bump{g.id, i}, 60s);
      if (!r || *r <= last) fine = false;
      if (r) last = *r;
    }
    if (fine) g.ok->fetch_add(1);
    g.done->count_down();
  }
};

// Blocks in a call from inside a catch block, then rethrows: the exception
// being handled must still be its own after other processes ran on the
// worker (and threw and caught their own) while it waited.
class rethrower : public otpp::gen_server<rethrower> {
 public:
  struct attempt {
    otpp::server<otpp_test::holder> peer;
    int id;
  };
  std::string handle_call(attempt a) {
    try {
      throw std::runtime_error("mine " + std::to_string(a.id));
    } catch (const std::exception&) {
      (void)otpp::try_call(a.peer, otpp_test::holder::ping{}, 60s);
      const int in_flight = std::uncaught_exceptions();
      try {
        throw;
      } catch (const std::runtime_error& again) {
        return std::string{again.what()} + (in_flight == 0 ? "" : " (uncaught!)");
      }
    }
  }
};

class waiter : public otpp::gen_server<waiter> {
 public:
  struct wait_on {
    otpp::server<otpp_test::holder> h;
    std::chrono::steady_clock::duration timeout;
  };
  otpp::exit_kind handle_call(wait_on w) {
    auto r = otpp::try_call(w.h, otpp_test::holder::hold{}, w.timeout);
    return r ? otpp::exit_kind::normal : r.error().kind();
  }
};

// Calls the counter with the given timeout and says how the call ended.
class timed_caller : public otpp::gen_server<timed_caller> {
 public:
  struct call_with {
    otpp::server<counter_server> to;
    std::chrono::steady_clock::duration timeout;
  };
  otpp::exit_kind handle_call(call_with c) {
    auto r = otpp::try_call(c.to, counter_server::bump{0, 0}, c.timeout);
    return r ? otpp::exit_kind::normal : r.error().kind();
  }
};

}  // namespace

TEST_CASE("1,000 processes in a chain of blocking calls complete on 2 worker threads") {
  otpp::runtime rt{{.workers = 2}};
  otpp::server<link_server> head;
  for (int i = 0; i < 1000; ++i) head = rt.start<link_server>(head).value();
  CHECK(otpp::call(head, link_server::depth{}, 120s) == 1000);
  CHECK(otpp::call(head, link_server::depth{}, 120s) == 1000);  // again, on the spare fibers
  CHECK(rt.thread_count() == 2);
}

TEST_CASE("64 processes fanned into one server with blocking calls: nothing lost or reordered, no extra thread") {
  otpp::runtime rt{{.workers = 2}};
  constexpr int clients = 64;
  constexpr int calls = 300;
  auto srv = rt.start<counter_server>(clients).value();
  auto ok = std::make_shared<std::atomic<int>>(0);
  auto done = std::make_shared<std::latch>(clients);
  std::vector<otpp::server<client>> cs;
  for (int i = 0; i < clients; ++i) cs.push_back(rt.start<client>().value());
  for (int i = 0; i < clients; ++i) otpp::cast(cs[static_cast<std::size_t>(i)], client::go{srv, i, calls, ok, done});
  done->wait();
  CHECK(ok->load() == clients);
  CHECK(otpp::call(srv, counter_server::total{}) == clients * calls);
  CHECK(rt.thread_count() == 2);
}

TEST_CASE("a blocked call's timeout holds on one worker, with no spare thread") {
  otpp::runtime rt{{.workers = 1}};
  auto h = rt.start<otpp_test::holder>().value();
  auto w = rt.start<waiter>().value();
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(otpp::call(w, waiter::wait_on{h, 50ms}) == otpp::exit_kind::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 >= 50ms);
  // The worker stayed free: the holder answers while the waiter waits.
  CHECK(otpp::call(h, otpp_test::holder::ping{}) == 0);
  CHECK(rt.thread_count() == 1);
}

TEST_CASE("a zero timeout from a process is a timeout, though the idle server would answer next") {
  // On one worker the server runs only once the caller waits, and by then
  // its deadline has passed (OTP's `after 0`). The request is still
  // handled; its reply is dropped.
  otpp::runtime rt{{.workers = 1}};
  auto c = rt.start<counter_server>(1).value();
  auto p = rt.start<timed_caller>().value();
  CHECK(otpp::call(p, timed_caller::call_with{c, 0ms}) == otpp::exit_kind::timeout);
  CHECK(otpp::call(c, counter_server::total{}) == 1);
}

TEST_CASE("many processes blocked at once time out each at its own deadline") {
  otpp::runtime rt{{.workers = 2}};
  auto h = rt.start<otpp_test::holder>().value();
  std::vector<otpp::server<waiter>> ws;
  for (int i = 0; i < 40; ++i) ws.push_back(rt.start<waiter>().value());
  std::vector<otpp::pending_call<otpp::exit_kind>> pending;
  for (int i = 0; i < 40; ++i) {
    pending.push_back(otpp::async_call(ws[static_cast<std::size_t>(i)], waiter::wait_on{h, std::chrono::milliseconds(20 + i)}, 60s));
  }
  for (auto& p : pending) CHECK(p.get().value() == otpp::exit_kind::timeout);
  CHECK(rt.thread_count() == 2);
}

TEST_CASE("a blocked caller learns of the callee's death at once") {
  otpp::runtime rt{{.workers = 2}};
  auto h = rt.start<otpp_test::holder>().value();
  auto w = rt.start<waiter>().value();
  auto pending = otpp::async_call(w, waiter::wait_on{h, 60'000ms}, 60s);
  // The waiter is parked once the holder has its request: flush with a ping.
  for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
    if (otpp::sys::info(h).value().messages_handled >= 1) break;
  }
  otpp::exit(h.pid(), otpp::exit_reason::kill());
  CHECK(pending.get().value() == otpp::exit_kind::killed);
}

TEST_CASE("the exception being handled survives a blocking call made inside its catch block") {
  otpp::runtime rt{{.workers = 2}};
  auto h = rt.start<otpp_test::holder>().value();
  std::vector<otpp::server<rethrower>> rs;
  for (int i = 0; i < 32; ++i) rs.push_back(rt.start<rethrower>().value());
  for (int round = 0; round < 20; ++round) {
    std::vector<otpp::pending_call<std::string>> pending;
    for (int i = 0; i < 32; ++i) pending.push_back(otpp::async_call(rs[static_cast<std::size_t>(i)], rethrower::attempt{h, i}, 60s));
    for (int i = 0; i < 32; ++i) CHECK(pending[static_cast<std::size_t>(i)].get().value() == "mine " + std::to_string(i));
  }
}

TEST_CASE("shutdown with processes blocked in calls: the callee stops first, the callers then") {
  otpp::runtime rt{{.workers = 2, .shutdown_timeout = 5000ms}};
  std::vector<otpp::server<waiter>> ws;
  for (int i = 0; i < 8; ++i) ws.push_back(rt.start<waiter>().value());
  auto h = rt.start<otpp_test::holder>().value();  // newer: shutdown stops it first
  std::vector<otpp::pending_call<otpp::exit_kind>> pending;
  for (auto& w : ws) pending.push_back(otpp::async_call(w, waiter::wait_on{h, otpp::infinity}, 60s));
  for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
    if (otpp::sys::info(h).value().messages_handled >= 8) break;
  }
  const auto t0 = std::chrono::steady_clock::now();
  rt.shutdown();
  CHECK(std::chrono::steady_clock::now() - t0 < 4s);  // nothing waited for the 5 s shutdown timeout
  for (auto& p : pending) CHECK(p.get().value() == otpp::exit_kind::shutdown);
  CHECK(rt.process_count() == 0);
}

TEST_CASE("stack_size 0: blocked calls hand the worker's queues to spare threads, as before") {
  otpp::runtime rt{{.workers = 2, .stack_size = 0}};
  otpp::server<link_server> head;
  for (int i = 0; i < 20; ++i) head = rt.start<link_server>(head).value();
  CHECK(otpp::call(head, link_server::depth{}, 120s) == 20);
  CHECK(rt.thread_count() > 2);
}

namespace {

// Answers each request at once, later (from a timer), or never, as the
// request says; the stress test below mixes the three across many callers.
class flaky : public otpp::gen_server<flaky> {
 public:
  enum class mode { now, later, never };
  struct ask {
    using reply_type = int;
    int value;
    mode how;
  };
  struct answer {
    std::size_t index;
  };
  void handle_call(ask a, otpp::reply_to<int> r) {
    switch (a.how) {
      case mode::now:
        r.reply(a.value);
        break;
      case mode::later:
        pending_.push_back({std::move(r), a.value});
        (void)otpp::send_after(self(), answer{pending_.size() - 1}, std::chrono::milliseconds(1 + a.value % 3));
        break;
      case mode::never:
        kept_.push_back(std::move(r));
        break;
    }
  }
  void handle_info(answer a) {
    auto& [r, v] = pending_.at(a.index);
    r.reply(v);
  }

 private:
  std::vector<std::pair<otpp::reply_to<int>, int>> pending_;
  std::vector<otpp::reply_to<int>> kept_;
};

class stress_client : public otpp::gen_server<stress_client> {
 public:
  struct go {
    std::vector<otpp::server<flaky>> servers;
    int id;
    int n;
    std::shared_ptr<std::atomic<int>> wrong;
    std::shared_ptr<std::latch> done;
  };
  void handle_cast(go g) {
    for (int i = 0; i < g.n; ++i) {
      const int pick = (g.id * 7 + i * 13) % 10;
      const auto how = pick < 6 ? flaky::mode::now : pick < 9 ? flaky::mode::later : flaky::mode::never;
      const int value = g.id * 100'000 + i;
      auto& s = g.servers[static_cast<std::size_t>((g.id + i) % static_cast<int>(g.servers.size()))];
      // Short timeouts for the requests never answered; long ones for the rest.
      const auto timeout = how == flaky::mode::never ? std::chrono::milliseconds(2 + i % 5) : std::chrono::milliseconds(20'000);
      auto r = otpp::try_call(s, flaky::ask{value, how}, timeout);
      const bool right = how == flaky::mode::never ? (!r && r.error().kind() == otpp::exit_kind::timeout)
                                                   : (r && *r == value);
      if (!right) g.wrong->fetch_add(1);
    }
    g.done->count_down();
  }
};

}  // namespace

TEST_CASE("stress: many blocked callers, replies now, later and never, on 2 workers") {
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::server<flaky>> servers;
  for (int i = 0; i < 4; ++i) servers.push_back(rt.start<flaky>().value());
  constexpr int clients = 48;
  constexpr int calls = 150;
  auto wrong = std::make_shared<std::atomic<int>>(0);
  auto done = std::make_shared<std::latch>(clients);
  std::vector<otpp::server<stress_client>> cs;
  for (int i = 0; i < clients; ++i) cs.push_back(rt.start<stress_client>().value());
  for (int i = 0; i < clients; ++i) {
    otpp::cast(cs[static_cast<std::size_t>(i)], stress_client::go{servers, i, calls, wrong, done});
  }
  done->wait();
  CHECK(wrong->load() == 0);
  CHECK(rt.thread_count() == 2);
}
