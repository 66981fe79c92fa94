// otpp::pool<Worker> (poolboy's model): lending, overflow, waiting in line,
// timeouts that lose no worker, holders that die, workers that crash,
// transactions, supervision, telemetry, and many callers at once (no worker
// ever lent to two holders).

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/pool.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using otpp_test::eventually;

namespace {

class conn : public otpp::gen_server<conn> {
 public:
  struct query {
    int x;
  };
  explicit conn(int base) : base_{base} {}
  int handle_call(query q) { return base_ + q.x; }

 private:
  int base_;
};

using conn_pool = otpp::pool<conn>;

otpp::pool_stats stats(const otpp::server<conn_pool>& p) { return otpp::pool_status(p).value(); }

}  // namespace

TEST_CASE("pool: lends distinct workers, takes them back, and reports its counts") {
  otpp::runtime rt{{.workers = 2}};
  auto p = rt.start<conn_pool>(otpp::pool_options{.size = 2}, 100).value();
  auto a = otpp::checkout(p).value();
  auto b = otpp::checkout(p).value();
  CHECK(a.pid() != b.pid());
  CHECK(otpp::call(a, conn::query{1}) == 101);
  CHECK(stats(p).available == 0);
  CHECK(stats(p).checked_out == 2);
  otpp::checkin(p, a);
  otpp::checkin(p, a);  // twice: no effect
  CHECK(stats(p).available == 1);
  CHECK(stats(p).checked_out == 1);
  otpp::checkin(p, b);
  CHECK(stats(p).available == 2);
  CHECK_THROWS_AS(conn_pool(otpp::pool_options{.size = 0, .max_overflow = 0}, 1), std::invalid_argument);
}

TEST_CASE("pool: overflow workers are started when all are out and stopped when returned; beyond them, try_checkout is refused") {
  otpp::runtime rt{{.workers = 2}};
  auto p = rt.start<conn_pool>(otpp::pool_options{.size = 1, .max_overflow = 1}, 0).value();
  auto a = otpp::checkout(p).value();
  auto b = otpp::checkout(p).value();  // the overflow one
  CHECK(stats(p).overflow == 1);
  auto refused = otpp::try_checkout(p);
  REQUIRE(!refused);
  CHECK(refused.error() == otpp::exit_reason::error("full"));
  otpp::exit_watch watch{b.pid()};
  otpp::checkin(p, b);
  CHECK(watch.wait(60s).value() == otpp::exit_reason::shutdown());  // stopped, not kept
  CHECK(stats(p).overflow == 0);
  CHECK(stats(p).available == 0);
  otpp::checkin(p, a);
  CHECK(stats(p).available == 1);  // the base worker is kept
}

TEST_CASE("pool: a caller waits in line for a checkin; one that timed out is skipped and its worker not lost") {
  otpp::runtime rt{{.workers = 2}};
  auto p = rt.start<conn_pool>(otpp::pool_options{.size = 1}, 0).value();
  auto a = otpp::checkout(p).value();

  auto late = otpp::checkout(p, 20ms);  // nobody checks in within 20 ms
  REQUIRE(!late);
  CHECK(late.error().kind() == otpp::exit_kind::timeout);

  std::optional<otpp::server<conn>> got;
  std::thread waiter{[&] {
    auto w = otpp::checkout(p, 60s);
    if (w) got = *w;
  }};
  REQUIRE(eventually([&] { return stats(p).waiting == 2; }));  // the timed-out caller is still in line
  otpp::checkin(p, a);
  waiter.join();
  REQUIRE(got);
  CHECK(got->pid() == a.pid());  // the timed-out caller was skipped
  CHECK(stats(p).waiting == 0);
  otpp::checkin(p, *got);
  CHECK(stats(p).available == 1);
}

TEST_CASE("pool: a process that dies holding a worker gives it back") {
  otpp::runtime rt{{.workers = 2}};
  auto p = rt.start<conn_pool>(otpp::pool_options{.size = 2}, 0).value();
  auto t = otpp::task_async(rt, [p] {
    auto w = otpp::checkout(p).value();
    return w.pid();  // exits holding it
  });
  const otpp::pid held = otpp::await(t, 60s);
  REQUIRE(eventually([&] { return stats(p).available == 2; }));
  CHECK(stats(p).checked_out == 0);
  bool back = false;
  for (int i = 0; i < 2; ++i) back = back || otpp::checkout(p).value().pid() == held;
  CHECK(back);
}

