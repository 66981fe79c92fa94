// Mailbox stress through the public API: many threads and processes casting
// to one server, with per-sender sequence checks.

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"

namespace {

class sink : public otpp::gen_server<sink> {
 public:
  struct item {
    unsigned sender;
    std::uint64_t seq;
  };
  struct report {};
  struct stats {
    std::uint64_t received = 0;
    std::uint64_t lost_or_reordered = 0;
    std::vector<std::uint64_t> last;
  };
  explicit sink(unsigned senders) { stats_.last.assign(senders, 0); }
  void handle_cast(item i) {
    ++stats_.received;
    if (i.seq != stats_.last[i.sender] + 1) ++stats_.lost_or_reordered;
    stats_.last[i.sender] = i.seq;
  }
  stats handle_call(report) { return stats_; }

 private:
  stats stats_;
};

class relay : public otpp::gen_server<relay> {
 public:
  struct burst {
    otpp::server<sink> to;
    unsigned sender;
    std::uint64_t n;
    std::latch* done;
  };
  void handle_cast(burst b) {
    for (std::uint64_t i = 1; i <= b.n; ++i) otpp::cast(b.to, sink::item{b.sender, i});
    b.done->count_down();
  }
};

}  // namespace

TEST_CASE("8 threads x 250k casts to one server: nothing lost, duplicated or reordered") {
  constexpr unsigned senders = 8;
  constexpr std::uint64_t per = 250'000;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<sink>(senders).value();
  std::latch start{senders};
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < senders; ++t) {
    ts.emplace_back([&, t] {
      start.arrive_and_wait();
      for (std::uint64_t i = 1; i <= per; ++i) otpp::cast(s, sink::item{t, i});
    });
  }
  for (auto& t : ts) t.join();
  auto st = otpp::call(s, sink::report{});  // a call after the casts flushes them
  CHECK(st.received == senders * per);
  CHECK(st.lost_or_reordered == 0);
  for (auto l : st.last) CHECK(l == per);
}

TEST_CASE("processes and threads casting at once, with calls interleaved") {
  constexpr unsigned procs = 16;
  constexpr unsigned threads = 2;
  constexpr std::uint64_t per = 20'000;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<sink>(procs + threads).value();
  std::latch done{procs};
  std::vector<otpp::server<relay>> rs;
  for (unsigned i = 0; i < procs; ++i) rs.push_back(rt.start<relay>().value());
  for (unsigned i = 0; i < procs; ++i) otpp::cast(rs[i], relay::burst{s, i, per, &done});
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (std::uint64_t i = 1; i <= per; ++i) {
        otpp::cast(s, sink::item{procs + t, i});
        if (i % 1000 == 0) (void)otpp::call(s, sink::report{});
      }
    });
  }
  for (auto& t : ts) t.join();
  done.wait();
  auto st = otpp::call(s, sink::report{});
  CHECK(st.received == (procs + threads) * per);
  CHECK(st.lost_or_reordered == 0);
}

TEST_CASE("messages racing a server's death are discarded without leaks") {
  otpp::runtime rt{{.workers = 2}};
  for (int round = 0; round < 200; ++round) {
    auto s = rt.start<sink>(1u).value();
    std::thread t{[&] {
      for (std::uint64_t i = 1; i <= 500; ++i) otpp::cast(s, sink::item{0, i});
    }};
    auto r = otpp::try_stop(s);
    t.join();
    CHECK(r);
    CHECK_FALSE(s.alive());
    CHECK(otpp::try_call(s, sink::report{}).error().kind() == otpp::exit_kind::noproc);
  }
}
