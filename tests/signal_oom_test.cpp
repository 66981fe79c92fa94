// Links, monitors and exits when memory runs out. A process that exits
// while no allocation succeeds cannot make the signals its links and
// monitors are owed: it waits for memory and then sends them, and aborts
// the program only once memory has not come back for about 5 s (the BEAM
// aborts at once). A link or monitor is made whole, refused at once, or
// ended visibly on both sides: never kept by one side only.
//
// Built with OTPP_POOL_THROUGH_NEW=1, header-only: every node the runtime
// makes comes from the replaced operator new, which the test turns off.

#include <any>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "failing_new.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using otpp_test::failing_new::allocations_left;
using otpp_test::failing_new::never_on;
using otpp_test::failing_new::only_on;
using otpp_test::failing_new::refuse_once;
using otpp_test::failing_new::refused;

namespace {

/// Stops (normally) once the test opens its gate, which it does after
/// turning allocation off: the exit runs with no memory to be had.
struct gate {
  std::atomic<bool> entered{false};
  std::atomic<bool> open{false};
};
/// Keeps the receiver's worker until the gate opens (what comes meanwhile
/// queues behind it).
struct hold {
  gate* g;
  void wait() const {
    g->entered = true;
    g->entered.notify_one();
    g->open.wait(false);
  }
};

class gated : public otpp::gen_server<gated> {
 public:
  struct stop_when_open {
    gate* g;
  };
  void handle_cast(stop_when_open s) {
    s.g->entered = true;
    s.g->entered.notify_one();
    s.g->open.wait(false);
    stop();
  }
};

/// Answers pings; otherwise idle.
class plain : public otpp::gen_server<plain> {
 public:
  struct ping {
    using reply_type = int;
  };
  int handle_call(ping) { return 1; }
};

/// Records the DOWN and EXIT messages it gets.
class watcher : public otpp::gen_server<watcher> {
 public:
  struct watch {
    otpp::pid other;
  };
  struct link_to {
    otpp::pid other;
  };
  struct seen {
    using reply_type = std::string;
  };
  otpp::init_result init() {
    trap_exit();
    return {};
  }
  struct thread {
    using reply_type = std::thread::id;
  };
  // "refused" where this side could not be made.
  std::string handle_call(watch w) try {
    (void)otpp::monitor(w.other);
    return "made";
  } catch (const std::bad_alloc&) {
    return "refused";
  }
  std::string handle_call(link_to l) try {
    otpp::link(l.other);
    return "made";
  } catch (const std::bad_alloc&) {
    return "refused";
  }
  std::thread::id handle_call(thread) { return std::this_thread::get_id(); }
  void handle_cast(hold h) { h.wait(); }
  struct tick {};
  void handle_info(tick) { seen_ += "TICK;"; }
  std::string handle_call(seen) { return seen_; }
  void handle_info(const otpp::down& d) { seen_ += "DOWN " + d.reason.to_string() + ";"; }
  void handle_info(const otpp::exit_signal& e) { seen_ += "EXIT " + e.reason.to_string() + ";"; }

 private:
  std::string seen_;
};

using numbers = otpp::table<int, int>;

/// Takes tables passed to it, and says what it holds under key 1.
class keeper : public otpp::gen_server<keeper> {
 public:
  using info_types = otpp::type_list<otpp::table_transfer<numbers>>;
  struct held {
    using reply_type = int;
  };
  void handle_info(otpp::table_transfer<numbers> t) {
    table_ = t.table;
    data_ = std::any_cast<int>(t.data);
  }
  int handle_call(held) { return table_ ? table_->lookup(1).value_or(-1) + data_ : -1; }
  void handle_cast(hold h) { h.wait(); }

 private:
  std::optional<numbers> table_;
  int data_ = 0;
};

/// Owns a table whose heir is the keeper; stops when its gate opens.
class owner : public otpp::gen_server<owner> {
 public:
  explicit owner(otpp::pid heir) : heir_{std::move(heir)} {}
  otpp::init_result init() {
    auto t = numbers::create({.heir = heir_, .heir_data = std::any{100}});
    t.insert(1, 1);
    return {};
  }
  void handle_cast(gated::stop_when_open s) {
    s.g->entered = true;
    s.g->entered.notify_one();
    s.g->open.wait(false);
    stop();
  }

