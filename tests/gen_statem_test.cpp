// otpp::gen_statem: OTP's gen_statem event semantics through the public
// API — state handlers, calls and replies, postpone, inserted events, enter
// calls, the three kinds of timeouts (on a virtual clock), stop, crashes,
// and order under many senders.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <otpp/gen_statem.hpp>
#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

using otpp_test::journal;

// How the test machines write an event down: its type (and a generic
// timeout's name).
template <class Kind>
std::string label(const Kind& k) {
  if constexpr (std::is_same_v<Kind, otpp::cast_event>) return "cast";
  if constexpr (std::is_same_v<Kind, otpp::info_event>) return "info";
  if constexpr (std::is_same_v<Kind, otpp::internal_event>) return "internal";
  if constexpr (std::is_same_v<Kind, otpp::timeout_event>) return "timeout";
  if constexpr (std::is_same_v<Kind, otpp::state_timeout_event>) return "state_timeout";
  if constexpr (std::is_same_v<Kind, otpp::generic_timeout_event>) return "generic " + std::string{k.name};
  return "?";
}

struct idle {};
struct busy {
  int job = 0;
  bool operator==(const busy&) const = default;
};

// A machine that writes down every event it handles, for order checks.
class recorder : public otpp::gen_statem<recorder, idle, busy> {
 public:
  struct work {
    int job;
  };
  struct done {};
  struct only_busy {};
  struct note {
    std::string text;
  };
  struct where {
    using reply_type = std::string;
  };
  struct arm {  // sets timeouts from a cast, as the test says
    std::string kind;
    std::chrono::milliseconds after;
    std::string text;
  };
  struct flush {
    using reply_type = void;
  };

  explicit recorder(std::shared_ptr<journal> j) : j_{std::move(j)} {}

  transition init() {
    j_->add("init");
    return keep_state();
  }

  void handle_event(idle&, otpp::enter_event) { j_->add("enter idle"); }
  void handle_event(busy& b, otpp::enter_event) { j_->add("enter busy " + std::to_string(b.job)); }

  transition handle_event(idle&, otpp::cast_event, const work& w) {
    j_->add("idle: work " + std::to_string(w.job));
    return next_state(busy{w.job});
  }
  transition handle_event(busy&, otpp::cast_event, const work& w) {
    j_->add("busy: postpone work " + std::to_string(w.job));
    return keep_state(postpone());
  }
  transition handle_event(idle&, otpp::cast_event, done) {
    j_->add("idle: postpone done");
    return keep_state(postpone());
  }
  void handle_event(busy&, otpp::cast_event, only_busy) {}
  transition handle_event(busy& b, otpp::cast_event, done) {
    j_->add("busy: done " + std::to_string(b.job));
    return next_state(idle{});
  }
  template <class S, class Kind>
    requires(!std::is_same_v<Kind, otpp::enter_event>)
  void handle_event(S&, const Kind& k, const note& n) {
    j_->add(label(k) + " " + n.text);
  }
  template <class S>
  transition handle_event(S&, otpp::cast_event, const arm& a) {
    j_->add("arm " + a.kind + " " + a.text);
    if (a.kind == "state") return keep_state(state_timeout(a.after, note{a.text}));
    if (a.kind == "event") return keep_state(event_timeout(a.after, note{a.text}));
    if (a.kind == "cancel state") return keep_state(cancel_state_timeout());
    if (a.kind == "update state") return keep_state(update_state_timeout(note{a.text}));
    return keep_state(generic_timeout(a.kind, a.after, note{a.text}));
  }
  template <class S>
  transition handle_event(S&, otpp::call_event<std::string> c, const where&) {
    return keep_state(reply(c, std::is_same_v<S, idle> ? "idle" : "busy"));
  }
  template <class S>
  transition handle_event(S&, otpp::call_event<void> c, flush) {
    return keep_state(reply(c));
  }

 private:
  std::shared_ptr<journal> j_;
};

// Sets a timeout and waits until the machine is idle again (the virtual
// clock must not move before the timer is armed). No call: a call is an
// event, and would cancel an event timeout.
void arm(otpp_test::virtual_runtime& f, const otpp::server<recorder>& m, recorder::arm a) {
  otpp::cast(m, std::move(a));
  f.clock->settle();
}

std::vector<std::string> tail(const std::vector<std::string>& v, std::size_t from) {
  return {v.begin() + static_cast<std::ptrdiff_t>(std::min(from, v.size())), v.end()};
}

}  // namespace

TEST_CASE("gen_statem: the first state is entered at start; calls and casts reach the current state's handlers") {
  auto j = std::make_shared<journal>();
  auto m = otpp::start<recorder>(j).value();
  CHECK(otpp::call(m, recorder::where{}) == "idle");
  otpp::cast(m, recorder::work{1});
  CHECK(otpp::call(m, recorder::where{}) == "busy");
  otpp::cast(m, recorder::done{});
  CHECK(otpp::call(m, recorder::where{}) == "idle");
  CHECK(j->get() == std::vector<std::string>{"init", "enter idle", "idle: work 1", "enter busy 1", "busy: done 1", "enter idle"});
  otpp::stop(m);
}

