// The demo application: a supervision tree holding a search cache, a rate
// limiter, a session store, a job queue and a connection to a flaky backend
// (a gen_statem that backs off and reconnects). Client processes (waiting in
// co_await async_try_call, holding no thread) and two client threads drive a mixed
// load for a few seconds while a chaos thread crashes the servers; the
// supervisor restarts them (the cache comes back from its snapshot), and a
// telemetry summary is printed at the end.
//
// With --observer PORT the program serves otpp's observer on
// 127.0.0.1:PORT (0: any free port; the URL is printed) and runs until
// interrupted (or for --seconds N), its clients paced and without the
// chaos thread: the page is where processes get killed, once
// --observer-actions allows it (the printed URL carries the token).
//
//   otpp_example_app [--seconds N] [--observer PORT [--observer-actions]]
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include <otpp/observer.hpp>
#include <otpp/otpp.hpp>

#include "connection.hpp"
#include "job_queue.hpp"
#include "rate_limiter.hpp"
#include "search_cache.hpp"
#include "session_store.hpp"

namespace {

using namespace std::chrono_literals;
namespace tel = otpp::telemetry;
using clk = std::chrono::steady_clock;

// Set by SIGINT or SIGTERM: the clients and the main loop wind down.
std::atomic<bool> interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");
extern "C" void on_signal(int) { interrupted.store(true); }

bool running(clk::time_point until) { return clk::now() < until && !interrupted.load(std::memory_order_relaxed); }

// What the telemetry handlers count, from whichever thread emits.
struct counters {
  std::atomic<long> hits{0}, misses{0}, allowed{0}, limited{0}, sessions{0}, jobs_ok{0}, jobs_failed{0};
  std::atomic<long> requests{0}, unavailable{0};
  std::atomic<long> backend_answered{0}, backend_failed{0}, backend_connects{0}, backend_lost{0};
  std::mutex mutex;
  std::map<std::string, long> restarts;  // by child id
};

void attach_handlers(counters& c) {
  (void)tel::attach("app.fetch", examples::search_cache_events::fetch,
                    [&c](const tel::event&, const tel::measurements&, const tel::metadata& md) {
                      (md.get<bool>("hit").value_or(false) ? c.hits : c.misses).fetch_add(1, std::memory_order_relaxed);
                    });
  (void)tel::attach("app.check", examples::rate_limiter_events::check,
                    [&c](const tel::event&, const tel::measurements&, const tel::metadata& md) {
                      (md.get<bool>("allowed").value_or(false) ? c.allowed : c.limited).fetch_add(1, std::memory_order_relaxed);
                    });
  (void)tel::attach("app.sessions", examples::session_store_events::created,
                    [&c](const tel::event&, const tel::measurements&, const tel::metadata&) {
                      c.sessions.fetch_add(1, std::memory_order_relaxed);
                    });
  (void)tel::attach("app.jobs", examples::job_queue_events::job,
                    [&c](const tel::event&, const tel::measurements&, const tel::metadata& md) {
                      (md.get<bool>("ok").value_or(false) ? c.jobs_ok : c.jobs_failed).fetch_add(1, std::memory_order_relaxed);
                    });
  (void)tel::attach("app.backend.up", examples::connection_events::connected,
                    [&c](const tel::event&, const tel::measurements&, const tel::metadata&) {
                      c.backend_connects.fetch_add(1, std::memory_order_relaxed);
                    });
  (void)tel::attach("app.backend.lost", examples::connection_events::lost,
                    [&c](const tel::event&, const tel::measurements&, const tel::metadata&) {
                      c.backend_lost.fetch_add(1, std::memory_order_relaxed);
                    });
  (void)tel::attach("app.restarts", otpp::supervisor_events::child_restarting,
                    [&c](const tel::event&, const tel::measurements&, const tel::metadata& md) {
                      std::lock_guard lock{c.mutex};
                      ++c.restarts[md.get<std::string>("child").value_or("?")];
                    });
}

// The flaky backend behind the connection: a connect fails two times in
// five, a request one time in twenty, a keep-alive ping one time in ten
// (the link drops).
struct flaky_backend {
  std::atomic<unsigned> draws{0};
  bool fails(unsigned one_in) {
    unsigned x = draws.fetch_add(1, std::memory_order_relaxed) * 2654435761u;
    x ^= x >> 16;
    return x % one_in == 0;
  }
  examples::connection_options options() {
    return {.connect = [this] { return draws.fetch_add(1, std::memory_order_relaxed) % 5 >= 2; },
            .send = [this](const std::string& q) -> std::optional<std::string> {
              if (fails(20)) return std::nullopt;
              return "backend answer to " + q;
            },
            .ping = [this] { return !fails(10); },
            .initial_backoff = 5ms,
            .max_backoff = 80ms,
            .keepalive_every = 50ms,
            .request_timeout = 300ms};
  }
};

// One client: a user's request goes through the limiter, then the cache
// (filled on a miss), sometimes opens a session or queues a job. Servers are
// found by name at every request, so a restarted one is used at once; a
// request that meets a server mid-restart counts as unavailable.
void client(int id, clk::time_point until, clk::duration pace, counters& c) {
  std::mt19937 rng{static_cast<unsigned>(id) * 7919u};
  std::uniform_int_distribution<int> user{0, 199};
  std::geometric_distribution<int> query{0.02};  // a few queries are popular
  while (running(until)) {
    if (pace.count() > 0) std::this_thread::sleep_for(pace);  // a steady load for someone watching, not synchronization
    c.requests.fetch_add(1, std::memory_order_relaxed);
    const std::string u = "user:" + std::to_string(user(rng));
    auto d = otpp::try_call<examples::rate_limiter>("rate_limiter", examples::rate_limiter::check{u});
    if (!d) {
      c.unavailable.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (!d->allowed) continue;
    const std::string q = "q" + std::to_string(query(rng));
    auto hit = otpp::try_call<examples::search_cache>("search_cache", examples::search_cache::fetch{q});
    if (!hit) {
      c.unavailable.fetch_add(1, std::memory_order_relaxed);
    } else if (!*hit) {
      otpp::cast<examples::search_cache>("search_cache", examples::search_cache::cache{q, "results for " + q});
    }
    const int dice = static_cast<int>(rng() % 100);
    if (dice < 5) {
      if (!otpp::try_call<examples::session_store>("session_store", examples::session_store::create{u}))
        c.unavailable.fetch_add(1, std::memory_order_relaxed);
    } else if (dice < 7) {
      const int n = static_cast<int>(rng() % 1000);
      auto job = [n]() -> std::string {
        if (n % 10 == 0) throw std::runtime_error("job " + std::to_string(n) + " failed");
        return std::to_string(n * n);
      };
      auto r = otpp::try_call<examples::job_queue>("job_queue", examples::job_queue::enqueue{job});
      if (!r) c.unavailable.fetch_add(1, std::memory_order_relaxed);  // a full queue answers inside r
    } else if (dice < 12) {
      // The backend: answered once the link is up, or unavailable (down too long) or late.
      auto r = otpp::try_call<examples::connection>("backend", examples::connection::request{q}, 500ms);
      ((r && *r) ? c.backend_answered : c.backend_failed).fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// The same client as a process: each call is co_awaited, so a waiting
// client holds no thread, and many of them share the two workers.
class client_process : public otpp::gen_server<client_process> {
 public:
  struct run {
    int id;
    clk::time_point until;
    clk::duration pace;
    counters* c;
    std::latch* done;
  };
  // Each request is built in a statement of its own: GCC 12 miscompiles an
  // aggregate holding a std::string created inside a co_await expression
  // (docs/semantics.md, 1.3a).
  otpp::async<void> handle_cast(run r) {
    counters& c = *r.c;
    std::mt19937 rng{static_cast<unsigned>(r.id) * 7919u};
    std::uniform_int_distribution<int> user{0, 199};
    std::geometric_distribution<int> query{0.02};
    while (running(r.until)) {
      if (r.pace.count() > 0) co_await otpp::sleep_for(r.pace);  // holds no thread while it waits
      c.requests.fetch_add(1, std::memory_order_relaxed);
      const std::string u = "user:" + std::to_string(user(rng));
      examples::rate_limiter::check check{u};
      auto d = co_await otpp::async_try_call(otpp::whereis<examples::rate_limiter>("rate_limiter"), std::move(check));
      if (!d) {
        c.unavailable.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (!d->allowed) continue;
      const std::string q = "q" + std::to_string(query(rng));
      auto cache = otpp::whereis<examples::search_cache>("search_cache");
      examples::search_cache::fetch fetch{q};
      auto hit = co_await otpp::async_try_call(cache, std::move(fetch));
      if (!hit) {
        c.unavailable.fetch_add(1, std::memory_order_relaxed);
      } else if (!*hit) {
        otpp::cast(cache, examples::search_cache::cache{q, "results for " + q});
      }
      if (rng() % 100 < 5) {
        examples::session_store::create create{u};
        auto s = co_await otpp::async_try_call(otpp::whereis<examples::session_store>("session_store"), std::move(create));
        if (!s) c.unavailable.fetch_add(1, std::memory_order_relaxed);
      }
    }
    r.done->count_down();
  }
};

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  bool seconds_given = false;
  std::optional<int> observer_port;
  bool observer_actions = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
      seconds_given = true;
    } else if (arg == "--observer" && i + 1 < argc) {
      observer_port = std::atoi(argv[++i]);
    } else if (arg == "--observer-actions") {
      observer_actions = true;
    } else {
      fmt::print(stderr, "usage: {} [--seconds N] [--observer PORT [--observer-actions]]\n", argv[0]);
      return 2;
    }
  }
  if (observer_port && (*observer_port < 0 || *observer_port > 65535)) {
    fmt::print(stderr, "--observer: {} is not a port\n", *observer_port);
    return 2;
  }
  const bool watched = observer_port.has_value();
  if (watched && !seconds_given) seconds = 1e9;  // until interrupted
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  counters c;
  attach_handlers(c);
  if (!std::getenv("DEMO_LOGS")) otpp::set_log_level(otpp::log_level::none);  // the injected crashes' reports would drown the output

  flaky_backend backend;
  const auto snap = std::filesystem::temp_directory_path() / "otpp_demo_app_cache.snap";
  std::filesystem::remove(snap);
  std::vector<otpp::child_spec> children{
      otpp::child<examples::search_cache>(otpp::name("search_cache"),
                                          examples::search_cache_options{.capacity = 500, .snapshot = snap,
                                                                         .snapshot_every = 500ms}),
      otpp::child<examples::rate_limiter>(otpp::name("rate_limiter"),
                                          examples::rate_limiter_options{.limit = 1000, .window = 1s}),
      otpp::child<examples::session_store>(otpp::name("session_store"),
                                           examples::session_store_options{.ttl = 2s, .cleanup_every = 1s}),
      otpp::child<examples::job_queue>(otpp::name("job_queue"), examples::job_queue_options{.max_queued = 50}),
      otpp::child<examples::connection>(otpp::name("backend"), backend.options()),
  };
  auto root = otpp::start<otpp::supervisor>(otpp::name("demo_root"), children,
                                            otpp::supervisor_flags{.max_restarts = 20, .max_seconds = 5s})
                  .value();
  fmt::print("supervision tree up: {} children under demo_root {}\n", otpp::count_children(root).value().active, root);
  otpp::server<otpp::observer> observer;
  if (watched) {
    auto o = otpp::start<otpp::observer>(otpp::observer_options{.port = static_cast<std::uint16_t>(*observer_port),
                                                                .allow_actions = observer_actions});
    if (!o) {
      fmt::print(stderr, "{}\n", o.error());
      otpp::stop(root);
      return 1;
    }
    observer = *o;
    fmt::print("observer: {}\n", otpp::observer_url(observer).value());
  }
  std::fflush(stdout);

  const auto t0 = clk::now();
  const auto until = t0 + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(seconds));
  // Watched, the load is paced (a few thousand requests a second) and can
  // go on for hours; unwatched, it runs flat out for the benchmark.
  const clk::duration pace = watched ? clk::duration{std::chrono::milliseconds{2}} : clk::duration::zero();
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i) clients.emplace_back(client, i, until, pace, std::ref(c));
  constexpr int client_processes = 16;
  std::latch processes_done{client_processes};
  std::vector<otpp::server<client_process>> client_procs;
  for (int i = 0; i < client_processes; ++i) {
    client_procs.push_back(otpp::start<client_process>().value());
    otpp::cast(client_procs.back(), client_process::run{100 + i, until, pace, &c, &processes_done});
  }

  // Chaos: every 400 ms one child crashes; show the supervisor bringing it back.
  const char* victims[] = {"search_cache", "rate_limiter", "session_store", "job_queue"};
  std::mt19937 rng{42};
  while (watched && running(until)) std::this_thread::sleep_for(100ms);  // the page does the crashing
  while (!watched && clk::now() + 400ms < until && running(until)) {
    std::this_thread::sleep_for(400ms);  // the demo's pacing, not synchronization
    const std::string v = victims[rng() % 4];
    const otpp::pid old = otpp::whereis(v);
    if (!old) continue;
    const auto crashed = clk::now();
    otpp::exit(old, otpp::exit_reason::error("injected crash"));
    otpp::pid now;
    while ((!(now = otpp::whereis(v)) || now == old) && clk::now() - crashed < 2s) std::this_thread::yield();
    const auto us = std::chrono::duration<double, std::micro>(clk::now() - crashed).count();
    if (now && now != old) {
      fmt::print("  crashed {:<13} {} -> restarted as {} in {:.0f} us\n", v, old, now, us);
    } else {
      fmt::print("  crashed {:<13} {} -> not back after 2 s\n", v, old);
    }
    std::fflush(stdout);
  }
  for (auto& t : clients) t.join();
  processes_done.wait();
  for (auto& p : client_procs) otpp::stop(p);
  const double took = std::chrono::duration<double>(clk::now() - t0).count();

  const auto cache_stats = otpp::call<examples::search_cache>("search_cache", examples::search_cache::get_stats{});
  if (observer) otpp::stop(observer);
  otpp::stop(root);
  std::filesystem::remove(snap);
  otpp::set_log_level(otpp::log_level::debug);
  for (const char* id : {"app.fetch", "app.check", "app.sessions", "app.jobs", "app.backend.up", "app.backend.lost", "app.restarts"})
    (void)tel::detach(id);

  long restarts = 0;
  for (auto& [id, n] : c.restarts) restarts += n;
  const long requests = c.requests.load();
  fmt::print("\ntelemetry summary ({:.1f} s, 2 client threads and {} client processes on {} workers)\n", took,
             client_processes, otpp::default_runtime().workers());
  fmt::print("  {:<28} {:>12}\n", "requests", requests);
  fmt::print("  {:<28} {:>12.0f}\n", "throughput (requests/s)", static_cast<double>(requests) / took);
  fmt::print("  {:<28} {:>12}\n", "rate limited", c.limited.load());
  fmt::print("  {:<28} {:>12}\n", "cache hits", c.hits.load());
  fmt::print("  {:<28} {:>12}\n", "cache misses", c.misses.load());
  const long lookups = c.hits.load() + c.misses.load();
  fmt::print("  {:<28} {:>11.1f}%\n", "cache hit rate", lookups ? 100.0 * static_cast<double>(c.hits.load()) / lookups : 0.0);
  fmt::print("  {:<28} {:>12}\n", "cache size at the end", cache_stats.size);
  fmt::print("  {:<28} {:>12}\n", "sessions created", c.sessions.load());
  fmt::print("  {:<28} {:>12}\n", "jobs done", c.jobs_ok.load());
  fmt::print("  {:<28} {:>12}\n", "jobs failed (by design)", c.jobs_failed.load());
  fmt::print("  {:<28} {:>12}\n", "backend requests answered", c.backend_answered.load());
  fmt::print("  {:<28} {:>12}\n", "backend unavailable or late", c.backend_failed.load());
  fmt::print("  {:<28} {:>12}\n", "backend connects / links lost", fmt::format("{} / {}", c.backend_connects.load(), c.backend_lost.load()));
  fmt::print("  {:<28} {:>12}\n", "requests during a restart", c.unavailable.load());
  fmt::print("  {:<28} {:>12}\n", "restarts", restarts);
  for (auto& [id, n] : c.restarts) fmt::print("    {:<26} {:>12}\n", id, n);
  return 0;
}