TEST_CASE("pool: a crashed worker is replaced, whether it was out or free") {
  otpp::runtime rt{{.workers = 2}};
  auto p = rt.start<conn_pool>(otpp::pool_options{.size = 2}, 0).value();
  auto a = otpp::checkout(p).value();
  otpp::exit_watch watch{a.pid()};
  otpp::exit(a.pid(), otpp::exit_reason::kill());
  CHECK(watch.wait(60s).value().kind() == otpp::exit_kind::killed);
  REQUIRE(eventually([&] { return stats(p).available == 2; }));
  CHECK(stats(p).checked_out == 0);
  auto b = otpp::checkout(p).value();
  auto c = otpp::checkout(p).value();
  CHECK(b.pid() != a.pid());
  CHECK(c.pid() != a.pid());
  CHECK(otpp::call(b, conn::query{2}) == 2);
  otpp::checkin(p, b);
  otpp::exit_watch free_watch{b.pid()};
  otpp::exit(b.pid(), otpp::exit_reason::kill());  // a free one
  (void)free_watch.wait(60s);
  REQUIRE(eventually([&] { return stats(p).available == 1 && stats(p).checked_out == 1; }));
  otpp::checkin(p, c);
  CHECK(stats(p).available == 2);
}

TEST_CASE("pool: transaction gives the worker back, also when the function throws") {
  otpp::runtime rt{{.workers = 2}};
  auto p = rt.start<conn_pool>(otpp::pool_options{.size = 1}, 10).value();
  auto r = otpp::transaction(p, [](const otpp::server<conn>& c) { return otpp::call(c, conn::query{5}); });
  CHECK(r.value() == 15);
  CHECK(stats(p).available == 1);
  CHECK_THROWS_AS(otpp::transaction(p, [](const otpp::server<conn>&) -> int { throw std::runtime_error("boom"); }),
                  std::runtime_error);
  CHECK(stats(p).available == 1);
}

TEST_CASE("pool: runs as a supervised child and emits checkout telemetry with the wait") {
  otpp::runtime rt{{.workers = 2}};
  otpp::testing::telemetry_capture cap{otpp::pool_events::checkout, otpp::pool_events::exhausted};
  std::vector<otpp::child_spec> children{otpp::child<conn_pool>(otpp::name("pool_test.pool"), otpp::pool_options{.size = 1}, 0)};
  auto sup = rt.start<otpp::supervisor>(children, otpp::supervisor_flags{}).value();
  auto p = otpp::whereis<conn_pool>("pool_test.pool");
  REQUIRE(p.pid());
  auto a = otpp::checkout(p).value();
  REQUIRE(!otpp::try_checkout(p));
  otpp::checkin(p, a);
  (void)otpp::checkout(p).value();
  CHECK(eventually([&] { return cap.count(otpp::pool_events::checkout) == 2 && cap.count(otpp::pool_events::exhausted) == 1; }));
  otpp::stop(sup);
}

TEST_CASE("pool: many callers at once; a worker is never lent to two holders, and every transaction completes") {
  otpp::runtime rt{{.workers = 2}};
  auto p = rt.start<conn_pool>(otpp::pool_options{.size = 3, .max_overflow = 2}, 0).value();
  std::mutex m;
  std::set<otpp::pid> in_use;
  std::atomic<int> overlaps{0}, done{0};
  std::vector<std::thread> ts;
  for (int k = 0; k < 8; ++k) {
    ts.emplace_back([&] {
      for (int i = 0; i < 300; ++i) {
        auto r = otpp::transaction(
            p,
            [&](const otpp::server<conn>& c) {
              {
                std::lock_guard lock{m};
                if (!in_use.insert(c.pid()).second) ++overlaps;
              }
              const int v = otpp::call(c, conn::query{i});
              {
                std::lock_guard lock{m};
                in_use.erase(c.pid());
              }
              return v;
            },
            60s);
        if (r && *r == i) ++done;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(overlaps == 0);
  CHECK(done == 8 * 300);
  REQUIRE(eventually([&] { return stats(p).checked_out == 0; }));
  CHECK(stats(p).available == 3);  // the overflow workers went
  CHECK(stats(p).overflow == 0);
}
