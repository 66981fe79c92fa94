// Chaos: a supervision tree (root → two supervisors, one holding a third
// level, plus a dynamic supervisor) under random crash injection from two
// threads for a bounded time. Afterwards the tree must settle with every
// permanent child alive exactly once, every name registered to the live
// process the tree lists, and no process that the tree does not account
// for. Leaks are LSan's to find (the address build).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {

class chaos_worker : public otpp::gen_server<chaos_worker> {
 public:
  struct crash {};
  struct ping {};
  using info_types = otpp::type_list<crash>;
  explicit chaos_worker(bool trap) : trap_{trap} {}
  void init() {
    if (trap_) trap_exit(true);
  }
  int handle_call(ping) { return 1; }
  void handle_cast(crash) { throw std::runtime_error("chaos"); }
  void handle_info(crash) { throw std::runtime_error("chaos"); }

 private:
  bool trap_;
};

using sup_ref = otpp::server<otpp::supervisor>;
using dyn_ref = otpp::server<otpp::dynamic_supervisor>;

const std::vector<std::string> leaf_names{"chaos_a0", "chaos_a1", "chaos_a2", "chaos_b0",
                                          "chaos_c0", "chaos_c1", "chaos_b1"};

otpp::child_spec leaf(const std::string& name, bool trap) { return otpp::child<chaos_worker>(otpp::name(name), trap); }

std::vector<otpp::child_spec> tree() {
  const otpp::supervisor_flags mid{.max_restarts = 5, .max_seconds = 1s};  // escalates now and then
  std::vector<otpp::child_spec> a{leaf("chaos_a0", false), leaf("chaos_a1", true), leaf("chaos_a2", false)};
  std::vector<otpp::child_spec> c{leaf("chaos_c0", true), leaf("chaos_c1", false)};
  std::vector<otpp::child_spec> b{leaf("chaos_b0", false),
                                  otpp::child<otpp::supervisor>(c, mid).with_id("level3"),
                                  leaf("chaos_b1", true)};
  return {
      otpp::child<otpp::supervisor>(otpp::name("chaos_mid_a"), a,
                                    otpp::supervisor_flags{.strategy = otpp::strategy::one_for_all,
                                                           .max_restarts = 5, .max_seconds = 1s}),
      otpp::child<otpp::supervisor>(otpp::name("chaos_mid_b"), b,
                                    otpp::supervisor_flags{.strategy = otpp::strategy::rest_for_one,
                                                           .max_restarts = 5, .max_seconds = 1s}),
      otpp::child<otpp::dynamic_supervisor>(otpp::name("chaos_dyn")),
  };
}

// Every process of the tree under `sup` (itself excluded), or nothing if a
// child is missing, restarting or dead.
bool collect(const sup_ref& sup, std::vector<otpp::pid>& out) {
  auto kids = otpp::which_children(sup);
  if (!kids) return false;
  for (auto& k : *kids) {
    if (!k.process || !k.process.alive()) return false;
    out.push_back(k.process);
    if (k.id == "chaos_dyn") {
      auto dyn = otpp::which_children(otpp::server_cast<otpp::dynamic_supervisor>(k.process).value());
      if (!dyn) return false;
      for (auto& d : *dyn) {
        if (!d.process || !d.process.alive()) return false;
        out.push_back(d.process);
      }
    } else if (k.type == otpp::child_type::supervisor && !collect(otpp::server_cast<otpp::supervisor>(k.process).value(), out)) {
      return false;
    }
  }
  return true;
}

struct settled {
  std::vector<otpp::pid> all;  // the root and everything under it
};

// Whether the tree is whole: every static child running, names on the
// processes listed, and the runtime holding nothing else.
bool whole(otpp::runtime& rt, const sup_ref& root, settled& s) {
  s.all.clear();
  s.all.push_back(root.pid());
  if (!collect(root, s.all)) return false;
  for (auto& n : leaf_names) {
    auto p = otpp::whereis(n);
    if (!p || std::count(s.all.begin(), s.all.end(), p) != 1) return false;
  }
  for (const char* n : {"chaos_mid_a", "chaos_mid_b", "chaos_dyn"}) {
    auto p = otpp::whereis(n);
    if (!p || std::count(s.all.begin(), s.all.end(), p) != 1) return false;
  }
  return rt.process_count() == s.all.size();
}