TEST_CASE("gen_statem: a sys::get_state visitor reads the current state beside the data; format_state names it") {
  auto j = std::make_shared<journal>();
  auto m = otpp::start<recorder>(j).value();
  auto state_of = [&] {
    return otpp::sys::get_state(m, [](const recorder& r) {
             const auto* b = std::get_if<busy>(&r.state());
             return b != nullptr ? "busy " + std::to_string(b->job) : std::string{"idle"};
           }).value();
  };
  CHECK(state_of() == "idle");
  const std::string idle_label = otpp::sys::format_state(m.pid()).value().value();  // no formatter: the state's type
  CHECK(idle_label.starts_with("state "));
  CHECK(idle_label.ends_with("idle"));
  otpp::cast(m, recorder::work{7});
  CHECK(state_of() == "busy 7");  // behind the cast: the machine has taken it
  CHECK(otpp::sys::format_state(m.pid()).value().value().ends_with("busy"));
  otpp::cast(m, recorder::done{});
  CHECK(state_of() == "idle");
  otpp::stop(m);
}

TEST_CASE("gen_statem: postponed events are retried oldest first after a state change, before newer ones") {
  auto j = std::make_shared<journal>();
  auto m = otpp::start<recorder>(j).value();
  otpp::cast(m, recorder::work{1});
  otpp::cast(m, recorder::work{2});  // postponed in busy
  otpp::cast(m, recorder::work{3});  // postponed in busy
  otpp::cast(m, recorder::note{"a"});
  otpp::cast(m, recorder::done{});  // busy -> idle: work 2 is retried (-> busy), work 3 postponed again
  otpp::cast(m, recorder::note{"b"});
  otpp::call(m, recorder::flush{});
  CHECK(tail(j->get(), 2) == std::vector<std::string>{"idle: work 1", "enter busy 1", "busy: postpone work 2",
                                                      "busy: postpone work 3", "cast a", "busy: done 1", "enter idle",
                                                      "idle: work 2", "enter busy 2", "busy: postpone work 3", "cast b"});
  otpp::cast(m, recorder::done{});
  otpp::call(m, recorder::flush{});
  CHECK(tail(j->get(), 13) == std::vector<std::string>{"busy: done 2", "enter idle", "idle: work 3", "enter busy 3"});
  otpp::stop(m);
}

namespace {
// next_event: inserted events go first, in order, ahead of postponed ones.
struct s0 {};
struct s1 {};
class inserter : public otpp::gen_statem<inserter, s0, s1> {
 public:
  struct go {};
  struct later {};
  struct item {
    int n;
  };
  struct log {
    using reply_type = std::vector<std::string>;
  };
  transition handle_event(s0&, otpp::cast_event, later) {
    seen_.push_back("postpone later");
    return keep_state(postpone());
  }
  transition handle_event(s0&, otpp::cast_event, go) {
    seen_.push_back("go");
    return next_state(s1{}, next_event(otpp::internal_event{}, item{1}), next_event(otpp::internal_event{}, item{2}));
  }
  template <class S>
  void handle_event(S&, otpp::internal_event, const item& i) {
    seen_.push_back("item " + std::to_string(i.n));
  }
  // Four actions: two beyond the ones a transition keeps inline.
  struct burst {
    using reply_type = int;
  };
  template <class S>
  transition handle_event(S&, otpp::call_event<int> c, burst) {
    seen_.push_back("burst");
    return keep_state(next_event(otpp::internal_event{}, item{3}), next_event(otpp::internal_event{}, item{4}),
                      reply(c, 34), next_event(otpp::internal_event{}, item{5}));
  }
  void handle_event(s1&, otpp::cast_event, later) { seen_.push_back("later"); }
  void handle_event(s1&, otpp::enter_event) { seen_.push_back("enter s1"); }
  template <class S>
  transition handle_event(S&, otpp::call_event<std::vector<std::string>> c, log) {
    return keep_state(reply(c, seen_));
  }

 private:
  std::vector<std::string> seen_;
};
}  // namespace

TEST_CASE("gen_statem: inserted events run first in their order, then the retried postponed ones, then the mailbox") {
  auto m = otpp::start<inserter>().value();
  otpp::cast(m, inserter::later{});
  otpp::cast(m, inserter::go{});
  CHECK(otpp::call(m, inserter::log{}) ==
        std::vector<std::string>{"postpone later", "go", "enter s1", "item 1", "item 2", "later"});
  otpp::stop(m);
}

namespace {
// Postponed events of plain data keep every byte: a machine keeps them
// word by word (12 bytes, 48 bytes: the largest kept inline).
class keeper : public otpp::gen_statem<keeper, s0, s1> {
 public:
  struct odd {
    int a, b, c;
  };
  struct wide {
    long v[6];
  };
  struct open {};
  struct log {
    using reply_type = std::vector<long>;
  };
  transition handle_event(s0&, otpp::cast_event, const odd&) { return keep_state(postpone()); }
  transition handle_event(s0&, otpp::cast_event, const wide&) { return keep_state(postpone()); }
  transition handle_event(s0&, otpp::cast_event, open) { return next_state(s1{}); }
  void handle_event(s1&, otpp::cast_event, const odd& o) { seen_.insert(seen_.end(), {o.a, o.b, o.c}); }
  void handle_event(s1&, otpp::cast_event, const wide& w) { seen_.insert(seen_.end(), std::begin(w.v), std::end(w.v)); }
  void handle_event(s1&, otpp::cast_event, open) {}
  template <class S>
  transition handle_event(S&, otpp::call_event<std::vector<long>> c, log) {
    return keep_state(reply(c, seen_));
  }

