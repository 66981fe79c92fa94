// Names: registration before init, clashes, release on exit and on failed
// start, calls/casts/stops by name, the __MODULE__ idiom.

#include <algorithm>
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

// -- otpp::registry ------------------------------------------------------------------

namespace {

using str_registry = otpp::registry<std::string, int>;

// Registers keys on request; a registry member.
class member : public otpp::gen_server<member> {
 public:
  struct add {
    std::string key;
    int value;
  };
  struct remove {
    std::string key;
  };
  struct add_many {
    std::vector<std::string> keys;
  };
  struct news {
    std::string text;
  };
  struct inbox {};
  struct my_keys {};
  explicit member(str_registry reg) : reg_{std::move(reg)} {}
  otpp::result<void> handle_call(add a) { return reg_.register_key(a.key, a.value); }
  bool handle_call(remove r) { return reg_.unregister_key(r.key); }
  std::size_t handle_call(add_many a) {
    std::size_t ok = 0;
    for (auto& k : a.keys) ok += reg_.register_key(k, 0).has_value() ? 1 : 0;
    return ok;
  }
  void handle_cast(news n) { inbox_.push_back(n.text); }
  std::vector<std::string> handle_call(inbox) { return inbox_; }
  std::vector<std::string> handle_call(my_keys) { return reg_.keys(self()); }

 private:
  str_registry reg_;
  std::vector<std::string> inbox_;
};

class session : public otpp::gen_server<session> {
 public:
  struct who {};
  explicit session(std::string user) : user_{std::move(user)} {}
  std::string handle_call(who) { return user_; }

 private:
  std::string user_;
};

}  // namespace

TEST_CASE("registry, unique keys: register, lookup, clash, unregister, owner death") {
  str_registry reg{otpp::registry_keys::unique};
  auto a = otpp::start<member>(reg).value();
  auto b = otpp::start<member>(reg).value();
  CHECK(otpp::call(a, member::add{"k", 1}).has_value());
  auto clash = otpp::call(b, member::add{"k", 2});
  REQUIRE_FALSE(clash);
  CHECK(clash.error().kind() == otpp::exit_kind::already_started);
  CHECK(otpp::holder(clash.error()) == a.pid());
  auto found = reg.lookup("k");
  REQUIRE(found.size() == 1);
  CHECK(found[0].first == a.pid());
  CHECK(found[0].second == 1);
  CHECK(reg.whereis("k") == a.pid());
  CHECK(otpp::call(a, member::remove{"k"}));
  CHECK_FALSE(otpp::call(a, member::remove{"k"}));
  CHECK(reg.lookup("k").empty());
  CHECK(otpp::call(b, member::add{"k", 2}).has_value());
  otpp::exit_watch wb{b};
  otpp::stop(b);
  CHECK(wb.wait(10s));
  CHECK(reg.lookup("k").empty());  // gone with its owner
  CHECK(reg.count() == 0);
  CHECK(reg.register_key("from a thread").error().kind() == otpp::exit_kind::noproc);
  otpp::stop(a);
}

TEST_CASE("registry, duplicate keys: pub/sub dispatch to every subscriber") {
  str_registry topics{otpp::registry_keys::duplicate};
  std::vector<otpp::server<member>> subs;
  for (int i = 0; i < 3; ++i) {
    subs.push_back(otpp::start<member>(topics).value());
    CHECK(otpp::call(subs.back(), member::add{"news", i}).has_value());
  }
  CHECK(topics.lookup("news").size() == 3);
  topics.dispatch("news", [](const otpp::pid& p, int) {
    otpp::cast(otpp::server_cast<member>(p).value(), member::news{"hello"});
  });
  for (auto& s : subs) CHECK(otpp::call(s, member::inbox{}) == std::vector<std::string>{"hello"});
  otpp::stop(subs[1]);
  CHECK(topics.lookup("news").size() == 2);
  for (auto& s : subs)
    if (s.alive()) otpp::stop(s);
  CHECK(topics.count() == 0);
}

