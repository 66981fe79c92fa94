// Timers on the real clock: many timers, none early, none lost; cancels from
// many threads racing the firing thread (each timer fires or is cancelled,
// never both, never neither). Run under TSan by CI.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

struct fired {
  std::uint32_t id;
  steady::time_point earliest;  // no delivery may come before this
};

// Counts deliveries per id; answers `wait_for` once `n` have arrived.
class collector : public otpp::gen_server<collector> {
 public:
  struct wait_for {
    using reply_type = bool;
    std::size_t n;
  };
  struct counts {};
  struct early {};

  explicit collector(std::size_t ids) : counts_(ids, 0) {}

  void handle_info(fired f) {
    if (steady::now() < f.earliest) ++early_;
    ++counts_.at(f.id);
    ++total_;
    if (waiter_ && total_ >= want_) {
      waiter_->reply(true);
      waiter_.reset();
    }
  }
  void handle_call(wait_for w, otpp::reply_to<bool> to) {
    if (total_ >= w.n) {
      to.reply(true);
      return;
    }
    want_ = w.n;
    waiter_ = std::move(to);
  }
  std::vector<int> handle_call(counts) { return counts_; }
  int handle_call(early) { return early_; }

 private:
  std::vector<int> counts_;
  std::size_t total_ = 0;
  std::size_t want_ = 0;
  int early_ = 0;
  std::optional<otpp::reply_to<bool>> waiter_;
};

// Sets a burst of timers from inside a process, as a server re-arming many
// deadlines does: while the timer service is busy taking them, it reads
// their start itself. Counts the refs that read more time left than their
// whole delay.
class burst_setter : public otpp::gen_server<burst_setter> {
 public:
  struct set {
    using reply_type = int;
    otpp::server<collector> to;
    std::uint32_t n;
  };
  int handle_call(set s) {
    std::mt19937 rng{11};
    std::uniform_int_distribution<int> delay_us{0, 30'000};
    int over = 0;
    for (std::uint32_t i = 0; i < s.n; ++i) {
      const auto d = std::chrono::microseconds(delay_us(rng));
      auto ref = otpp::send_after(s.to, fired{i, steady::now() + d}, d);
      const auto left = otpp::read_timer(ref);
      if (left && *left > d) ++over;
    }
    return over;
  }
};

// Waits until `n` timers have arrived, then checks each id came exactly
// once and none came early.
void check_all_fired_once(const otpp::server<collector>& c, std::uint32_t n) {
  REQUIRE(otpp::call(c, collector::wait_for{n}, 60s));
  CHECK(otpp::call(c, collector::early{}) == 0);
  auto counts = otpp::call(c, collector::counts{});
  CHECK(std::all_of(counts.begin(), counts.end(), [](int k) { return k == 1; }));
}

// What a cancel race left: how many were cancelled, how many refs still
// read or cancel as live, how many ids arrived other than once-if-not-
// cancelled, and how many arrived early.
struct race_outcome {
  std::size_t cancelled = 0;
  std::size_t live = 0;
  std::size_t wrong = 0;
  int early = 0;
};

// `threads` plain threads each set `per_thread` timers (delays 0..max_us
// µs, seeded by `seed`) and cancel some: after setting its i-th timer a
// thread calls `after_set(i, cancel)`, and once done `after_all(cancel)`,
// where cancel(j) cancels its own j-th timer once and records whether that
// stopped it. Then waits for every timer not cancelled and settles the rest.
template <class AfterSet, class AfterAll>
race_outcome race_cancels(std::uint32_t threads, std::uint32_t per_thread, std::uint32_t seed, int max_us,
                          AfterSet after_set, AfterAll after_all) {
  otpp::runtime rt{{.workers = 2}};
  const std::uint32_t n = threads * per_thread;
  auto c = rt.start<collector>(std::size_t{n}).value();
  std::vector<otpp::timer_ref> refs(n);
  std::vector<char> cancelled(n, 0);
  std::vector<std::thread> workers;
  for (std::uint32_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937 rng{seed + t};
      std::uniform_int_distribution<int> delay_us{0, max_us};
      const std::uint32_t base = t * per_thread;
      auto cancel = [&](std::uint32_t j) {
        if (!cancelled[base + j]) cancelled[base + j] = otpp::cancel_timer(refs[base + j]).has_value() ? 1 : 0;
      };
      for (std::uint32_t i = 0; i < per_thread; ++i) {
        const auto d = std::chrono::microseconds(delay_us(rng));
        refs[base + i] = otpp::send_after(c, fired{base + i, steady::now() + d}, d);
        after_set(i, cancel);
      }
      after_all(cancel);
    });
  }
  for (auto& w : workers) w.join();
  race_outcome out;
  out.cancelled = static_cast<std::size_t>(std::count(cancelled.begin(), cancelled.end(), 1));
  INFO("cancelled " << out.cancelled << " of " << n);
  REQUIRE(otpp::call(c, collector::wait_for{n - out.cancelled}, 30s));
  // Every timer is settled now: fired (delivered) or cancelled.
  for (auto& r : refs) {
    if (otpp::read_timer(r)) ++out.live;
    if (otpp::cancel_timer(r)) ++out.live;  // a second cancel finds nothing either
  }
  auto counts = otpp::call(c, collector::counts{});
  for (std::uint32_t i = 0; i < n; ++i) {
    if (counts[i] != (cancelled[i] ? 0 : 1)) ++out.wrong;
  }
  out.early = otpp::call(c, collector::early{});
  return out;
}

}  // namespace

