// Reentrant waits: a handler that waits with otpp::reentrant (or on a server
// with reentrant_handlers) lets its process handle other messages; plain
// waits still hold the process; an exit destroys every suspended frame.

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/reentrant.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

using otpp_test::journal;

// Answers `held` calls only when told to, in the order the test says.
class backend : public otpp::gen_server<backend> {
 public:
  struct held {
    using reply_type = int;
    int k;
  };
  struct answer {  // answers the held call for k; false if there is none
    int k;
  };
  struct held_count {};
  struct echo {
    int k;
  };

  void handle_call(held h, otpp::reply_to<int> r) { waiting_.push_back({h.k, std::move(r)}); }
  bool handle_call(answer a) {
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
      if (it->first != a.k) continue;
      (void)it->second.reply(a.k * 10);
      waiting_.erase(it);
      return true;
    }
    return false;
  }
  int handle_call(held_count) const { return static_cast<int>(waiting_.size()); }
  int handle_call(echo e) const { return e.k; }

 private:
  std::vector<std::pair<int, otpp::reply_to<int>>> waiting_;
};

// Sets a flag when destroyed: shows a coroutine frame went away.
struct frame_guard {
  std::shared_ptr<std::atomic<int>> gone;
  ~frame_guard() {
    if (gone) ++*gone;
  }
};

// Waits on the backend reentrantly, or plainly, as each request says.
class front : public otpp::gen_server<front> {
 public:
  struct reentrant_get {
    int k;
  };
  struct plain_get {
    int k;
  };
  struct ready_then_plain {  // a reentrant wait over at once, then a plain one
    int k;
    otpp::server<backend> dead;
  };
  struct guarded {
    int k;
    std::shared_ptr<std::atomic<int>> gone;
  };
  struct note {
    std::string text;
  };
  struct events {};
  struct ping {};

  front(otpp::server<backend> b, journal* j) : backend_{std::move(b)}, j_{j} {}

  otpp::async<int> handle_call(reentrant_get g) {
    log("start " + std::to_string(g.k));
    backend::held request{g.k};
    const int v = co_await otpp::reentrant(otpp::async_call(backend_, std::move(request), 10s));
    log("done " + std::to_string(g.k));
    co_return v;
  }
  otpp::async<int> handle_call(plain_get g) {
    log("plain start " + std::to_string(g.k));
    backend::held request{g.k};
    const int v = co_await otpp::async_call(backend_, std::move(request), 10s);
    log("plain done " + std::to_string(g.k));
    co_return v;
  }
  otpp::async<int> handle_call(ready_then_plain r) {
    auto gone = co_await otpp::reentrant(otpp::async_try_call(r.dead, backend::echo{1}));
    log(gone ? "dead answered" : "dead: " + gone.error().to_string());
    backend::held request{r.k};
    const int v = co_await otpp::async_call(backend_, std::move(request), 10s);
    log("plain done " + std::to_string(r.k));
    co_return v;
  }
  otpp::async<int> handle_call(guarded g) {
    frame_guard guard{g.gone};
    backend::held request{g.k};
    co_return co_await otpp::reentrant(otpp::async_call(backend_, std::move(request), otpp::infinity));
  }
  void handle_cast(note n) { log(std::move(n.text)); }
  std::vector<std::string> handle_call(events) const { return events_; }
  int handle_call(ping) const { return 1; }
  /// For sys::get_state, which reads the state while a plain wait holds the process.
  [[nodiscard]] const std::vector<std::string>& events_so_far() const { return events_; }

 private:
  void log(std::string e) {
    events_.push_back(e);
    if (j_) j_->add(std::move(e));
  }
  otpp::server<backend> backend_;
  journal* j_;
  std::vector<std::string> events_;
};

using otpp_test::eventually;

// Waits until the backend holds `n` calls (they reached it): a flush by call.
void await_held(const otpp::server<backend>& b, int n) {
  REQUIRE(eventually([&] { return otpp::call(b, backend::held_count{}) == n; }));
}

}  // namespace

