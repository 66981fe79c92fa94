// otpp::counters (Erlang's counters): both layouts, errors, sharing by
// copy, and stress from threads and from processes that move between
// workers, with exact totals.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/syscall.h>
#include <unistd.h>

#include <otpp/counters.hpp>
#include <otpp/gen_server.hpp>
#include <otpp/runtime.hpp>

#include "catch.hpp"

namespace {

const otpp::counters_options layouts[] = {{.write_concurrency = false}, {.write_concurrency = true}};

// Adds to counter 0 of its counters once per `add` cast.
class adder : public otpp::gen_server<adder> {
 public:
  struct add {
    std::int64_t n;
  };
  struct flush {};
  explicit adder(otpp::counters c) : c_{std::move(c)} {}
  void handle_cast(add a) { c_.add(0, a.n); }
  bool handle_call(flush) { return true; }

 private:
  otpp::counters c_;
};

// Answers after computing for about `work`: long enough that a blocking
// caller's fiber parks instead of spinning for the reply, and resumes
// wherever a worker is free.
class slow_peer : public otpp::gen_server<slow_peer> {
 public:
  struct ask {
    std::chrono::microseconds work;
  };
  bool handle_call(ask a) {
    const auto until = std::chrono::steady_clock::now() + a.work;
    while (std::chrono::steady_clock::now() < until) {
    }
    return true;
  }
};

// The kernel's id of the calling thread, asked afresh each time (the
// compiler may take pthread_self, declared const, once for a whole function).
long thread_id() { return syscall(SYS_gettid); }

// Adds in a loop around blocking calls, in one handler: between two adds
// its fiber may resume on the other worker, and each add must land in the
// row of the thread it runs on then (a row written from two threads loses
// counts). Returns how often it found itself on another thread.
class hopping_adder : public otpp::gen_server<hopping_adder> {
 public:
  struct run {
    otpp::server<slow_peer> peer;
    int rounds;
  };
  explicit hopping_adder(otpp::counters c) : c_{std::move(c)} {}
  int handle_call(run r) {
    int hops = 0;
    for (int i = 0; i < r.rounds; ++i) {
      const long before = thread_id();
      c_.add(0, 1);
      (void)otpp::call(r.peer, slow_peer::ask{std::chrono::microseconds{20}});
      if (thread_id() != before) ++hops;
    }
    return hops;
  }

 private:
  otpp::counters c_;
};

}  // namespace

TEST_CASE("counters: add, sub, get and put in both layouts; a copy shares the counters", "[counters]") {
  for (auto opts : layouts) {
    INFO("write_concurrency " << opts.write_concurrency);
    otpp::counters c{3, opts};
    CHECK(c.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) CHECK(c.get(i) == 0);
    c.add(0, 5);
    c.sub(0, 2);
    c.add(2, -7);
    CHECK(c.get(0) == 3);
    CHECK(c.get(1) == 0);
    CHECK(c.get(2) == -7);
    const otpp::counters copy = c;
    copy.add(1, 10);
    CHECK(c.get(1) == 10);
    c.put(1, 100);
    CHECK(copy.get(1) == 100);
    copy.add(1, 1);
    CHECK(c.get(1) == 101);
    // Another thread's adds land in a row of its own, and put still sets the sum.
    std::thread([&] { c.add(1, 1000); }).join();
    CHECK(c.get(1) == 1101);
    c.put(1, -5);
    CHECK(c.get(1) == -5);
    // 64-bit two's complement wrap, as Erlang's, also within one thread's row.
    c.put(2, std::numeric_limits<std::int64_t>::max());
    c.add(2, 1);
    CHECK(c.get(2) == std::numeric_limits<std::int64_t>::min());
    c.put(2, 0);
    c.add(2, std::numeric_limits<std::int64_t>::max());
    c.add(2, std::numeric_limits<std::int64_t>::max());
    c.add(2, 2);
    CHECK(c.get(2) == 0);
    c.sub(2, std::numeric_limits<std::int64_t>::min());
    CHECK(c.get(2) == std::numeric_limits<std::int64_t>::min());
    CHECK(c.memory() > 3 * sizeof(std::int64_t));
  }
}

TEST_CASE("counters: size 0 and an index past the end are clear errors", "[counters]") {
  CHECK_THROWS_AS(otpp::counters(0), std::invalid_argument);
  for (auto opts : layouts) {
    otpp::counters c{2, opts};
    CHECK_THROWS_WITH(c.add(2, 1), "otpp::counters::add: index 2 past size 2");
    CHECK_THROWS_WITH(c.get(5), "otpp::counters::get: index 5 past size 2");
    CHECK_THROWS_WITH(c.put(2, 0), "otpp::counters::put: index 2 past size 2");
    CHECK_THROWS_WITH(c.sub(9, 1), "otpp::counters::sub: index 9 past size 2");
    CHECK(c.get(0) == 0);
    CHECK(c.get(1) == 0);
  }
}