TEST_CASE("a burst of timers set inside a process: none early, none lost, none reads more than its delay",
          "[timer][real_clock]") {
  otpp::runtime rt{{.workers = 2}};
  constexpr std::uint32_t n = 50'000;
  auto c = rt.start<collector>(std::size_t{n}).value();
  auto setter = rt.start<burst_setter>().value();
  CHECK(otpp::call(setter, burst_setter::set{c, n}, 60s) == 0);
  check_all_fired_once(c, n);
}

TEST_CASE("timers of a second and more start from the coarse clock and still never fire early", "[timer][real_clock]") {
  // 256 kernel ticks or more (a second at 250 Hz): the start is the coarse
  // clock at the call plus four ticks, not a read of the exact clock.
  otpp::runtime rt{{.workers = 2}};
  constexpr std::uint32_t n = 200;
  auto c = rt.start<collector>(std::size_t{n}).value();
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto d = 1050ms + std::chrono::milliseconds(i % 100);
    otpp::send_after(c, fired{i, steady::now() + d}, d);
  }
  check_all_fired_once(c, n);
}

namespace {
std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch()).count();
}

using otpp_test::holder;

// Times its awaited calls to the holder, from just before each is sent.
class timed_caller : public otpp::gen_server<timed_caller> {
 public:
  struct warm {};  // calls that are answered, until the timer service publishes stamps
  struct wait_held {
    std::chrono::milliseconds timeout;
    std::chrono::milliseconds other_first;  // awaited only after another held call of this timeout
  };
  timed_caller(otpp::server<holder> h, const otpp::detail::timer_service* svc) : h_{std::move(h)}, svc_{svc} {}

  otpp::async<int> handle_call(warm) {
    int n = 0;
    for (const auto until = steady::now() + 10s; !svc_->stamps_live() && steady::now() < until; ++n)
      co_await otpp::async_call(h_, holder::ping{});
    co_return n;
  }
  otpp::async<std::int64_t> handle_call(wait_held w) {
    const auto t0 = steady::now();
    auto call = otpp::async_try_call(h_, holder::hold{}, w.timeout);
    if (w.other_first > 0ms) (void)co_await otpp::async_try_call(h_, holder::hold{}, w.other_first);
    auto r = co_await call;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0).count();
    co_return !r && r.error() == otpp::exit_reason::timeout() ? ms : -1;
  }

 private:
  otpp::server<holder> h_;
  const otpp::detail::timer_service* svc_;
};
}  // namespace