 private:
  otpp::pid heir_;
};

// Opens the gate with every allocation refused, waits until one has been
// refused, then gives memory back.
void open_without_memory(gate& g) {
  const long before = refused.load();
  allocations_left = 0;
  g.open = true;
  g.open.notify_one();
  // Nothing here allocates: the test thread only reads the count.
  while (refused.load() == before) std::this_thread::yield();
  allocations_left = -1;
}

// The target's exit runs with no memory until it has been refused some.
template <class Gated>
void exit_without_memory(const otpp::server<Gated>& target) {
  gate g;
  otpp::cast(target, gated::stop_when_open{&g});
  g.entered.wait(false);
  open_without_memory(g);
  // The gate outlives the handler that waited at it.
  CHECK(otpp_test::eventually([&] { return !target.alive(); }));
}

// Holds `receiver` at a gate and stops `exiting` meanwhile, with memory
// to spare: what the exit owes the receiver is made and waits behind the
// handler it is in. Then the receiver goes on with no memory until it
// has been refused some. The gate must outlive the runtime: the handler
// may still be reading it when this returns.
template <class Receiver, class Exiting>
void receive_without_memory(gate& g, const otpp::server<Receiver>& receiver, const otpp::server<Exiting>& exiting) {
  otpp::cast(receiver, hold{&g});
  g.entered.wait(false);
  otpp::stop(exiting);
  open_without_memory(g);
}

}  // namespace

TEST_CASE("a DOWN that cannot be made for want of memory is sent once memory is back") {
  otpp_test::log_capture logs;
  otpp::runtime rt{{.workers = 2}};
  auto target = rt.start<gated>().value();
  auto w = rt.start<watcher>().value();
  otpp::call(w, watcher::watch{target.pid()});
  exit_without_memory(target);
  CHECK(otpp_test::eventually([&] { return otpp::call(w, watcher::seen{}) == "DOWN normal;"; }));
  CHECK_FALSE(target.alive());
}

TEST_CASE("an exit signal that cannot be made for want of memory is sent once memory is back") {
  otpp_test::log_capture logs;
  otpp::runtime rt{{.workers = 2}};
  auto target = rt.start<gated>().value();
  auto w = rt.start<watcher>().value();
  otpp::call(w, watcher::link_to{target.pid()});
  exit_without_memory(target);
  CHECK(otpp_test::eventually([&] { return otpp::call(w, watcher::seen{}) == "EXIT normal;"; }));
}

TEST_CASE("a process that traps exits with no memory for the EXIT message gets it once memory is back") {
  otpp_test::log_capture logs;
  gate g;  // outlives the runtime
  otpp::runtime rt{{.workers = 2}};
  auto target = rt.start<gated>().value();
  auto w = rt.start<watcher>().value();
  otpp::call(w, watcher::link_to{target.pid()});
  receive_without_memory(g, w, target);  // turning the exit signal into a message finds no memory
  CHECK(otpp_test::eventually([&] { return otpp::call(w, watcher::seen{}) == "EXIT normal;"; }));
  CHECK(w.alive());
}

TEST_CASE("a table that cannot be passed to its heir for want of memory is passed once memory is back") {
  otpp_test::log_capture logs;
  otpp::runtime rt{{.workers = 2}};
  auto k = rt.start<keeper>().value();
  auto o = rt.start<owner>(k.pid()).value();
  exit_without_memory(o);
  CHECK(otpp_test::eventually([&] { return otpp::call(k, keeper::held{}) == 101; }));
}

TEST_CASE("an heir with no memory to record a table it is passed takes it once memory is back") {
  otpp_test::log_capture logs;
  gate g;  // outlives the runtime
  otpp::runtime rt{{.workers = 2}};
  auto k = rt.start<keeper>().value();
  auto o = rt.start<owner>(k.pid()).value();
  receive_without_memory(g, k, o);  // recording that it owns the table finds no memory
  CHECK(otpp_test::eventually([&] { return otpp::call(k, keeper::held{}) == 101; }));
}

TEST_CASE("a kill is not lost for want of memory to keep its reason in") {
  otpp::runtime rt{{.workers = 1}};
  auto probe = rt.start<watcher>().value();
  auto other = rt.start<plain>().value();  // no link, no monitor: it has no cold part yet
  only_on = otpp::call(probe, watcher::thread{});
  allocations_left = 0;
  otpp::exit(other.pid(), otpp::exit_reason::kill());  // the signal is made here, on the test's thread
  CHECK(otpp_test::eventually([&] { return !other.alive(); }));
  allocations_left = -1;
  only_on = std::thread::id{};
}

TEST_CASE("a timer whose message cannot be made for want of memory delivers it at a later tick") {
  otpp_test::virtual_runtime v;
  auto w = v.rt.start<watcher>().value();
  (void)otpp::send_after(w, watcher::tick{}, 10ms);
  never_on = std::this_thread::get_id();
  const long before = refused.load();
  allocations_left = 0;  // on the timer's thread and the workers
  v.clock->advance(10ms);
  allocations_left = -1;
  never_on = std::thread::id{};
  CHECK(refused.load() > before);
  CHECK(otpp::call(w, watcher::seen{}).empty());  // late: it waits for the next tick
  v.clock->advance(1ms);
  CHECK(otpp::call(w, watcher::seen{}) == "TICK;");
}