TEST_CASE("stress: 4 threads add to their own counter and a shared one while a reader's sums never go down; totals exact",
          "[counters]") {
  constexpr int threads = 4;
  constexpr std::int64_t adds = 200'000;
  for (auto opts : layouts) {
    INFO("write_concurrency " << opts.write_concurrency);
    otpp::counters c{threads + 1, opts};
    std::atomic<bool> done{false};
    std::atomic<int> went_down{0};
    std::thread reader([&] {
      std::vector<std::int64_t> last(threads + 1, 0);
      while (!done.load()) {
        for (std::size_t i = 0; i <= threads; ++i) {
          const std::int64_t now = c.get(i);
          if (now < last[i]) ++went_down;
          last[i] = now;
        }
      }
    });
    std::vector<std::thread> writers;
    for (int t = 0; t < threads; ++t) {
      writers.emplace_back([&, t] {
        for (std::int64_t k = 0; k < adds; ++k) {
          c.add(static_cast<std::size_t>(t), 1);
          c.add(threads, 2);
        }
      });
    }
    for (auto& w : writers) w.join();  // finished threads' adds still count
    done = true;
    reader.join();
    CHECK(went_down == 0);
    for (int t = 0; t < threads; ++t) CHECK(c.get(static_cast<std::size_t>(t)) == adds);
    CHECK(c.get(threads) == 2 * threads * adds);
  }
}

TEST_CASE("write_concurrency: one thread adding to six counters in turn (more than it keeps at hand) counts each exactly",
          "[counters]") {
  std::vector<otpp::counters> many;
  for (int i = 0; i < 6; ++i) many.emplace_back(1, otpp::counters_options{.write_concurrency = true});
  for (int round = 0; round < 1000; ++round)
    for (std::size_t i = 0; i < many.size(); ++i) many[i].add(0, static_cast<std::int64_t>(i + 1));
  for (std::size_t i = 0; i < many.size(); ++i) CHECK(many[i].get(0) == 1000 * static_cast<std::int64_t>(i + 1));
  // A counters made where others died (perhaps at one's address) is new:
  // this thread's rows of the dead ones are not taken for its own.
  many.clear();
  otpp::counters fresh{1, {.write_concurrency = true}};
  CHECK(fresh.get(0) == 0);
  fresh.add(0, 1);
  CHECK(fresh.get(0) == 1);
}

TEST_CASE("stress: 64 processes on 2 workers add as they move between workers; the total is exact", "[counters]") {
  for (auto opts : layouts) {
    INFO("write_concurrency " << opts.write_concurrency);
    otpp::runtime rt{{.workers = 2}};
    otpp::counters c{1, opts};
    std::vector<otpp::server<adder>> adders;
    for (int i = 0; i < 64; ++i) adders.push_back(rt.start<adder>(c).value());
    std::int64_t expected = 0;
    for (std::int64_t round = 1; round <= 200; ++round) {
      for (auto& a : adders) otpp::cast(a, adder::add{round});
      expected += 64 * round;
    }
    for (auto& a : adders) CHECK(otpp::call(a, adder::flush{}));
    CHECK(c.get(0) == expected);
    for (auto& a : adders) otpp::stop(a);
  }
}

TEST_CASE("stress: handlers add in a loop around blocking calls that move them between workers; the total is exact",
          "[counters]") {
  for (auto opts : layouts) {
    INFO("write_concurrency " << opts.write_concurrency);
    otpp::runtime rt{{.workers = 2}};
    otpp::counters c{1, opts};
    const auto peer = rt.start<slow_peer>().value();
    std::vector<otpp::server<hopping_adder>> hoppers;
    for (int i = 0; i < 16; ++i) hoppers.push_back(rt.start<hopping_adder>(c).value());
    constexpr int rounds = 200;
    // Batches until enough adds have run after a move (how many moves a
    // batch sees depends on the scheduling): without moves this checks nothing.
    int hops = 0;
    std::int64_t expected = 0;
    for (int batch = 0; batch < 50 && hops < 20; ++batch) {
      std::vector<std::thread> callers;
      std::atomic<int> batch_hops{0};
      for (auto& h : hoppers)
        callers.emplace_back([&, h] { batch_hops += otpp::call(h, hopping_adder::run{peer, rounds}, std::chrono::seconds{60}); });
      for (auto& t : callers) t.join();
      hops += batch_hops.load();
      expected += std::int64_t{16} * rounds;
      REQUIRE(c.get(0) == expected);
    }
    INFO(hops << " adds ran on another thread than the one before them");
    CHECK(hops >= 20);
    for (auto& h : hoppers) otpp::stop(h);
    otpp::stop(peer);
  }
}