 private:
  std::vector<long> seen_;
};
}  // namespace

TEST_CASE("gen_statem: postponed events of plain data come back whole") {
  auto m = otpp::start<keeper>().value();
  otpp::cast(m, keeper::odd{1, 2, 3});
  otpp::cast(m, keeper::wide{{10, 11, 12, 13, 14, 15}});
  otpp::cast(m, keeper::odd{4, 5, 6});
  otpp::cast(m, keeper::open{});
  CHECK(otpp::call(m, keeper::log{}) == std::vector<long>{1, 2, 3, 10, 11, 12, 13, 14, 15, 4, 5, 6});
  otpp::stop(m);
}

TEST_CASE("gen_statem: a transition with more actions than it keeps inline carries them all out, in order") {
  auto m = otpp::start<inserter>().value();
  CHECK(otpp::call(m, inserter::burst{}) == 34);
  CHECK(otpp::call(m, inserter::log{}) == std::vector<std::string>{"burst", "item 3", "item 4", "item 5"});
  otpp::stop(m);
}

namespace {
// Enter calls: repeat_state runs it again, next_state to an equal state does
// not; an enter call may not postpone.
struct counting {
  int n = 0;
  bool operator==(const counting&) const = default;
};
class enters : public otpp::gen_statem<enters, counting> {
 public:
  struct same {};     // next_state to an equal state
  struct bump {};     // next_state to a different value of the same type
  struct again {};    // repeat_state
  struct count {
    using reply_type = int;
  };
  struct bad {};      // makes the next enter call postpone
  transition handle_event(counting& c, otpp::enter_event) {
    ++entered_;
    if (bad_) return keep_state(postpone());
    (void)c;
    return keep_state();
  }
  transition handle_event(counting& c, otpp::cast_event, same) { return next_state(counting{c.n}); }
  transition handle_event(counting& c, otpp::cast_event, bump) { return next_state(counting{c.n + 1}); }
  transition handle_event(counting&, otpp::cast_event, again) { return repeat_state(); }
  transition handle_event(counting&, otpp::cast_event, bad) {
    bad_ = true;
    return repeat_state();
  }
  transition handle_event(counting&, otpp::call_event<int> c, count) { return keep_state(reply(c, entered_)); }

 private:
  int entered_ = 0;
  bool bad_ = false;
};
}  // namespace

TEST_CASE("gen_statem: enter calls for the first state, a changed state and repeat_state; an enter that postpones crashes") {
  auto m = otpp::start<enters>().value();
  CHECK(otpp::call(m, enters::count{}) == 1);  // the first state
  otpp::cast(m, enters::same{});
  CHECK(otpp::call(m, enters::count{}) == 1);  // an equal state: no change
  otpp::cast(m, enters::bump{});
  CHECK(otpp::call(m, enters::count{}) == 2);  // same type, other value: a change
  otpp::cast(m, enters::again{});
  CHECK(otpp::call(m, enters::count{}) == 3);
  otpp_test::log_capture logs;
  otpp::exit_watch w{m.pid()};
  otpp::cast(m, enters::bad{});
  auto r = w.wait(5s);
  REQUIRE(r);
  CHECK(fmt::format("{}", *r).find("bad_state_enter_return") != std::string::npos);
}

TEST_CASE("gen_statem: state timeout fires in its state, is cancelled by a state change, belongs to the new state when set during one") {
  otpp_test::virtual_runtime f;
  auto j = std::make_shared<journal>();
  auto m = f.rt.start<recorder>(j).value();
  arm(f, m, recorder::arm{"state", 10s, "t1"});
  f.clock->advance(9s);
  CHECK_FALSE(j->has("state_timeout t1"));
  f.clock->advance(1s);
  CHECK(j->has("state_timeout t1"));

  arm(f, m, recorder::arm{"state", 10s, "t2"});
  otpp::cast(m, recorder::work{1});  // idle -> busy: t2 is cancelled
  otpp::call(m, recorder::flush{});
  f.clock->advance(20s);
  CHECK_FALSE(j->has("state_timeout t2"));

  arm(f, m, recorder::arm{"state", 10s, "t3"});
  arm(f, m, recorder::arm{"state", 20s, "t4"});  // re-set: restarts with the new time and message
  f.clock->advance(15s);
  CHECK_FALSE(j->has("state_timeout t3"));
  CHECK_FALSE(j->has("state_timeout t4"));
  f.clock->advance(5s);
  CHECK(j->has("state_timeout t4"));

  arm(f, m, recorder::arm{"state", 10s, "t5"});
  arm(f, m, recorder::arm{"update state", 0s, "t5'"});  // same time, new message
  arm(f, m, recorder::arm{"state", 10s, "t6"});
  arm(f, m, recorder::arm{"cancel state", 0s, ""});
  f.clock->advance(30s);
  CHECK_FALSE(j->has("state_timeout t5"));
  CHECK_FALSE(j->has("state_timeout t6"));
  arm(f, m, recorder::arm{"state", 10s, "t7"});
  arm(f, m, recorder::arm{"update state", 0s, "t7'"});
  f.clock->advance(10s);
  CHECK(j->has("state_timeout t7'"));
  CHECK_FALSE(j->has("state_timeout t7"));
  otpp::stop(m);
}