TEST_CASE("a reentrant wait lets the process handle other calls and casts meanwhile") {
  otpp::runtime rt{{.workers = 2}};
  auto b = rt.start<backend>().value();
  auto f = rt.start<front>(b, nullptr).value();
  auto slow = otpp::async_call(f, front::reentrant_get{1});
  await_held(b, 1);
  otpp::cast(f, front::note{"cast while waiting"});
  CHECK(otpp::call(f, front::ping{}, 5s) == 1);  // answered while the handler waits
  CHECK(otpp::call(f, front::events{}) == std::vector<std::string>{"start 1", "cast while waiting"});
  CHECK(otpp::call(b, backend::answer{1}));
  CHECK(slow.get().value() == 10);
  CHECK(otpp::call(f, front::events{}) == std::vector<std::string>{"start 1", "cast while waiting", "done 1"});
}

TEST_CASE("reentrant handlers finish in the order their waits end, not the order they began") {
  otpp::runtime rt{{.workers = 2}};
  auto b = rt.start<backend>().value();
  auto f = rt.start<front>(b, nullptr).value();
  auto first = otpp::async_call(f, front::reentrant_get{1});
  auto second = otpp::async_call(f, front::reentrant_get{2});
  await_held(b, 2);  // both handlers are suspended at once
  CHECK(otpp::call(b, backend::answer{2}));
  CHECK(second.get().value() == 20);
  CHECK(otpp::call(b, backend::answer{1}));
  CHECK(first.get().value() == 10);
  CHECK(otpp::call(f, front::events{}) == std::vector<std::string>{"start 1", "start 2", "done 2", "done 1"});
}

TEST_CASE("a plain wait still holds the process, a reentrant handler's continuation included") {
  otpp::runtime rt{{.workers = 2}};
  auto b = rt.start<backend>().value();
  auto f = rt.start<front>(b, nullptr).value();
  auto re = otpp::async_call(f, front::reentrant_get{1});
  await_held(b, 1);
  auto plain = otpp::async_call(f, front::plain_get{2});
  await_held(b, 2);
  otpp::cast(f, front::note{"held back"});
  CHECK(otpp::call(b, backend::answer{1}));  // the reentrant one's answer is queued now...
  // ...but its handler may not run while the plain one waits. A sys request
  // queued behind it is handled (held back: the continuation) and reads the state.
  CHECK(otpp::sys::get_state(f, [](const front& s) { return s.events_so_far(); }).value() ==
        std::vector<std::string>{"start 1", "plain start 2"});
  CHECK(otpp::call(b, backend::answer{2}));
  CHECK(plain.get().value() == 20);
  CHECK(re.get().value() == 10);
  // The cast came before the answer that ended the reentrant wait: it goes first.
  CHECK(otpp::call(f, front::events{}) ==
        std::vector<std::string>{"start 1", "plain start 2", "plain done 2", "held back", "done 1"});
}

TEST_CASE("a reentrant wait that is over at once leaves the next plain wait plain") {
  otpp::runtime rt{{.workers = 2}};
  auto b = rt.start<backend>().value();
  auto dead = rt.start<backend>().value();
  otpp::stop(dead);
  auto f = rt.start<front>(b, nullptr).value();
  auto r = otpp::async_call(f, front::ready_then_plain{3, dead});
  await_held(b, 1);
  otpp::cast(f, front::note{"held back"});
  // The plain wait holds the process: the cast is taken and held, not run.
  CHECK(otpp::sys::get_state(f, [](const front& s) { return s.events_so_far(); }).value() ==
        std::vector<std::string>{"dead: noproc"});
  CHECK(otpp::call(b, backend::answer{3}));
  CHECK(r.get().value() == 30);
  CHECK(otpp::call(f, front::events{}) == std::vector<std::string>{"dead: noproc", "plain done 3", "held back"});
}

TEST_CASE("a process killed with reentrant handlers suspended frees every frame and fails every caller at once") {
  otpp::runtime rt{{.workers = 2}};
  auto b = rt.start<backend>().value();
  auto f = rt.start<front>(b, nullptr).value();
  auto gone = std::make_shared<std::atomic<int>>(0);
  std::vector<otpp::pending_try_call<int>> calls;
  for (int k = 0; k < 5; ++k) calls.push_back(otpp::async_try_call(f, front::guarded{k, gone}, otpp::infinity));
  await_held(b, 5);
  otpp_test::log_capture quiet;
  otpp::exit(f, otpp::exit_reason::kill());
  for (auto& c : calls) {
    auto r = c.get();
    REQUIRE_FALSE(r);
    CHECK(r.error() == otpp::exit_reason::killed());
  }
  CHECK(*gone == 5);
  for (int k = 0; k < 5; ++k) CHECK(otpp::call(b, backend::answer{k}));  // the replies go nowhere, harmlessly
}