TEST_CASE("registry as a name: start via a unique registry, found and called through it") {
  otpp::registry<std::string> sessions{otpp::registry_keys::unique};
  auto s = otpp::start<session>(otpp::via(sessions, std::string{"alice"}), "alice").value();
  CHECK(sessions.whereis<session>("alice") == s);
  CHECK_FALSE(sessions.whereis<member>("alice"));  // another type
  CHECK(otpp::call(sessions.whereis<session>("alice"), session::who{}) == "alice");
  auto twice = otpp::start<session>(otpp::via(sessions, std::string{"alice"}), "alice");
  REQUIRE_FALSE(twice);
  CHECK(otpp::holder(twice.error()) == s.pid());
  otpp::stop(s);
  CHECK_FALSE(sessions.whereis("alice"));
  auto again = otpp::start<session>(otpp::via(sessions, std::string{"alice"}), "alice");
  CHECK(again);
  otpp::stop(*again);
}

TEST_CASE("registry stress: 8 threads registering, unregistering and looking up while owners die") {
  constexpr int threads = 8;
  constexpr int rounds = 25;
  constexpr int keys_per_member = 500;  // 8 x 25 x 500 = 100k registrations
  otpp_test::log_capture quiet;  // the killed members' crash reports
  str_registry reg{otpp::registry_keys::unique};
  std::vector<otpp::pid> dying;
  otpp::runtime rt{{.workers = 2}};
  std::mutex kept_mutex;
  std::vector<std::pair<otpp::server<member>, std::vector<std::string>>> kept;
  std::atomic<long> lookups{0};
  std::atomic<long> failures{0};  // Catch2 assertions are not thread-safe: count, check after
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r) {
        std::vector<std::string> keys;
        for (int k = 0; k < keys_per_member; ++k) keys.push_back(fmt::format("{}-{}-{}", t, r, k));
        auto m = rt.start<member>(reg).value();
        if (otpp::call(m, member::add_many{keys}) != keys.size()) failures.fetch_add(1);
        for (int k = 0; k < keys_per_member; k += 50) {
          if (reg.whereis(keys[k]) == m.pid()) lookups.fetch_add(1);
        }
        // Drop every other key, then either let the member die or keep it.
        std::vector<std::string> left;
        for (int k = 0; k < keys_per_member; ++k) {
          if (k % 2 == 0) {
            if (!otpp::call(m, member::remove{keys[k]})) failures.fetch_add(1);
          } else {
            left.push_back(keys[k]);
          }
        }
        if (r % 3 == 0) {
          std::lock_guard lock{kept_mutex};
          kept.emplace_back(m, std::move(left));
        } else {
          otpp::exit(m, r % 2 ? otpp::exit_reason::kill() : otpp::exit_reason::error("die"));
          std::lock_guard lock{kept_mutex};
          dying.push_back(m);
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(failures.load() == 0);
  CHECK(lookups.load() == threads * rounds * (keys_per_member / 50));
  // Dying members' entries vanish; wait for every non-kept member to be gone.
  std::size_t expected = 0;
  for (auto& [m, keys] : kept) {
    expected += keys.size();
    for (auto& k : keys) CHECK(reg.whereis(k) == m.pid());
  }
  // A process's registry entries are gone before anyone can see it dead.
  for (auto& p : dying) CHECK(otpp::await_exit(p, 30s).has_value());
  CHECK(reg.count() == expected);
  rt.shutdown();
  CHECK(reg.count() == 0);
}

TEST_CASE("registry keys(pid): from the owner and from elsewhere, gone with the owner") {
  str_registry dup{otpp::registry_keys::duplicate};
  auto a = otpp::start<member>(dup).value();
  auto b = otpp::start<member>(dup).value();
  CHECK(otpp::call(a, member::add_many{{"x", "y", "z"}}) == 3);
  CHECK(otpp::call(a, member::add{"x", 9}).has_value());  // a duplicate key twice: listed once
  CHECK(otpp::call(b, member::add{"y", 1}).has_value());
  auto from_outside = dup.keys(a);
  std::sort(from_outside.begin(), from_outside.end());
  CHECK(from_outside == std::vector<std::string>{"x", "y", "z"});
  CHECK(otpp::call(a, member::my_keys{}) == std::vector<std::string>{"x", "y", "z"});
  CHECK(dup.keys(b) == std::vector<std::string>{"y"});
  otpp::stop(a);
  CHECK(dup.keys(a).empty());
  CHECK(dup.keys(otpp::pid{}).empty());
  otpp::stop(b);
}