TEST_CASE("gen_statem: a zero timeout runs after the events already queued and before later messages") {
  otpp_test::virtual_runtime f;
  auto j = std::make_shared<journal>();
  auto m = f.rt.start<recorder>(j).value();
  arm(f, m, recorder::arm{"state", 0s, "zero"});
  otpp::cast(m, recorder::note{"after"});
  otpp::call(m, recorder::flush{});
  auto got = j->get();
  auto at = [&](const std::string& e) { return std::find(got.begin(), got.end(), e) - got.begin(); };
  CHECK(at("state_timeout zero") < at("cast after"));
  CHECK(at("arm state zero") < at("state_timeout zero"));
  otpp::stop(m);
}

TEST_CASE("gen_statem: the event timeout is cancelled by any event, and fires when none comes") {
  otpp_test::virtual_runtime f;
  auto j = std::make_shared<journal>();
  auto m = f.rt.start<recorder>(j).value();
  arm(f, m, recorder::arm{"event", 10s, "e1"});
  f.clock->advance(5s);
  otpp::cast(m, recorder::note{"x"});  // an event: e1 is cancelled
  f.clock->settle();
  f.clock->advance(10s);
  CHECK_FALSE(j->has("timeout e1"));
  arm(f, m, recorder::arm{"event", 10s, "e2"});
  f.clock->advance(10s);
  CHECK(j->has("timeout e2"));
  // Re-armed on every event, further and further: one timer on the service, not one per arming.
  for (int i = 0; i < 100; ++i) otpp::cast(m, recorder::arm{"event", 10s, "e3"});
  otpp::call(m, recorder::flush{});
  f.clock->settle();
  CHECK(f.rt.timer_count() <= 2);
  otpp::stop(m);
}

TEST_CASE("gen_statem: generic timeouts are independent by name; setting one again restarts it") {
  otpp_test::virtual_runtime f;
  auto j = std::make_shared<journal>();
  auto m = f.rt.start<recorder>(j).value();
  arm(f, m, recorder::arm{"a", 10s, "1"});
  arm(f, m, recorder::arm{"b", 20s, "2"});
  otpp::cast(m, recorder::work{1});  // a state change does not touch generic timeouts
  otpp::call(m, recorder::flush{});
  f.clock->advance(10s);
  CHECK(j->has("generic a 1"));
  CHECK_FALSE(j->has("generic b 2"));
  arm(f, m, recorder::arm{"b", 20s, "3"});  // restarts b at 30 s
  f.clock->advance(10s);
  CHECK_FALSE(j->has("generic b 2"));
  f.clock->advance(10s);
  CHECK(j->has("generic b 3"));
  otpp::stop(m);
}

namespace {
struct closed {};
struct opened {};
// stop and stop_and_reply; a postponed call fails with the exit reason.
class valve : public otpp::gen_statem<valve, closed, opened> {
 public:
  struct ask {
    using reply_type = int;
  };
  struct shut {
    using reply_type = std::string;
  };
  struct boom {};
  struct pending {
    using reply_type = int;
  };
  explicit valve(std::shared_ptr<std::atomic<int>> terminated) : terminated_{std::move(terminated)} {}
  transition handle_event(closed&, otpp::call_event<int>, ask) {
    ++postponed_;
    return keep_state(postpone());
  }
  transition handle_event(closed&, otpp::call_event<int> c, pending) { return keep_state(reply(c, postponed_)); }
  transition handle_event(closed&, otpp::call_event<std::string> c, shut) {
    return stop_and_reply(otpp::exit_reason::shutdown("closed for good"), reply(c, "bye"));
  }
  transition handle_event(closed&, otpp::cast_event, boom) { throw std::runtime_error("valve burst"); }
  void terminate(const otpp::exit_reason&) { terminated_->fetch_add(1); }

 private:
  std::shared_ptr<std::atomic<int>> terminated_;
  int postponed_ = 0;
};
}  // namespace

TEST_CASE("gen_statem: stop_and_reply replies then terminates; a postponed call fails with the exit reason at once") {
  auto terminated = std::make_shared<std::atomic<int>>(0);
  auto v = otpp::start<valve>(terminated).value();
  std::atomic<bool> failed{false};
  otpp::exit_reason why;
  std::thread asker{[&] {
    auto r = otpp::try_call(v, valve::ask{}, 30s);  // postponed forever
    if (!r) why = r.error();
    failed = !r.has_value();
  }};
  REQUIRE(otpp_test::eventually([&] { return otpp::call(v, valve::pending{}) == 1; }));  // the ask waits, postponed
  otpp::exit_watch w{v.pid()};
  CHECK(otpp::call(v, valve::shut{}) == "bye");
  REQUIRE(w.wait(5s));
  asker.join();
  CHECK(failed.load());
  CHECK(why == otpp::exit_reason::shutdown("closed for good"));
  CHECK(terminated->load() == 1);
}