TEST_CASE("timer service stamps: each starts no later than a read of it and ends no sooner; they stop once unread",
          "[timer][real_clock][stress]") {
  otpp::runtime rt{{.workers = 1}};
  auto& svc = otpp::detail::runtime_access::core(rt).timers();
  // The service's thread starts with the first timer (a call's deadline).
  auto c = rt.start<collector>(std::size_t{1}).value();
  auto far = otpp::send_after(c, fired{0, steady::now()}, 1h);
  constexpr std::int64_t delay = 2'000'000'000;
  struct read {
    std::int64_t before, after;
    otpp::detail::wait_due due;
  };
  // Two threads read at once, as calls on two workers do, until each has
  // seen a few stamps come and go.
  std::vector<std::vector<read>> reads(2);
  std::vector<std::thread> readers;
  for (auto& mine : reads) {
    readers.emplace_back([&svc, &mine] {
      std::uint64_t last = 0;
      int changes = 0;
      const std::int64_t give_up = now_ns() + 10'000'000'000;
      read prev{};
      bool prev_kept = true;
      for (std::uint64_t i = 0; changes < 4 && now_ns() < give_up; ++i) {
        const std::int64_t before = now_ns();
        const otpp::detail::wait_due d = svc.call_due(delay);
        const read r{before, now_ns(), d};
        // Kept: the first and last reads of each stamp (nearest its start
        // and its end), and one in 64 of the rest.
        const bool changed = d.stamp != last;
        if (changed && !prev_kept) mine.push_back(prev);
        prev_kept = changed || i % 64 == 0;
        if (prev_kept) mine.push_back(r);
        prev = r;
        if (changed && d.stamp != 0) ++changes;
        last = d.stamp;
      }
    });
  }
  for (auto& t : readers) t.join();
  for (const auto& mine : reads) {
    REQUIRE(std::count_if(mine.begin(), mine.end(), [](const read& r) { return r.due.stamp != 0; }) > 0);
    for (const read& r : mine) {
      if (r.due.stamp == 0) {
        CHECK(r.due.ns >= r.before + delay);  // the clock's due: never early
        continue;
      }
      CHECK(r.due.ns == svc.stamp_start_ns(r.due.stamp) + delay);
      CHECK(svc.stamp_start_ns(r.due.stamp) <= r.after);
    }
  }
  // Unread, the stamps stop: every one read has ended, and no end is
  // before a read of its stamp.
  REQUIRE(otpp_test::eventually([&] { return !svc.stamps_live(); }));
  for (const auto& mine : reads) {
    for (const read& r : mine) {
      if (r.due.stamp == 0) continue;
      const std::int64_t end = svc.stamp_end_ns(r.due.stamp, INT64_MAX);
      CHECK(end != -1);
      CHECK(end >= r.before);
      CHECK(end != INT64_MAX);  // its record is still kept
    }
  }
  // The next call reads the clock and starts them again.
  CHECK(svc.call_due(delay).stamp == 0);
  CHECK(otpp_test::eventually([&] { return svc.stamps_live(); }));
  CHECK(otpp::cancel_timer(far));
}

TEST_CASE("an awaited call of a second or more on the real clock times out no sooner than its timeout, counted "
          "from when it was sent", "[timer][real_clock]") {
  otpp::runtime rt{{.workers = 2}};
  const auto& svc = otpp::detail::runtime_access::core(rt).timers();
  auto h = rt.start<holder>().value();
  auto c = rt.start<timed_caller>(h, &svc).value();
  (void)otpp::call(c, timed_caller::warm{}, 30s);
  REQUIRE(svc.stamps_live());
  // Awaited at once, and awaited only after another call has timed out
  // (1.05 s): both time out 1.1 s after the send, not 1.1 s after the
  // other (2.15 s).
  const auto at_once = otpp::call(c, timed_caller::wait_held{1100ms, 0ms}, 30s);
  CHECK(at_once >= 1100);
  CHECK(at_once < 1900);
  const auto after_other = otpp::call(c, timed_caller::wait_held{1100ms, 1050ms}, 30s);
  CHECK(after_other >= 1100);
  CHECK(after_other < 1900);
}