namespace {

// A whole server opts in: waits in helpers and in when_all are reentrant too.
class fanout : public otpp::gen_server<fanout> {
 public:
  static constexpr bool reentrant_handlers = true;
  struct pair_sum {
    int a, b;
  };
  struct via_helper {
    int k;
  };
  struct ping {};

  explicit fanout(otpp::server<backend> b) : backend_{std::move(b)} {}

  otpp::async<int> handle_call(pair_sum p) {
    backend::held ra{p.a};
    backend::held rb{p.b};
    auto [x, y] = co_await otpp::when_all(otpp::async_call(backend_, std::move(ra), 10s),
                                           otpp::async_call(backend_, std::move(rb), 10s));
    co_return x + y;
  }
  otpp::async<int> handle_call(via_helper v) { co_return 1 + co_await fetch(v.k); }
  int handle_call(ping) const { return 7; }

 private:
  otpp::async<int> fetch(int k) {
    backend::held r{k};
    co_return co_await otpp::async_call(backend_, std::move(r), 10s);
  }
  otpp::server<backend> backend_;
};

}  // namespace

TEST_CASE("reentrant_handlers makes every wait of a server reentrant, in helpers and when_all too") {
  otpp::runtime rt{{.workers = 2}};
  auto b = rt.start<backend>().value();
  auto f = rt.start<fanout>(b).value();
  auto both = otpp::async_call(f, fanout::pair_sum{1, 2});
  auto helped = otpp::async_call(f, fanout::via_helper{3});
  await_held(b, 3);  // all three backend calls are out: neither handler held the process
  CHECK(otpp::call(f, fanout::ping{}, 5s) == 7);
  CHECK(otpp::call(b, backend::answer{3}));
  CHECK(helped.get().value() == 31);
  CHECK(otpp::call(b, backend::answer{2}));
  CHECK(otpp::call(b, backend::answer{1}));
  CHECK(both.get().value() == 30);
}

TEST_CASE("otpp::reentrant wraps a helper coroutine: the waits inside it are reentrant") {
  // Through reentrant(async<T>): fanout's helper, wrapped by a plain server.
  struct wrapper : otpp::gen_server<wrapper> {
    struct go {
      int k;
    };
    struct ping {};
    explicit wrapper(otpp::server<backend> b) : backend_{std::move(b)} {}
    otpp::async<int> handle_call(go g) { co_return co_await otpp::reentrant(fetch(g.k)); }
    int handle_call(ping) const { return 5; }
    otpp::async<int> fetch(int k) {
      backend::held r{k};
      co_return co_await otpp::async_call(backend_, std::move(r), 10s);
    }
    otpp::server<backend> backend_;
  };
  otpp::runtime rt{{.workers = 2}};
  auto b = rt.start<backend>().value();
  auto w = rt.start<wrapper>(b).value();
  auto a = otpp::async_call(w, wrapper::go{1});
  auto c = otpp::async_call(w, wrapper::go{2});
  await_held(b, 2);
  CHECK(otpp::call(w, wrapper::ping{}, 5s) == 5);
  CHECK(otpp::call(b, backend::answer{2}));
  CHECK(otpp::call(b, backend::answer{1}));
  CHECK(a.get().value() == 10);
  CHECK(c.get().value() == 20);
}

TEST_CASE("reentrant sleeps interleave on the runtime's clock") {
  struct sleeper : otpp::gen_server<sleeper> {
    struct nap {
      int ms;
    };
    otpp::async<int> handle_call(nap n) {
      co_await otpp::reentrant(otpp::sleep_for(std::chrono::milliseconds{n.ms}));
      order_.push_back(n.ms);
      co_return n.ms;
    }
    struct order {};
    std::vector<int> handle_call(order) const { return order_; }  // the wake-up order
    std::vector<int> order_;
  };
  otpp_test::virtual_runtime v;
  auto s = v.rt.start<sleeper>().value();
  auto a = otpp::async_call(s, sleeper::nap{30});
  auto b = otpp::async_call(s, sleeper::nap{10});
  auto c = otpp::async_call(s, sleeper::nap{20});
  // A call queued behind the three is answered once all three are asleep:
  // a flush; then the clock moves past every deadline.
  CHECK(otpp::call(s, sleeper::order{}).empty());
  v.clock->advance(40ms);
  CHECK(a.get().value() == 30);
  CHECK(b.get().value() == 10);
  CHECK(c.get().value() == 20);
  CHECK(otpp::call(s, sleeper::order{}) == std::vector<int>{10, 20, 30});
}