TEST_CASE("gen_statem: a throwing handler crashes the machine; the report names the event and the state") {
  otpp_test::log_capture logs;
  auto terminated = std::make_shared<std::atomic<int>>(0);
  auto v = otpp::start<valve>(terminated).value();
  otpp::exit_watch w{v.pid()};
  otpp::cast(v, valve::boom{});
  auto r = w.wait(5s);
  REQUIRE(r);
  CHECK(fmt::format("{}", *r).find("valve burst") != std::string::npos);
  CHECK(logs.contains("boom (cast in state"));
  CHECK(terminated->load() == 1);
}

TEST_CASE("gen_statem: an event the current state has no handler for crashes, naming it; a caller gets the reason") {
  otpp_test::log_capture logs;
  auto j = std::make_shared<journal>();
  auto m = otpp::start<recorder>(j).value();
  otpp::exit_watch w{m.pid()};
  otpp::cast(m, recorder::only_busy{});
  auto r = w.wait(5s);
  REQUIRE(r);
  const std::string reason = fmt::format("{}", *r);
  CHECK(reason.find("unhandled event: cast") != std::string::npos);
  CHECK(reason.find("only_busy") != std::string::npos);
  CHECK(reason.find("idle") != std::string::npos);
}

namespace {
// Alternates ready/working on every job; postpones jobs while working and
// finishes while ready: whatever the interleaving, each sender's jobs must
// run in the order sent.
struct ready {};
struct working {};
class sequencer : public otpp::gen_statem<sequencer, ready, working> {
 public:
  struct job {
    int sender;
    int seq;
  };
  struct finish {};
  struct ran {
    using reply_type = std::vector<job>;
  };
  transition handle_event(ready&, otpp::cast_event, const job& j) {
    ran_.push_back(j);
    return next_state(working{});
  }
  transition handle_event(working&, otpp::cast_event, const job&) { return keep_state(postpone()); }
  transition handle_event(working&, otpp::cast_event, finish) { return next_state(ready{}); }
  transition handle_event(ready&, otpp::cast_event, finish) { return keep_state(postpone()); }
  template <class S>
  transition handle_event(S&, otpp::call_event<std::vector<job>> c, ran) {
    return keep_state(reply(c, ran_));
  }

 private:
  std::vector<job> ran_;
};
}  // namespace

TEST_CASE("gen_statem: many senders, postpones and state changes: each sender's events run in its order, none lost or doubled") {
  auto m = otpp::start<sequencer>().value();
  constexpr int senders = 4;
  constexpr int each = 2000;
  std::vector<std::thread> ts;
  for (int s = 0; s < senders; ++s)
    ts.emplace_back([&, s] {
      for (int i = 0; i < each; ++i) {
        otpp::cast(m, sequencer::job{s, i});
        otpp::cast(m, sequencer::finish{});
      }
    });
  for (auto& t : ts) t.join();
  const auto ran = otpp::call(m, sequencer::ran{}, 30s);
  std::vector<int> next(senders, 0);
  int out_of_order = 0;
  for (const auto& j : ran) {
    if (j.seq != next[static_cast<std::size_t>(j.sender)]) ++out_of_order;
    next[static_cast<std::size_t>(j.sender)] = j.seq + 1;
  }
  CHECK(out_of_order == 0);
  CHECK(ran.size() == static_cast<std::size_t>(senders * each));
  otpp::stop(m);
}

namespace {
// A machine the test scripts: each `step` carries what the handler returns,
// built with the (re-exported) transition and action functions.
struct alpha {};
struct beta {};
class probe : public otpp::gen_statem<probe, alpha, beta> {
 public:
  using gen_statem::cancel_event_timeout;
  using gen_statem::cancel_generic_timeout;
  using gen_statem::event_timeout;
  using gen_statem::generic_timeout;
  using gen_statem::hibernate;
  using gen_statem::keep_state;
  using gen_statem::next_event;
  using gen_statem::next_state;
  using gen_statem::postpone;
  using gen_statem::repeat_state;
  using gen_statem::reply;
  using gen_statem::state_timeout;
  using gen_statem::stop_and_reply;
  using gen_statem::update_event_timeout;

  struct step {
    std::function<transition(probe&)> fn;
  };
  struct ask {  // a call the script answers (or postpones, or keeps)
    using reply_type = std::string;
    std::function<transition(probe&, otpp::call_event<std::string>)> fn;
  };
  struct mark {
    std::string text;
  };
  struct log {
    using reply_type = std::vector<std::string>;
  };

  template <class S>
  transition handle_event(S&, otpp::cast_event, step& s) {
    return s.fn(*this);
  }
  template <class S>
  transition handle_event(S&, otpp::call_event<std::string> c, ask& a) {
    return a.fn(*this, c);
  }
  template <class S, class Kind>
    requires(!std::is_same_v<Kind, otpp::enter_event>)
  void handle_event(S&, const Kind& k, const mark& m) {
    seen.push_back(label(k) + " " + m.text + " in " + name<S>());
  }
  void handle_event(alpha&, otpp::enter_event) { seen.push_back("enter alpha"); }
  void handle_event(beta&, otpp::enter_event) { seen.push_back("enter beta"); }
  template <class S>
  transition handle_event(S&, otpp::call_event<std::vector<std::string>> c, log) {
    return keep_state(reply(c, seen));
  }

