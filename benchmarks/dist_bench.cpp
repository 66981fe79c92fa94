// Distribution benchmarks: GenServer-style calls between nodes over
// loopback TCP, in each direction, beside BEAM <-> BEAM.
//
//   otpp_dist_bench [--quick] [--otpp-only] [--anchor PATH/dist_call.sh]
//   (OTPP_BUSY_POLL_US=N sets node_options::busy_poll on both otpp nodes)
//
// Figures (as ../shared/anchors/beam/dist_call.sh names them):
//   dist_call_ns             sequential calls of a counter on the other node
//   dist_call_1k_ns          the same, a 1 KiB binary echoed
//   dist_call_concurrent_64  64 callers, calls/s
// Directions: otpp -> otpp (a second otpp_dist_bench process serves),
// Elixir -> otpp, otpp -> Elixir; and BEAM <-> BEAM when the anchor script
// is given (it takes a minute or two). otpp's callers are processes that
// co_await their calls: no worker waits on the network.
#include <otpp/node.hpp>
#include <otpp/otpp.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "beam_peer.hpp"

using otpp::atom;
using otpp::term;
using clock_type = std::chrono::steady_clock;

namespace {

const std::string cookie = "otpp_dist_bench";

struct counter : otpp::gen_server<counter> {
  std::int64_t n = 0;
  term handle_call(term req) {
    if (req.is_atom("inc")) return ++n;
    if (req.is_tuple(2) && req[0].is_atom("echo")) return req[1];
    return atom{"bad_request"};
  }
};

/// Calls `to` `count` times in a row, each co_awaited.
struct driver : otpp::gen_server<driver> {
  otpp::node* node;
  otpp::remote_name to;
  driver(otpp::node* n, otpp::remote_name t) : node{n}, to{std::move(t)} {}
  struct run {
    int count;
    term request;
  };
  otpp::async<std::int64_t> handle_call(run r) {
    std::int64_t ok = 0;
    for (int k = 0; k < r.count; ++k) {
      auto pending = node->async_call(to, r.request, std::chrono::seconds{30});
      (void)co_await pending;
      ++ok;
    }
    co_return ok;
  }
};

struct figures {
  double call_ns = 0, call_1k_ns = 0, concurrent = 0;
};

figures measure(otpp::runtime& rt, otpp::node& n, const otpp::remote_name& to, int seq, int per) {
  figures f;
  auto d = rt.start<driver>(&n, to).value();
  const term inc = atom{"inc"};
  const term echo = term::tuple(atom{"echo"}, otpp::binary{std::string(1024, 'x')});
  (void)otpp::call(d, driver::run{seq / 10, inc}, otpp::infinity);
  auto t0 = clock_type::now();
  (void)otpp::call(d, driver::run{seq, inc}, otpp::infinity);
  f.call_ns = std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / seq;
  t0 = clock_type::now();
  (void)otpp::call(d, driver::run{seq, echo}, otpp::infinity);
  f.call_1k_ns = std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / seq;
  std::vector<otpp::server<driver>> ds;
  for (int k = 0; k < 64; ++k) ds.push_back(rt.start<driver>(&n, to).value());
  t0 = clock_type::now();
  std::vector<otpp::pending_call<std::int64_t>> calls;
  for (auto& x : ds) calls.push_back(otpp::async_call(x, driver::run{per, inc}, otpp::infinity));
  for (auto& c : calls) (void)c.get();
  f.concurrent = 64.0 * per / std::chrono::duration<double>(clock_type::now() - t0).count();
  return f;
}

std::chrono::microseconds busy_poll{100};

int serve(const std::string& name) {
  otpp::runtime rt{{.workers = 1}};
  otpp::node n{{.name = name, .cookie = cookie, .busy_poll = busy_poll}};
  auto c = rt.start<counter>().value();
  (void)n.serve("counter", c);
  std::printf("ready %s\n", n.name().c_str());
  std::fflush(stdout);
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {
  }
  return 0;
}

/// "name value" or "name: value unit" lines: the first number after the name.
std::map<std::string, double> read_figures(otpp_test::child_process& p) {
  std::map<std::string, double> out;
  while (auto line = p.read_line(std::chrono::minutes{10})) {
    const auto end = line->find_first_of(" :");
    if (end == std::string::npos) continue;
    const std::string name = line->substr(0, end);
    std::size_t at = line->find_first_of("0123456789", end);
    if (at == std::string::npos) continue;
    try {
      out[name] = std::stod(line->substr(at));
    } catch (...) {
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* bp = std::getenv("OTPP_BUSY_POLL_US")) busy_poll = std::chrono::microseconds{std::atoi(bp)};
  if (argc == 3 && std::string{argv[1]} == "serve") return serve(argv[2]);
  bool quick = false;
  bool otpp_only = false;  // otpp <-> otpp alone: seconds, for A/B runs
  std::string anchor;
  for (int k = 1; k < argc; ++k) {
    std::string a = argv[k];
    if (a == "--quick") quick = true;
    if (a == "--otpp-only") otpp_only = true;
    if (a == "--anchor" && k + 1 < argc) anchor = argv[++k];
  }
  const int seq = quick ? 2000 : 20000;
  const int per = quick ? 200 : 2000;
  const std::string tag = std::to_string(::getpid());

  otpp::runtime rt{{.workers = 1}};  // the other core serves (or runs the peer)
  otpp::node n{{.name = "otpp_bench_cli_" + tag, .cookie = cookie, .busy_poll = busy_poll}};

  // otpp -> otpp: a second process of this program serves.
  otpp_test::child_process server{{"/proc/self/exe", "serve", "otpp_bench_srv_" + tag}};
  auto ready = server.read_line();
  if (!ready) return std::fprintf(stderr, "the serving process did not start\n"), 1;
  const std::string otpp_server = ready->substr(6);
  figures oo = measure(rt, n, {"counter", otpp_server}, seq, per);

  if (otpp_only) {
    std::printf("%-26s %14.0f\n%-26s %14.0f\n%-26s %14.0f\n", "dist_call_ns", oo.call_ns, "dist_call_1k_ns", oo.call_1k_ns,
                "dist_call_concurrent_64/s", oo.concurrent);
    return 0;
  }
  // Elixir -> otpp.
  otpp_test::beam_peer ex_client{"otpp_bench_ex_" + tag, cookie, OTPP_BENCH_BEAM_DIR "/dist_client.exs",
                                 {otpp_server, std::to_string(seq), std::to_string(per)}};
  auto eo = read_figures(ex_client);
  (void)ex_client.finish();
  (void)server.finish();

  // otpp -> Elixir.
  otpp_test::beam_peer ex_server{"otpp_bench_exsrv_" + tag, cookie, OTPP_BENCH_BEAM_DIR "/dist_server.exs"};
  ready = ex_server.read_line();
  figures oe{};
  if (ready) oe = measure(rt, n, {"counter", ready->substr(6)}, seq, per);
  (void)ex_server.finish();

  // BEAM <-> BEAM, the peer's own script.
  std::map<std::string, double> bb;
  if (!anchor.empty()) {
    otpp_test::child_process a{{"bash", anchor}};
    bb = read_figures(a);
    (void)a.finish();
  }

  auto col = [](double v) { return v > 0 ? fmt::format("{:>14.0f}", v) : fmt::format("{:>14}", "-"); };
  std::printf("%-26s %14s %14s %14s %14s\n", "figure", "otpp<->otpp", "Elixir->otpp", "otpp->Elixir", "BEAM<->BEAM");
  std::printf("%-26s %s %s %s %s\n", "dist_call_ns", col(oo.call_ns).c_str(), col(eo["dist_call_ns"]).c_str(),
              col(oe.call_ns).c_str(), col(bb["dist_call_ns"]).c_str());
  std::printf("%-26s %s %s %s %s\n", "dist_call_1k_ns", col(oo.call_1k_ns).c_str(), col(eo["dist_call_1k_ns"]).c_str(),
              col(oe.call_1k_ns).c_str(), col(bb["dist_call_1k_ns"]).c_str());
  std::printf("%-26s %s %s %s %s\n", "dist_call_concurrent_64/s", col(oo.concurrent).c_str(),
              col(eo["dist_call_concurrent_64"]).c_str(), col(oe.concurrent).c_str(),
              col(bb["dist_call_concurrent_64"]).c_str());
  std::printf("(%d sequential calls, 64 x %d concurrent; otpp: 1 worker each side, callers co_await)\n", seq, per);
  return 0;
}
