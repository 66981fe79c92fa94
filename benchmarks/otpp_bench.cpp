// otpp_bench: the figures of the project's performance table, one line each
// as `name: value unit`. `otpp_bench NAME...` runs only those; `--quick`
// uses a tenth of the sizes (a smoke run, not comparable figures).
//
// Workloads mirror the peers' programs (BEAM and CAF, same machine kind):
//   cast_1sender        one thread casts 2M increments, then a flushing call
//   cast_2senders       two threads cast 1M each, then a flushing call
//   call_external       a plain thread calls a server 1M times, sequentially
//   call_process        a process calls another 1M times, sequentially
//   call_concurrent_64  64 client processes x 20k sequential calls to one server
//   ring_1000           1,000 servers pass a token 1M hops by cast
//   spawn_1m            start 1M idle servers (from the main thread)
//   bytes_per_server    RSS growth per idle server
//   stop_1m             stop those 1M servers, one by one
//   idle_cpu            CPU used by an idle runtime with 1,000 live servers
//   monitor_ns          a process monitors and demonitors another, per pair
//   whereis_ns          look a registered name up, from a plain thread
//   call_by_name_ns     call a named server by name (compare call_external)

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <otpp/otpp.hpp>

namespace {

using clk = std::chrono::steady_clock;
double seconds_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

std::size_t scale = 1;  // divisor for --quick

void figure(const char* name, double value, const char* unit) {
  if (value >= 100)
    std::printf("%s: %.0f %s\n", name, value, unit);
  else
    std::printf("%s: %.3f %s\n", name, value, unit);
  std::fflush(stdout);
}

long rss_bytes() {
  std::ifstream f{"/proc/self/statm"};
  long pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

class counter : public otpp::gen_server<counter> {
 public:
  struct increment {};
  struct get {};
  void handle_cast(increment) { ++n_; }
  std::uint64_t handle_call(increment) { return ++n_; }
  std::uint64_t handle_call(get) const { return n_; }

 private:
  std::uint64_t n_ = 0;
};

void cast_senders(otpp::runtime& rt, unsigned senders, const char* name) {
  const std::uint64_t total = 2'000'000 / scale;
  auto c = rt.start<counter>().value();
  (void)otpp::call(c, counter::get{});
  std::latch go{senders + 1};
  std::vector<std::thread> ts;
  for (unsigned s = 0; s < senders; ++s) {
    ts.emplace_back([&] {
      go.arrive_and_wait();
      for (std::uint64_t i = 0; i < total / senders; ++i) otpp::cast(c, counter::increment{});
    });
  }
  go.arrive_and_wait();
  auto t0 = clk::now();
  for (auto& t : ts) t.join();
  auto n = otpp::call(c, counter::get{}, std::chrono::seconds(60));
  double dt = seconds_since(t0);
  if (n != total / senders * senders) std::printf("# %s: counted %llu of %llu\n", name, (unsigned long long)n, (unsigned long long)total);
  figure(name, n / dt, "msg/s");
  otpp::stop(c);
}

void call_external(otpp::runtime& rt) {
  const int calls = 1'000'000 / static_cast<int>(scale);
  auto c = rt.start<counter>().value();
  for (int i = 0; i < 1000; ++i) (void)otpp::call(c, counter::increment{});
  auto t0 = clk::now();
  std::uint64_t last = 0;
  for (int i = 0; i < calls; ++i) last = otpp::call(c, counter::increment{});
  double dt = seconds_since(t0);
  if (last != static_cast<std::uint64_t>(calls) + 1000) std::printf("# call_external: bad reply %llu\n", (unsigned long long)last);
  figure("call_external", dt * 1e9 / calls, "ns");
  otpp::stop(c);
}

class caller : public otpp::gen_server<caller> {
 public:
  struct run {
    otpp::server<counter> target;
    int calls;
    std::promise<double>* seconds;
  };
  void handle_cast(run r) {
    auto t0 = clk::now();
    for (int i = 0; i < r.calls; ++i) (void)otpp::call(r.target, counter::increment{});
    r.seconds->set_value(seconds_since(t0));
  }
};

void call_process(otpp::runtime& rt) {
  const int calls = 1'000'000 / static_cast<int>(scale);
  auto c = rt.start<counter>().value();
  auto p = rt.start<caller>().value();
  std::promise<double> warm;
  otpp::cast(p, caller::run{c, 1000, &warm});
  warm.get_future().get();
  std::promise<double> secs;
  otpp::cast(p, caller::run{c, calls, &secs});
  double dt = secs.get_future().get();
  figure("call_process", dt * 1e9 / calls, "ns");
  otpp::stop(p);
  otpp::stop(c);
}

class client : public otpp::gen_server<client> {
 public:
  struct run {
    otpp::server<counter> target;
    int calls;
    std::latch* done;
  };
  void handle_cast(run r) {
    for (int i = 0; i < r.calls; ++i) (void)otpp::call(r.target, counter::increment{});
    r.done->count_down();
  }
};

void call_concurrent(otpp::runtime& rt) {
  const int clients = 64;
  const int calls = 20'000 / static_cast<int>(scale);
  auto c = rt.start<counter>().value();
  std::vector<otpp::server<client>> cs;
  for (int i = 0; i < clients; ++i) cs.push_back(rt.start<client>().value());
  std::latch done{clients};
  auto t0 = clk::now();
  for (auto& cl : cs) otpp::cast(cl, client::run{c, calls, &done});
  done.wait();
  double dt = seconds_since(t0);
  auto n = otpp::call(c, counter::get{});
  if (n != static_cast<std::uint64_t>(clients) * calls) std::printf("# call_concurrent_64: counted %llu\n", (unsigned long long)n);
  figure("call_concurrent_64", clients * static_cast<double>(calls) / dt, "calls/s");
  if (rt.thread_count() > rt.workers()) std::printf("# call_concurrent_64: %zu threads (spares started)\n", rt.thread_count());
  for (auto& cl : cs) otpp::stop(cl);
  otpp::stop(c);
}

class ring_node : public otpp::gen_server<ring_node> {
 public:
  struct token {
    std::uint64_t hops_left;
  };
  struct set_next {
    otpp::server<ring_node> next;
    std::promise<void>* done;
  };
  struct ping {};
  int handle_call(ping) const { return 0; }
  void handle_cast(set_next s) {
    next_ = std::move(s.next);
    done_ = s.done;
  }
  void handle_cast(token t) {
    if (t.hops_left == 0) {
      done_->set_value();
      return;
    }
    otpp::cast(next_, token{t.hops_left - 1});
  }

 private:
  otpp::server<ring_node> next_;
  std::promise<void>* done_ = nullptr;
};

void ring(otpp::runtime& rt) {
  const int n = 1000;
  const std::uint64_t hops = 1'000'000 / scale;
  std::vector<otpp::server<ring_node>> nodes;
  for (int i = 0; i < n; ++i) nodes.push_back(rt.start<ring_node>().value());
  std::promise<void> done;
  for (int i = 0; i < n; ++i) otpp::cast(nodes[i], ring_node::set_next{nodes[(i + 1) % n], &done});
  for (auto& x : nodes) (void)otpp::call(x, ring_node::ping{});  // all wired up
  auto t0 = clk::now();
  otpp::cast(nodes[0], ring_node::token{hops});
  done.get_future().wait();
  double dt = seconds_since(t0);
  figure("ring_1000", hops / dt, "hops/s");
  for (auto& x : nodes) otpp::stop(x);
}

class idle_server : public otpp::gen_server<idle_server> {
 public:
  struct get {};
  explicit idle_server(int v) : v_{v} {}
  int handle_call(get) const { return v_; }

 private:
  int v_;
};

void spawn_stop(otpp::runtime& rt, bool want_spawn, bool want_bytes, bool want_stop) {
  const std::size_t n = 1'000'000 / scale;
  std::vector<otpp::server<idle_server>> servers;
  servers.resize(n);  // the handles' own memory is touched before measuring
  std::memset(static_cast<void*>(servers.data()), 0, n * sizeof(servers[0]));  // pre-touch: excluded from the figure
  long rss0 = rss_bytes();
  auto t0 = clk::now();
  for (std::size_t i = 0; i < n; ++i) servers[i] = rt.start<idle_server>(static_cast<int>(i)).value();
  double spawn_s = seconds_since(t0);
  long rss1 = rss_bytes();
  if (otpp::call(servers[n / 2], idle_server::get{}) != static_cast<int>(n / 2)) std::printf("# spawn: bad state\n");
  if (want_spawn) figure("spawn_1m", spawn_s * (1'000'000.0 / n), "s");
  if (want_bytes) figure("bytes_per_server", static_cast<double>(rss1 - rss0) / n, "B");
  auto t1 = clk::now();
  for (auto& s : servers) otpp::stop(s);
  double stop_s = seconds_since(t1);
  if (rt.process_count() != 0) std::printf("# stop: %zu processes left\n", rt.process_count());
  if (want_stop) figure("stop_1m", stop_s * (1'000'000.0 / n), "s");
}

class watcher : public otpp::gen_server<watcher> {
 public:
  struct run {
    otpp::pid target;
    int n;
  };
  double handle_call(run r) {
    auto t0 = clk::now();
    for (int i = 0; i < r.n; ++i) {
      auto ref = otpp::monitor(r.target);
      (void)otpp::demonitor(ref);
    }
    return seconds_since(t0);
  }
};

void names(otpp::runtime& rt, bool want_monitor, bool want_whereis, bool want_call) {
  const int n = 1'000'000 / static_cast<int>(scale);
  auto c = rt.start<counter>(otpp::name("bench.counter")).value();
  if (want_monitor) {
    auto w = rt.start<watcher>().value();
    (void)otpp::call(w, watcher::run{c, 1000});
    double dt = otpp::call(w, watcher::run{c, n}, std::chrono::seconds(60));
    figure("monitor_ns", dt * 1e9 / n, "ns");
    otpp::stop(w);
  }
  if (want_whereis) {
    std::uint64_t found = 0;
    auto t0 = clk::now();
    for (int i = 0; i < n; ++i) found += otpp::whereis("bench.counter").id() != 0;
    double dt = seconds_since(t0);
    if (found != static_cast<std::uint64_t>(n)) std::printf("# whereis: missed\n");
    figure("whereis_ns", dt * 1e9 / n, "ns");
  }
  if (want_call) {
    for (int i = 0; i < 1000; ++i) (void)otpp::call<counter>("bench.counter", counter::increment{});
    auto t0 = clk::now();
    for (int i = 0; i < n; ++i) (void)otpp::call<counter>("bench.counter", counter::increment{});
    double dt = seconds_since(t0);
    figure("call_by_name_ns", dt * 1e9 / n, "ns");
  }
  otpp::stop(c);
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU used by a runtime with live but idle processes, as % of one core.
void idle_cpu(otpp::runtime& rt) {
  std::vector<otpp::server<idle_server>> servers;
  for (int i = 0; i < 1000; ++i) servers.push_back(rt.start<idle_server>(i).value());
  (void)otpp::call(servers.back(), idle_server::get{});
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the workers park
  const double c0 = cpu_seconds();
  const auto t0 = clk::now();
  std::this_thread::sleep_for(std::chrono::seconds(scale > 1 ? 1 : 2));
  const double used = cpu_seconds() - c0;
  figure("idle_cpu", 100.0 * used / seconds_since(t0), "%");
  for (auto& s : servers) otpp::stop(s);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> wanted;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      scale = 10;
    } else {
      wanted.push_back(a);
    }
  }
  auto want = [&](const char* n) { return wanted.empty() || std::find(wanted.begin(), wanted.end(), n) != wanted.end(); };
  otpp::runtime rt;
  std::printf("# otpp_bench: %u workers%s\n", rt.workers(), scale > 1 ? ", --quick (sizes / 10)" : "");
  if (want("cast_1sender")) cast_senders(rt, 1, "cast_1sender");
  if (want("cast_2senders")) cast_senders(rt, 2, "cast_2senders");
  if (want("call_external")) call_external(rt);
  if (want("call_process")) call_process(rt);
  if (want("call_concurrent_64")) call_concurrent(rt);
  if (want("ring_1000")) ring(rt);
  if (want("idle_cpu")) idle_cpu(rt);
  if (want("monitor_ns") || want("whereis_ns") || want("call_by_name_ns"))
    names(rt, want("monitor_ns"), want("whereis_ns"), want("call_by_name_ns"));
  if (want("spawn_1m") || want("bytes_per_server") || want("stop_1m"))
    spawn_stop(rt, want("spawn_1m"), want("bytes_per_server"), want("stop_1m"));
  return 0;
}