TEST_CASE("the time left of a long timer and of a short one, on the real clock", "[timer][real_clock]") {
  // A second or more left is read from the coarse clock (a tick high at
  // most); less, from the exact clock. Neither ever reads above the delay
  // by more than the coarse start's four ticks and one more.
  otpp::runtime rt{{.workers = 2}};
  auto c = rt.start<collector>(std::size_t{2}).value();
  const auto slack = std::chrono::nanoseconds(5 * 20'000'000);  // five ticks at the slowest kernel tick (100 Hz)
  auto long_one = otpp::send_after(c, fired{0, steady::now() + 10s}, 10s);
  // Under 256 ticks at any kernel tick up to 1000 Hz.
  auto short_one = otpp::send_after(c, fired{1, steady::now() + 250ms}, 250ms);
  const auto long_read = otpp::read_timer(long_one);
  const auto short_left = otpp::cancel_timer(short_one);
  const auto long_left = otpp::cancel_timer(long_one);
  REQUIRE(long_read);
  REQUIRE(long_left);
  CHECK(*long_read > 9s);
  CHECK(*long_read <= 10s + slack);
  CHECK(*long_left <= *long_read + slack);
  CHECK(*long_left > 9s);
  if (short_left) {
    CHECK(*short_left > 0ns);
    CHECK(*short_left <= 250ms);
  } else {
    // This thread stalled past the deadline: then the timer fired.
    REQUIRE(otpp::call(c, collector::wait_for{1}, 30s));
  }
  CHECK_FALSE(otpp::read_timer(long_one));
}

TEST_CASE("10k timers with random delays all fire, none early", "[timer][real_clock]") {
  otpp::runtime rt{{.workers = 2}};
  constexpr std::uint32_t n = 10'000;
  auto c = rt.start<collector>(std::size_t{n}).value();
  std::mt19937 rng{7};
  std::uniform_int_distribution<int> delay_ms{0, 200};
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto d = std::chrono::milliseconds(delay_ms(rng));
    otpp::send_after(c, fired{i, steady::now() + d}, d);
  }
  check_all_fired_once(c, n);
}

TEST_CASE("cancels racing the timer thread: fired or cancelled, exactly one", "[timer][real_clock][stress]") {
  constexpr std::uint32_t per_thread = 5'000;
  const auto out = race_cancels(
      4, per_thread, 1, 3000,
      [](std::uint32_t i, auto& cancel) {
        // Cancel an earlier timer of ours, likely near its deadline.
        if (i >= 64 && (i % 2) == 0) cancel(i - 64);
      },
      [](auto& cancel) {
        // And the rest of the even ones, some of which fire meanwhile.
        for (std::uint32_t i = per_thread - 64; i < per_thread; i += 2) cancel(i);
      });
  CHECK(out.live == 0);
  CHECK(out.wrong == 0);
  CHECK(out.early == 0);
  CHECK(out.cancelled > 0);
}

TEST_CASE("cancels racing the service taking the timers: fired or cancelled, exactly one",
          "[timer][real_clock][stress]") {
  // A timer cancelled before the service takes it from its inbox is dropped
  // as it is taken; one cancelled after goes through a cancel stack linked
  // through the same field the inbox used. Cancelling at once, a few
  // timers later, or not at all hits both sides of that hand-over.
  constexpr std::uint32_t threads = 4;
  constexpr std::uint32_t per_thread = 20'000;
  const auto out = race_cancels(
      threads, per_thread, 100, 2000,
      [](std::uint32_t i, auto& cancel) {
        if (i % 3 == 0) cancel(i);
        if (i % 3 == 1 && i >= 8) cancel(i - 8);
      },
      [](auto&) {});
  CHECK(out.live == 0);
  CHECK(out.wrong == 0);
  CHECK(out.early == 0);
  CHECK(out.cancelled > threads * per_thread / 3);
}

TEST_CASE("many threads schedule intervals and cancel them", "[timer][real_clock][stress]") {
  otpp::runtime rt{{.workers = 2}};
  constexpr std::uint32_t threads = 4;
  auto c = rt.start<collector>(std::size_t{threads + 1}).value();
  std::vector<std::thread> workers;
  std::atomic<int> failures{0};
  for (std::uint32_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      auto ref = otpp::send_interval(c, fired{t, steady::time_point{}}, 1ms);
      for (int i = 0; i < 200; ++i) (void)otpp::read_timer(ref);
      if (!otpp::cancel_timer(ref)) failures.fetch_add(1);
      if (otpp::cancel_timer(ref)) failures.fetch_add(1);
      if (otpp::read_timer(ref)) failures.fetch_add(1);
    });
  }
  for (auto& w : workers) w.join();
  CHECK(failures.load() == 0);
  // After the cancels nothing more arrives: two flushes a while apart agree.
  auto before = otpp::call(c, collector::counts{});
  std::size_t total = 0;
  for (int k : before) total += static_cast<std::size_t>(k);
  // A marker 20 ms later: once it is in, later interval messages would be too.
  otpp::send_after(c, fired{threads, steady::time_point{}}, 20ms);
  REQUIRE(otpp::call(c, collector::wait_for{total + 1}, 5s));
  auto after = otpp::call(c, collector::counts{});
  CHECK(after[threads] == 1);
  for (std::uint32_t i = 0; i < threads; ++i) CHECK(after[i] == before[i]);
}

