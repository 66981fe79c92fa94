// Names: registration before init, clashes, release on exit and on failed
// start, calls/casts/stops by name, the __MODULE__ idiom.

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

struct counter_log {
  std::mutex mutex;
  int constructed = 0;
  int inits = 0;
};

class kv : public otpp::gen_server<kv> {
 public:
  struct get {};
  struct put {
    int v;
  };
  struct my_name {};
  struct rename {
    std::string to;
  };
  struct drop_name {};
  kv(int v, std::shared_ptr<counter_log> log, bool fail_init = false) : v_{v}, log_{std::move(log)}, fail_{fail_init} {
    std::lock_guard lock{log_->mutex};
    ++log_->constructed;
  }
  otpp::init_result init() {
    {
      std::lock_guard lock{log_->mutex};
      ++log_->inits;
    }
    if (fail_) return error(otpp::exit_reason::error("no"));
    return {};
  }
  int handle_call(get) const { return v_; }
  void handle_cast(put p) { v_ = p.v; }
  bool handle_call(rename r) { return otpp::register_name(r.to); }
  bool handle_call(drop_name) { return otpp::unregister_name(); }

 private:
  int v_;
  std::shared_ptr<counter_log> log_;
  bool fail_;
};

class other : public otpp::gen_server<other> {
 public:
  struct get {};
  int handle_call(get) { return -1; }
};

}  // namespace

TEST_CASE("a named server is found, called, cast to and stopped by name") {
  auto log = std::make_shared<counter_log>();
  auto s = otpp::start<kv>(otpp::name("names.kv"), 1, log).value();
  CHECK(otpp::whereis("names.kv") == s.pid());
  CHECK(otpp::whereis<kv>("names.kv") == s);
  CHECK(otpp::call<kv>("names.kv", kv::get{}) == 1);
  otpp::cast<kv>("names.kv", kv::put{2});
  CHECK(otpp::call<kv>("names.kv", kv::get{}) == 2);
  auto names = otpp::registered();
  CHECK(std::find(names.begin(), names.end(), "names.kv") != names.end());
  otpp::stop(otpp::whereis("names.kv"));
  CHECK_FALSE(s.alive());
  CHECK_FALSE(otpp::whereis("names.kv"));
}

TEST_CASE("a typed lookup of a name held by another type finds nothing") {
  auto o = otpp::start<other>(otpp::name("names.other")).value();
  CHECK_FALSE(otpp::whereis<kv>("names.other"));
  CHECK(otpp::whereis("names.other") == o.pid());
  CHECK(otpp::try_call<kv>("names.other", kv::get{}).error().kind() == otpp::exit_kind::noproc);
  otpp::stop(o);
}

TEST_CASE("a taken name: already_started with the holder, and nothing of the new server runs") {
  auto log = std::make_shared<counter_log>();
  auto first = otpp::start<kv>(otpp::name("names.taken"), 1, log).value();
  auto second = otpp::start<kv>(otpp::name("names.taken"), 2, log);
  REQUIRE_FALSE(second);
  CHECK(second.error().kind() == otpp::exit_kind::already_started);
  CHECK(otpp::holder(second.error()) == first.pid());
  CHECK(log->constructed == 1);
  CHECK(log->inits == 1);
  CHECK(otpp::call<kv>("names.taken", kv::get{}) == 1);
  otpp::stop(first);
}

TEST_CASE("a name is released on exit and on a failed start") {
  auto log = std::make_shared<counter_log>();
  auto a = otpp::start<kv>(otpp::name("names.reuse"), 1, log).value();
  otpp::stop(a);
  auto b = otpp::start<kv>(otpp::name("names.reuse"), 2, log).value();  // no already_started race
  CHECK(otpp::call<kv>("names.reuse", kv::get{}) == 2);
  otpp::stop(b);

  auto failed = otpp::start<kv>(otpp::name("names.failed"), 1, log, true);
  REQUIRE_FALSE(failed);
  CHECK(failed.error() == otpp::exit_reason::error("no"));
  CHECK_FALSE(otpp::whereis("names.failed"));
  auto again = otpp::start<kv>(otpp::name("names.failed"), 3, log).value();
  CHECK(otpp::call<kv>("names.failed", kv::get{}) == 3);
  otpp::stop(again);
}

TEST_CASE("calling a name nobody holds fails with noproc; casting to it is dropped") {
  auto r = otpp::try_call<kv>("names.nobody", kv::get{});
  REQUIRE_FALSE(r);
  CHECK(r.error().kind() == otpp::exit_kind::noproc);
  CHECK_THROWS_AS(otpp::call<kv>("names.nobody", kv::get{}), otpp::exit_error);
  otpp::cast<kv>("names.nobody", kv::put{1});
  CHECK(otpp::try_stop(otpp::whereis("names.nobody")).error().kind() == otpp::exit_kind::noproc);
  CHECK(otpp::start<kv>(otpp::name(""), 1, std::make_shared<counter_log>()).error().kind() == otpp::exit_kind::custom);
}

TEST_CASE("the __MODULE__ idiom: named after the type, called by type") {
  auto log = std::make_shared<counter_log>();
  auto s = otpp::start<kv>(otpp::named, 7, log).value();
  CHECK(otpp::call<kv>(kv::get{}) == 7);
  otpp::cast<kv>(kv::put{8});
  CHECK(otpp::call<kv>(kv::get{}) == 8);
  CHECK(otpp::whereis<kv>(otpp::name_of<kv>()) == s);
  CHECK(otpp::start<kv>(otpp::named, 9, log).error().kind() == otpp::exit_kind::already_started);
  otpp::stop(s);
  CHECK(otpp::try_call<kv>(kv::get{}).error().kind() == otpp::exit_kind::noproc);
}

TEST_CASE("a process registers and unregisters its own name") {
  auto log = std::make_shared<counter_log>();
  auto s = otpp::start<kv>(4, log).value();
  CHECK(otpp::call(s, kv::rename{"names.self"}));
  CHECK_FALSE(otpp::call(s, kv::rename{"names.self2"}));  // one name per process
  CHECK(otpp::whereis("names.self") == s.pid());
  CHECK(otpp::call(s, kv::drop_name{}));
  CHECK_FALSE(otpp::call(s, kv::drop_name{}));
  CHECK_FALSE(otpp::whereis("names.self"));
  CHECK_FALSE(otpp::register_name("names.thread"));  // a plain thread has no process
  otpp::stop(s);
}

namespace {
class restarter : public otpp::gen_server<restarter> {
 public:
  struct watch {
    otpp::pid p;
  };
  struct free_at_down {};
  void handle_call(watch w) { (void)otpp::monitor(w.p); }
  void handle_info(const otpp::down&) { name_was_free_ = !otpp::whereis("names.watched"); }
  bool handle_call(free_at_down) { return name_was_free_; }

 private:
  bool name_was_free_ = false;
};
}  // namespace

TEST_CASE("by the time a monitor's down arrives, the name is free again") {
  auto log = std::make_shared<counter_log>();
  auto w = otpp::start<restarter>().value();
  auto s = otpp::start<kv>(otpp::name("names.watched"), 1, log).value();
  otpp::call(w, restarter::watch{s});
  otpp::exit_watch ew{w};
  otpp::stop(s);
  // The down was queued at s's exit; a call behind it sees its effect.
  const auto until = std::chrono::steady_clock::now() + 10s;
  bool seen = false;
  while (!seen && std::chrono::steady_clock::now() < until) seen = otpp::call(w, restarter::free_at_down{});
  CHECK(seen);
  otpp::stop(w);
}
