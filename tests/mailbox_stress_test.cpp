// Mailbox stress through the public API: many threads and processes casting
// to one server, with per-sender sequence checks.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <latch>
#include <thread>
#include <vector>

#include <unistd.h>

#include <otpp/otpp.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

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

namespace {
long rss_bytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * sysconf(_SC_PAGESIZE);
}

class dam : public otpp::gen_server<dam> {
 public:
  struct hold {
    std::shared_ptr<std::latch> go;
  };
  struct load {
    char bytes[200];
  };
  struct count {};
  void handle_cast(hold h) { h.go->wait(); }
  void handle_cast(load) { ++n_; }
  long handle_call(count) { return n_; }

 private:
  long n_ = 0;
};
}  // namespace

TEST_CASE("after a mailbox backlog drains, the memory goes back to the system", "[memory]") {
  if (otpp::detail::address_sanitizer) return;  // every node is its own allocation there
#if defined(__SANITIZE_THREAD__)
  return;  // TSan's allocator keeps what it is given back: RSS says nothing about ours
#endif
  otpp::runtime rt{{.workers = 2}};
  auto d = rt.start<dam>().value();
  auto go = std::make_shared<std::latch>(1);
  const long before = rss_bytes();
  otpp::cast(d, dam::hold{go});
  constexpr long n = 1'000'000;  // about 230 MB of nodes
  for (long i = 0; i < n; ++i) otpp::cast(d, dam::load{});
  const long peak = rss_bytes();
  CHECK(peak - before > 150l << 20);
  go->count_down();
  CHECK(otpp::call(d, dam::count{}, 60s) == n);
  // Idle workers give fully free slabs back as they go to sleep.
  // The figure checked is the one the wait saw: reading RSS again after
  // the message below is built would count that message's own page.
  const auto until = std::chrono::steady_clock::now() + 20s;
  long after = rss_bytes();
  while (after - before > (peak - before) / 4 && std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();  // polling an outside effect (RSS)
    after = rss_bytes();
  }
  INFO("before " << before / 1024 << " KiB, peak " << peak / 1024 << " KiB, after " << after / 1024 << " KiB");
  CHECK(after - before <= (peak - before) / 4);
}