namespace {
// Arms a one-shot to itself and, when it arrives, reads and cancels that
// same timer: both must say it is gone, every time.
class self_timer : public otpp::gen_server<self_timer> {
 public:
  struct ring {};
  struct progress {};
  struct report {
    int rounds;
    int live_reads;
    int live_cancels;
  };
  using info_types = otpp::type_list<ring>;
  explicit self_timer(int rounds) : left_{rounds} {}
  void init() { ref_ = otpp::send_after(self(), ring{}, 0ms); }
  void handle_info(ring) {
    ++done_;
    if (otpp::read_timer(ref_)) ++live_reads_;
    if (otpp::cancel_timer(ref_)) ++live_cancels_;
    if (--left_ > 0) ref_ = otpp::send_after(self(), ring{}, std::chrono::microseconds(done_ % 3 * 50));
  }
  report handle_call(progress) const { return {done_, live_reads_, live_cancels_}; }

 private:
  otpp::timer_ref ref_;
  int left_;
  int done_ = 0;
  int live_reads_ = 0;
  int live_cancels_ = 0;
};
}  // namespace

TEST_CASE("a one-shot whose message is being handled reads and cancels as fired", "[timer][real_clock][stress]") {
  otpp::runtime rt{{.workers = 2}};
  constexpr int rounds = 3000;
  std::vector<otpp::server<self_timer>> procs;
  for (int i = 0; i < 4; ++i) procs.push_back(rt.start<self_timer>(rounds).value());
  const auto deadline = steady::now() + 60s;
  for (auto& p : procs) {
    self_timer::report r{};
    while (steady::now() < deadline) {
      r = otpp::call(p, self_timer::progress{});
      if (r.rounds == rounds) break;
      std::this_thread::yield();
    }
    CHECK(r.rounds == rounds);
    CHECK(r.live_reads == 0);
    CHECK(r.live_cancels == 0);
  }
}

namespace {
class sets_long_timer : public otpp::gen_server<sets_long_timer> {
 public:
  struct ring {};
  using info_types = otpp::type_list<ring>;
  void init() { ref_ = otpp::send_after(self(), ring{}, std::chrono::hours(1)); }
  void handle_info(ring) {}

 private:
  otpp::timer_ref ref_;
};

bool wait_for_timer_count(otpp::runtime& rt, std::size_t n) {
  const auto until = steady::now() + 20s;
  while (rt.timer_count() != n && steady::now() < until) std::this_thread::yield();
  return rt.timer_count() == n;
}
}  // namespace

TEST_CASE("timers of processes that exited give their memory back long before their deadline", "[timer][real_clock]") {
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::server<sets_long_timer>> procs;
  for (int i = 0; i < 20'000; ++i) procs.push_back(rt.start<sets_long_timer>().value());
  CHECK(wait_for_timer_count(rt, 20'000));
  for (std::size_t i = 0; i < procs.size(); i += 2) otpp::stop(procs[i]);  // half of them
  CHECK(wait_for_timer_count(rt, 10'000));
  for (std::size_t i = 1; i < procs.size(); i += 2) otpp::stop(procs[i]);
  CHECK(wait_for_timer_count(rt, 0));
}

TEST_CASE("the last few orphaned timers go too, without waiting for more exits", "[timer][real_clock]") {
  // Fewer exits than a sixteenth of the timers: the amortised sweep alone
  // would leave these until more processes exit, or until their deadline.
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::server<sets_long_timer>> procs;
  for (int i = 0; i < 4'000; ++i) procs.push_back(rt.start<sets_long_timer>().value());
  REQUIRE(wait_for_timer_count(rt, 4'000));
  for (std::size_t i = 0; i < 10; ++i) otpp::stop(procs[i]);
  CHECK(wait_for_timer_count(rt, 3'990));
}