  template <class S>
  static std::string name() {
    return std::is_same_v<S, alpha> ? "alpha" : "beta";
  }
  std::vector<std::string> seen;
  std::optional<otpp::reply_to<std::string>> kept;
};

std::vector<std::string> seen_by(const otpp::server<probe>& p) { return otpp::call(p, probe::log{}); }

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }
}  // namespace

TEST_CASE("gen_statem: next_event of cast and info kinds run as such, before the mailbox; a transition takes any number of actions") {
  auto p = otpp::start<probe>().value();
  otpp::cast(p, probe::step{[](probe&) {
               return probe::keep_state(probe::next_event(otpp::cast_event{}, probe::mark{"c"}),
                                        probe::next_event(otpp::info_event{}, probe::mark{"i"}),
                                        probe::next_event(otpp::cast_event{}, probe::mark{"c2"}),
                                        probe::next_event(otpp::info_event{}, probe::mark{"i2"}));
             }});
  otpp::send(p, probe::mark{"mailbox"});
  CHECK(seen_by(p) == std::vector<std::string>{"enter alpha", "cast c in alpha", "info i in alpha", "cast c2 in alpha",
                                               "info i2 in alpha", "info mailbox in alpha"});
  otpp::stop(p);
}

TEST_CASE("gen_statem: a reply listed after the actions a transition holds in place, or kept as a plain action, answers the same") {
  auto p = otpp::start<probe>().value();
  // Third in the list: past the actions the transition builds in place.
  CHECK(otpp::call(p, probe::ask{[](probe&, otpp::call_event<std::string> c) {
          return probe::keep_state(probe::next_event(otpp::internal_event{}, probe::mark{"one"}),
                                   probe::next_event(otpp::internal_event{}, probe::mark{"two"}), probe::reply(c, "third"));
        }}) == "third");
  // Held among plain actions first, as a handler that gathers its actions does.
  CHECK(otpp::call(p, probe::ask{[](probe&, otpp::call_event<std::string> c) {
          std::vector<probe::action> held;
          held.push_back(probe::reply(c, "from a vector"));
          held.push_back(probe::next_event(otpp::internal_event{}, probe::mark{"three"}));
          return probe::next_state(beta{}, std::move(held[0]), std::move(held[1]));
        }}) == "from a vector");
  CHECK(seen_by(p) == std::vector<std::string>{"enter alpha", "internal one in alpha", "internal two in alpha", "enter beta",
                                               "internal three in beta"});
  otpp::stop(p);
}

TEST_CASE("gen_statem: a kept call is answered later from another thread; stop_and_reply answers, then the machine exits") {
  auto p = otpp::start<probe>().value();
  std::string later;
  std::thread asker{[&] {
    later = otpp::call(p, probe::ask{[](probe& m, otpp::call_event<std::string> c) {
      m.kept = c.keep();  // no reply now
      return probe::keep_state();
    }});
  }};
  std::optional<otpp::reply_to<std::string>> kept;
  REQUIRE(otpp_test::eventually([&] {
    return otpp::call(p, probe::ask{[&kept](probe& m, otpp::call_event<std::string> c) {
             if (m.kept) kept = std::exchange(m.kept, std::nullopt);
             return probe::keep_state(probe::reply(c, kept ? "taken" : "not yet"));
           }}) == "taken";
  }));
  std::thread other{[&] { kept->reply("later, from another thread"); }};
  other.join();
  asker.join();
  CHECK(later == "later, from another thread");
  otpp::exit_watch w{p.pid()};
  CHECK(otpp::call(p, probe::ask{[](probe&, otpp::call_event<std::string> c) {
          return probe::stop_and_reply(otpp::exit_reason::shutdown("done"), probe::reply(c, "bye"));
        }}) == "bye");
  auto r = w.wait(5s);
  REQUIRE(r);
  CHECK(*r == otpp::exit_reason::shutdown("done"));
}

TEST_CASE("gen_statem: absolute timeouts; update_event_timeout; a cancelled generic timeout never fires") {
  otpp_test::virtual_runtime f;
  auto p = f.rt.start<probe>().value();
  const auto t0 = f.rt.now();
  otpp::cast(p, probe::step{[t0](probe&) {
               return probe::keep_state(probe::state_timeout(t0 + 30s, probe::mark{"abs"}),
                                        probe::generic_timeout("g", 10s, probe::mark{"g"}));
             }});
  f.clock->settle();
  otpp::cast(p, probe::step{[](probe&) { return probe::keep_state(probe::cancel_generic_timeout("g")); }});
  f.clock->settle();
  f.clock->advance(29s);
  CHECK_FALSE(contains(seen_by(p), "state_timeout abs in alpha"));
  CHECK_FALSE(contains(seen_by(p), "generic g g in alpha"));
  f.clock->advance(1s);
  CHECK(contains(seen_by(p), "state_timeout abs in alpha"));

  otpp::cast(p, probe::step{[](probe&) {
               return probe::keep_state(probe::event_timeout(10s, probe::mark{"old"}), probe::update_event_timeout(probe::mark{"new"}));
             }});
  f.clock->settle();
  f.clock->advance(10s);
  const auto seen = seen_by(p);
  CHECK(contains(seen, "timeout new in alpha"));
  CHECK_FALSE(contains(seen, "timeout old in alpha"));
  otpp::stop(p);
}

