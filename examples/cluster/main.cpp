// examples/cluster: otpp as a node of an Elixir cluster.
//
// With no arguments it plays both sides on this machine: it serves the rate
// limiter as otpp_cluster@HOST, starts the Elixir application beside it
// (cluster.exs: it calls the rate limiter), then calls the application's
// SessionStore, and stops both.
//
// To run the two sides yourself, in two terminals:
//   build/release/examples/cluster/otpp_example_cluster --serve
//   elixir --sname app --cookie otpp_cluster_demo examples/cluster/cluster.exs otpp_cluster@HOST
// (--serve runs until Ctrl-C; the Elixir side until Ctrl-D.)
#include <csignal>
#include <cstdio>
#include <string>

#include <otpp/node.hpp>
#include <otpp/otpp.hpp>

#include "beam_peer.hpp"
#include "cluster.hpp"

namespace {
const char* const cookie = "otpp_cluster_demo";

int serve_until_signal(otpp::node& n) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::printf("serving rate_limiter as %s (cookie %s); Ctrl-C stops\n", n.name().c_str(), cookie);
  std::printf("  elixir --sname app --cookie %s examples/cluster/cluster.exs %s\n", cookie, n.name().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  const bool serve_only = argc > 1 && std::string{argv[1]} == "--serve";
  if (serve_only) {
    // Before any thread starts: every thread then leaves SIGINT to sigwait.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
  otpp::runtime rt{{.workers = 2}};
  auto limiter = rt.start<examples::rate_limiter>(examples::rate_limiter_options{.limit = 5}).value();
  auto gateway = rt.start<examples::rate_limit_gateway>(limiter).value();
  otpp::node node{{.name = serve_only ? "otpp_cluster" : "otpp_cluster_" + std::to_string(::getpid()), .cookie = cookie}};
  node.serve("rate_limiter", gateway);
  if (serve_only) return serve_until_signal(node);

  // Both sides here: the Elixir application calls the rate limiter...
  otpp_test::beam_peer app{"otpp_cluster_app_" + std::to_string(::getpid()), cookie, OTPP_CLUSTER_DIR "/cluster.exs",
                           {node.name()}};
  std::string app_node;
  while (auto line = app.read_line()) {
    if (line->rfind("ready ", 0) == 0) {
      app_node = line->substr(6);
      break;
    }
    std::printf("%s\n", line->c_str());
  }
  if (app_node.empty()) {
    std::fprintf(stderr, "the Elixir application did not start (is elixir installed?)\n");
    return 1;
  }
  // ...and we call its SessionStore.
  using otpp::atom;
  using otpp::term;
  const otpp::remote_name store{"session_store", app_node};
  auto put = node.try_call(store, term::tuple(atom{"put"}, "s-1", term::map({{atom{"user"}, "alice"}, {atom{"role"}, atom{"admin"}}})));
  auto got = node.try_call(store, term::tuple(atom{"get"}, "s-1"));
  auto missing = node.try_call(store, term::tuple(atom{"get"}, "s-2"));
  auto count = node.try_call(store, atom{"count"});
  if (!put || !got || !missing || !count) {
    std::fprintf(stderr, "calling the session store failed\n");
    return 1;
  }
  std::printf("otpp: put s-1 -> %s\n", fmt::format("{}", *put).c_str());
  std::printf("otpp: get s-1 -> %s\n", fmt::format("{}", *got).c_str());
  std::printf("otpp: get s-2 -> %s\n", fmt::format("{}", *missing).c_str());
  std::printf("otpp: sessions on %s: %s\n", app_node.c_str(), fmt::format("{}", *count).c_str());
  return app.finish();
}