namespace {

// Answers at once, or after a short timer: replies race the waits' set-up.
class quick : public otpp::gen_server<quick> {
 public:
  struct twice {
    using reply_type = long;
    long v;
    bool later;
  };
  struct flush {};
  void handle_call(twice t, otpp::reply_to<long> r) {
    if (!t.later) {
      (void)r.reply(t.v * 2);
      return;
    }
    later_.push_back({t.v, std::move(r)});
    if (later_.size() == 1) (void)otpp::send_after(self(), flush{}, std::chrono::microseconds{200});
  }
  void handle_info(flush) {
    for (auto& [v, r] : later_) (void)r.reply(v * 2);
    later_.clear();
  }

 private:
  std::vector<std::pair<long, otpp::reply_to<long>>> later_;
};

// Forwards each request to a backend, in a reentrant wait or a plain one,
// and checks on every step that handlers never overlap and that nothing
// runs while a plain wait holds the process.
class checker : public otpp::gen_server<checker> {
 public:
  struct req {
    long v;
    bool plain;
    bool later;
  };
  struct violations {};
  explicit checker(std::vector<otpp::server<quick>> b) : backends_{std::move(b)} {}

  otpp::async<long> handle_call(req r) {
    step();
    quick::twice q{r.v, r.later};
    auto& b = backends_[static_cast<std::size_t>(r.v) % backends_.size()];
    long got = 0;
    if (r.plain) {
      plain_waiting_ = true;
      leave();
      got = co_await otpp::async_call(b, std::move(q), 10s);
      enter_own();
      plain_waiting_ = false;
    } else {
      max_suspended_ = std::max(max_suspended_, ++suspended_);
      leave();
      got = co_await otpp::reentrant(otpp::async_call(b, std::move(q), 10s));
      step();
      --suspended_;
    }
    leave();
    co_return got + 1;
  }
  int handle_call(violations) const { return violations_; }
  struct most_suspended {};
  int handle_call(most_suspended) const { return max_suspended_; }

 private:
  void step() {
    if (running_.exchange(true)) ++violations_;  // two handlers at once
    if (plain_waiting_) ++violations_;           // something ran while a plain wait held us
  }
  void enter_own() {  // the plain wait's own continuation
    if (running_.exchange(true)) ++violations_;
  }
  void leave() { running_ = false; }

  std::vector<otpp::server<quick>> backends_;
  std::atomic<bool> running_{false};
  bool plain_waiting_ = false;
  int suspended_ = 0;
  int max_suspended_ = 0;
  int violations_ = 0;
};

}  // namespace

TEST_CASE("stress: 16 clients x 400 calls through reentrant and plain waits; nothing lost, mixed up or overlapped") {
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::server<quick>> backends;
  for (int i = 0; i < 3; ++i) backends.push_back(rt.start<quick>().value());
  auto c = rt.start<checker>(backends).value();
  constexpr int clients = 16;
  constexpr int per_client = 400;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < per_client; ++i) {
        const long v = static_cast<long>(t) * 100000 + i;
        // Every client keeps a few calls in flight: reentrant waits overlap.
        auto a = otpp::async_try_call(c, checker::req{v, i % 7 == 0, i % 3 == 0}, 20s);
        auto b = otpp::async_try_call(c, checker::req{v + 50000, false, i % 2 == 0}, 20s);
        auto ra = a.get();
        auto rb = b.get();
        if (!ra || *ra != v * 2 + 1) ++wrong;
        if (!rb || *rb != (v + 50000) * 2 + 1) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
  CHECK(otpp::call(c, checker::violations{}) == 0);
  CHECK(otpp::call(c, checker::most_suspended{}) > 1);  // the waits did overlap
}