TEST_CASE("gen_statem: an event timeout set with an event queued never starts; a zero one runs before the mailbox") {
  otpp_test::virtual_runtime f;
  auto p = f.rt.start<probe>().value();
  otpp::cast(p, probe::step{[](probe&) {
               return probe::keep_state(probe::next_event(otpp::internal_event{}, probe::mark{"queued"}),
                                        probe::event_timeout(5s, probe::mark{"never"}));
             }});
  f.clock->settle();
  f.clock->advance(10s);
  CHECK_FALSE(contains(seen_by(p), "timeout never in alpha"));
  otpp::cast(p, probe::step{[](probe&) { return probe::keep_state(probe::event_timeout(0s, probe::mark{"zero"})); }});
  otpp::send(p, probe::mark{"after"});
  auto seen = seen_by(p);
  auto at = [&](const std::string& e) { return std::find(seen.begin(), seen.end(), e) - seen.begin(); };
  REQUIRE(contains(seen, "timeout zero in alpha"));
  CHECK(at("timeout zero in alpha") < at("info after in alpha"));
  otpp::stop(p);
}

TEST_CASE("gen_statem: event timeouts and other actions on it act in list order; one kept as a plain action acts the same") {
  otpp_test::virtual_runtime f;
  auto p = f.rt.start<probe>().value();
  auto arm_then_wait = [&](std::function<probe::transition(probe&)> fn) {
    otpp::cast(p, probe::step{std::move(fn)});
    f.clock->settle();
    f.clock->advance(10s);
  };
  arm_then_wait([](probe&) { return probe::keep_state(probe::event_timeout(5s, probe::mark{"then cancelled"}), probe::cancel_event_timeout()); });
  arm_then_wait([](probe&) { return probe::keep_state(probe::cancel_event_timeout(), probe::event_timeout(5s, probe::mark{"set after a cancel"})); });
  arm_then_wait([](probe&) { return probe::keep_state(probe::event_timeout(5s, probe::mark{"old"}), probe::update_event_timeout(probe::mark{"updated"})); });
  arm_then_wait([](probe&) { return probe::keep_state(probe::event_timeout(5s, probe::mark{"first"}), probe::event_timeout(7s, probe::mark{"second"})); });
  arm_then_wait([](probe&) {
    probe::action a = probe::event_timeout(5s, probe::mark{"plain action"});
    return probe::keep_state(std::move(a));
  });
  arm_then_wait([](probe&) { return probe::keep_state(probe::event_timeout(5s, probe::mark{"infinity comes later"}), probe::event_timeout(otpp::infinity, probe::mark{"x"})); });
  CHECK(seen_by(p) == std::vector<std::string>{"enter alpha", "timeout set after a cancel in alpha", "timeout updated in alpha",
                                               "timeout second in alpha", "timeout plain action in alpha"});
  otpp::stop(p);
}

TEST_CASE("gen_statem: postponed events wait through repeat_state and a next_state to the same state; a change retries them") {
  auto p = otpp::start<probe>().value();
  otpp::cast(p, probe::step{[](probe&) { return probe::keep_state(probe::postpone()); }});  // this step is postponed
  otpp::cast(p, probe::step{[](probe&) { return probe::repeat_state(); }});
  otpp::cast(p, probe::step{[](probe&) { return probe::next_state(alpha{}); }});
  auto seen = seen_by(p);
  CHECK(seen == std::vector<std::string>{"enter alpha", "enter alpha"});  // the repeat ran the enter call again
  // The postponed step runs again on the change to beta: it postpones itself again.
  otpp::cast(p, probe::step{[](probe&) { return probe::next_state(beta{}, probe::next_event(otpp::internal_event{}, probe::mark{"inserted"})); }});
  seen = seen_by(p);
  CHECK(std::vector<std::string>(seen.begin() + 2, seen.end()) == std::vector<std::string>{"enter beta", "internal inserted in beta"});
  otpp::stop(p);
}

TEST_CASE("gen_statem: under a supervisor, a crashed machine is restarted in its first state") {
  otpp_test::log_capture logs;
  auto sup = otpp::start<otpp::supervisor>(std::vector<otpp::child_spec>{otpp::child<probe>(otpp::name("probe_machine"))},
                                           otpp::supervisor_flags{})
                 .value();
  auto first = otpp::whereis<probe>("probe_machine");
  REQUIRE(first);
  otpp::cast(first, probe::step{[](probe&) { return probe::next_state(beta{}); }});
  CHECK(seen_by(first).back() == "enter beta");
  otpp::cast(first, probe::step{[](probe&) -> probe::transition { throw std::runtime_error("scripted crash"); }});
  const otpp::pid again = otpp::testing::await_child(sup, "probe_machine", first.pid());
  auto second = otpp::server_cast<probe>(again).value();
  CHECK(seen_by(second) == std::vector<std::string>{"enter alpha"});
  CHECK(logs.contains("scripted crash"));
  otpp::stop(sup);
}