// On one worker, so that every allocation the link or monitor takes there
// is counted: the first, the second, ... fails in turn (once; the test
// thread's own are never refused), until none fails. Whichever failed, the
// watcher's view holds: a link or monitor it could not make is refused at
// once; one the other side could not keep ends as `lost` says; one that
// was made reports the other side's end.
template <class Make>
void each_allocation_refused_in_turn(Make make, const std::string& lost, bool other_lives_on) {
  otpp_test::log_capture logs;  // the crash reports of the killed and the out of memory
  otpp::runtime rt{{.workers = 1}};
  refuse_once = true;
  bool whole = false;
  bool lost_seen = false;
  for (long n = 0; !whole && n < 200; ++n) {
    CAPTURE(n);
    auto w = rt.start<watcher>().value();
    auto other = rt.start<plain>().value();
    only_on = otpp::call(w, watcher::thread{});
    allocations_left = n;
    const std::string outcome = make(w, other.pid());
    (void)otpp::try_call(other, plain::ping{});  // it has handled the link or monitor
    const bool refused_any = allocations_left.load() < 0;
    allocations_left = -1;
    only_on = std::thread::id{};
    const std::string seen = otpp::call(w, watcher::seen{});
    if (outcome == "refused") {
      CHECK(other.alive());
      CHECK(seen.empty());
    } else if (seen == lost || !other.alive()) {
      // A trapped exit queues behind the call that read `seen`: read again.
      CHECK(otpp_test::eventually([&] { return otpp::call(w, watcher::seen{}) == lost; }));
      lost_seen = true;
      CHECK(other.alive() == other_lives_on);
    } else {
      CHECK(seen.empty());
      CHECK(other.alive());
      (void)otpp::exit(other.pid(), otpp::exit_reason::kill());
      const std::string expected = lost.substr(0, lost.find(' ')) + " killed;";
      CHECK(otpp_test::eventually([&] { return otpp::call(w, watcher::seen{}) == expected; }));
      whole = !refused_any;
    }
    otpp::stop(w);
    if (other.alive()) otpp::stop(other);
  }
  refuse_once = false;
  CHECK(lost_seen);
  CHECK(whole);
}

// A link the other side cannot keep: it exits, and the linker hears why.
TEST_CASE("a link whose allocations fail is refused, or ends both sides, or reports the other's end") {
  each_allocation_refused_in_turn(
      [](const otpp::server<watcher>& w, const otpp::pid& other) { return otpp::call(w, watcher::link_to{other}); },
      "EXIT out_of_memory;", false);
}

// A monitor the other side cannot keep: the watcher gets a DOWN saying so
// (out_of_memory; like noconnection, it does not say the process died).
TEST_CASE("a monitor whose allocations fail is refused, or ends with a DOWN, or reports the other's end") {
  each_allocation_refused_in_turn(
      [](const otpp::server<watcher>& w, const otpp::pid& other) { return otpp::call(w, watcher::watch{other}); },
      "DOWN out_of_memory;", true);
}

// Run by the next test in a process of its own (hidden: "[.]"): memory
// never comes back, so the DOWN its exit owes cannot be made.
TEST_CASE("owed signal child: memory never comes back", "[.]") {
  // The abort is the outcome under test: not Catch's to report (its handler
  // allocates, and TSan reports that as unsafe in a signal handler).
  std::signal(SIGABRT, SIG_DFL);
  otpp::runtime rt{{.workers = 1}};
  auto target = rt.start<gated>().value();
  auto w = rt.start<watcher>().value();
  otpp::call(w, watcher::watch{target.pid()});
  gate g;
  otpp::cast(target, gated::stop_when_open{&g});
  g.entered.wait(false);
  allocations_left = 0;
  g.open = true;
  g.open.notify_one();
  g.entered.wait(true);  // never returns: the program aborts first
}

TEST_CASE("an owed signal that memory never comes back for aborts the program, naming it") {
  const std::string err_path =
      (std::filesystem::temp_directory_path() / ("signal_oom_test_" + std::to_string(getpid()) + ".err")).string();
  posix_spawn_file_actions_t io;
  posix_spawn_file_actions_init(&io);
  posix_spawn_file_actions_addopen(&io, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&io, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  char exe[] = "/proc/self/exe";
  char name[] = "owed signal child: memory never comes back";
  char* argv[] = {exe, name, nullptr};
  pid_t child = 0;
  REQUIRE(posix_spawn(&child, exe, &io, nullptr, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&io);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  std::stringstream err;
  err << std::ifstream{err_path}.rdbuf();
  std::remove(err_path.c_str());
  INFO(err.str());
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  CHECK(err.str().find("otpp: no memory for the DOWN message from <0.") != std::string::npos);
  CHECK(err.str().find("for 5 s; what a link, a monitor, a start or a table's heir is owed may not be dropped. Aborting.") != std::string::npos);
}