void inject(std::uint32_t seed, std::chrono::steady_clock::time_point until,
            std::atomic<int>& injected) {
  std::mt19937 rng{seed};
  std::vector<std::string> names = leaf_names;
  names.insert(names.end(), {"chaos_mid_a", "chaos_mid_b", "chaos_dyn"});
  while (std::chrono::steady_clock::now() < until) {
    const int what = static_cast<int>(rng() % 10);
    if (what == 0) {  // grow the dynamic part
      if (auto d = otpp::whereis("chaos_dyn"))
        (void)otpp::start_child(otpp::server_cast<otpp::dynamic_supervisor>(d).value(), otpp::child<chaos_worker>(rng() % 2 == 0));
      continue;
    }
    otpp::pid victim = otpp::whereis(names[rng() % names.size()]);
    if (what == 1) {  // someone in the dynamic part, or the level-3 supervisor
      if (auto d = otpp::whereis("chaos_dyn")) {
        auto kids = otpp::which_children(otpp::server_cast<otpp::dynamic_supervisor>(d).value());
        if (kids && !kids->empty()) victim = (*kids)[rng() % kids->size()].process;
      }
    } else if (what == 2) {
      if (auto b = otpp::whereis("chaos_mid_b")) {
        auto kids = otpp::which_children(otpp::server_cast<otpp::supervisor>(b).value());
        if (kids)
          for (auto& k : *kids)
            if (k.id == "level3") victim = k.process;
      }
    }
    if (!victim) continue;
    switch (rng() % 3) {
      case 0: otpp::exit(victim, otpp::exit_reason::kill()); break;
      case 1: otpp::exit(victim, otpp::exit_reason::error("chaos")); break;
      default: otpp::send(victim, chaos_worker::crash{});  // supervisors log and drop it
    }
    injected.fetch_add(1, std::memory_order_relaxed);
    if (rng() % 4 == 0) {
      auto w = otpp::whereis(names[rng() % 7]);
      if (w) otpp::cast(otpp::server_cast<chaos_worker>(w).value(), chaos_worker::crash{});
    }
    std::this_thread::yield();
  }
}

}  // namespace

TEST_CASE("chaos: random crashes leave a whole tree, every name on a live process", "[supervisor][chaos]") {
  std::atomic<long> log_lines{0};
  otpp::set_logger([&](otpp::log_level, std::string_view) { log_lines.fetch_add(1, std::memory_order_relaxed); });
  {
    otpp::runtime rt{{.workers = 2}};
    auto root = rt.start<otpp::supervisor>(otpp::name("chaos_root"), tree(),
                                           otpp::supervisor_flags{.max_restarts = 1'000'000, .max_seconds = 1s})
                    .value();
    settled s;
    REQUIRE(whole(rt, root, s));

    std::atomic<int> injected{0};
    const auto until = std::chrono::steady_clock::now() + 1500ms;
    std::thread t1{[&] { inject(1, until, injected); }};
    std::thread t2{[&] { inject(2, until, injected); }};
    t1.join();
    t2.join();
    CHECK(injected.load() > 100);
    CHECK(root.alive());

    bool ok = false;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!ok && std::chrono::steady_clock::now() < deadline) {
      ok = whole(rt, root, s);
      if (!ok) std::this_thread::yield();
    }
    INFO("crashes injected: " << injected.load() << ", processes: " << rt.process_count());
    REQUIRE(ok);
    for (auto& p : s.all) CHECK(p.alive());

    otpp::stop(root);
    CHECK(rt.process_count() == 0);
    for (auto& n : leaf_names) CHECK_FALSE(otpp::whereis(n));
    CHECK_FALSE(otpp::whereis("chaos_dyn"));
  }
  otpp::set_logger({});
  CHECK(log_lines.load() > 0);
}