namespace {
// Re-arms its event timeout on every poke; writes down which arming fired,
// and when. On the real clock.
struct waiting {};
class rearming : public otpp::gen_statem<rearming, waiting> {
 public:
  struct poke {
    int k;
  };
  struct hold {
    otpp_test::gate* g;
  };
  struct quiet {
    int k;
  };
  struct fired {
    using reply_type = std::vector<int>;
  };
  struct fire_times {
    std::mutex m;
    std::vector<std::chrono::steady_clock::time_point> at;
  };
  rearming(std::chrono::milliseconds after, std::shared_ptr<fire_times> times) : after_{after}, times_{std::move(times)} {}
  transition handle_event(waiting&, otpp::cast_event, poke p) { return keep_state(event_timeout(after_, quiet{p.k})); }
  void handle_event(waiting&, otpp::cast_event, hold h) { h.g->wait(); }
  void handle_event(waiting&, otpp::timeout_event, quiet q) {
    fired_.push_back(q.k);
    std::lock_guard lock{times_->m};
    times_->at.push_back(std::chrono::steady_clock::now());
  }
  // A call is an event: it cancels the event timeout, so tests ask only once it fired.
  transition handle_event(waiting&, otpp::call_event<std::vector<int>> c, fired) { return keep_state(reply(c, fired_)); }

 private:
  std::chrono::milliseconds after_;
  std::shared_ptr<fire_times> times_;
  std::vector<int> fired_;
};

// Waits (bounded) until the machine's event timeout has fired `n` times; returns the times.
std::vector<std::chrono::steady_clock::time_point> await_fired(rearming::fire_times& t, std::size_t n) {
  (void)otpp_test::eventually([&] {
    std::lock_guard lock{t.m};
    return t.at.size() >= n;
  });
  std::lock_guard lock{t.m};
  return t.at;
}
}  // namespace

TEST_CASE("gen_statem: on the real clock a burst of re-armings leaves one timer, which fires its full delay after the last event") {
  otpp::runtime rt{{.workers = 2}};
  auto times = std::make_shared<rearming::fire_times>();
  auto m = rt.start<rearming>(40ms, times).value();
  otpp_test::gate g;
  otpp::cast(m, rearming::hold{&g});
  for (int k = 0; k < 1000; ++k) otpp::cast(m, rearming::poke{k});
  const auto released = std::chrono::steady_clock::now();
  g.release();
  const auto at = await_fired(*times, 1);
  REQUIRE(at.size() == 1);
  CHECK(at[0] - released >= 40ms);  // counted from the last poke at the earliest, never from an earlier one
  CHECK(otpp::call(m, rearming::fired{}) == std::vector<int>{999});
  CHECK(rt.timer_count() <= 1);
  otpp::stop(m);
}

TEST_CASE("gen_statem: an event timeout re-armed while an earlier arming's timer message waits behind it still runs its full delay") {
  otpp::runtime rt{{.workers = 2}};
  auto times = std::make_shared<rearming::fire_times>();
  auto m = rt.start<rearming>(30ms, times).value();
  otpp::cast(m, rearming::poke{1});  // armed once the mailbox runs dry: a timer 30 ms out
  REQUIRE(otpp_test::eventually([&] { return rt.timer_count() == 1; }));
  otpp_test::gate g;
  otpp::cast(m, rearming::hold{&g});  // an event: poke 1's timeout is off, its timer still runs
  otpp::cast(m, rearming::poke{2});   // queued ahead of that timer's message
  // The timer comes due and its message queues behind poke 2.
  REQUIRE(otpp_test::eventually([&] { return rt.timer_count() == 0; }));
  const auto released = std::chrono::steady_clock::now();
  g.release();
  const auto at = await_fired(*times, 1);
  REQUIRE(at.size() == 1);
  CHECK(at[0] - released >= 30ms);  // poke 2's full delay, not poke 1's deadline
  CHECK(otpp::call(m, rearming::fired{}) == std::vector<int>{2});
  otpp::stop(m);
}

namespace {
struct calm {};
struct wary {};
// Sets its event timeout from the enter call of `wary`.
class watchful : public otpp::gen_statem<watchful, calm, wary> {
 public:
  struct alarm {};
  struct relax {};
  struct seen {
    using reply_type = std::vector<std::string>;
  };
  void handle_event(calm&, otpp::enter_event) {}
  transition handle_event(wary&, otpp::enter_event) { return keep_state(event_timeout(5s, relax{})); }
  transition handle_event(calm&, otpp::cast_event, alarm) { return next_state(wary{}); }
  transition handle_event(wary&, otpp::timeout_event, relax) {
    seen_.push_back("relaxed");
    return next_state(calm{});
  }
  template <class S>
  transition handle_event(S&, otpp::call_event<std::vector<std::string>> c, seen) {
    return keep_state(reply(c, seen_));
  }

 private:
  std::vector<std::string> seen_;
};
}  // namespace

TEST_CASE("gen_statem: an event timeout set by an enter call is armed after the transition, and fires") {
  otpp_test::virtual_runtime f;
  auto m = f.rt.start<watchful>().value();
  otpp::cast(m, watchful::alarm{});
  f.clock->settle();
  f.clock->advance(4s);
  f.clock->settle();
  f.clock->advance(2s);  // 6 s since the enter call, with no event between
  CHECK(otpp::call(m, watchful::seen{}) == std::vector<std::string>{"relaxed"});
  otpp::stop(m);
}
