// otpp::node against the real BEAM (Elixir nodes started by the test) and
// against another otpp node. Everything binds to loopback and stops itself.
#include <otpp/node.hpp>
#include <otpp/otpp.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <random>
#include <mutex>
#include <string>
#include <vector>

#include "beam_peer.hpp"
#include "catch.hpp"
#include "support.hpp"

using otpp::atom;
using otpp::term;

namespace {

const std::string cookie = "otpp_test_cookie";

std::string unique(const std::string& base) { return base + "_" + std::to_string(::getpid()); }
std::string script(const char* name) { return std::string{OTPP_TEST_BEAM_DIR} + "/" + name; }

/// Served to Elixir: a counter that answers terms.
struct remote_counter : otpp::gen_server<remote_counter> {
  using info_types = otpp::type_list<term>;
  std::int64_t n = 0;
  std::vector<term> infos;
  otpp::remote_pid worker;

  explicit remote_counter(otpp::remote_pid w = {}) : worker{std::move(w)} {}

  term handle_call(term req) {
    if (req.is_atom("get")) return n;
    if (req.is_atom("infos")) return otpp::to_term(infos);
    if (req.is_atom("worker")) return worker;
    if (req.is_atom("crash")) throw std::runtime_error{"asked to crash"};
    if (req.is_tuple(2) && req[0].is_atom("add")) return n += req[1].as<std::int64_t>();
    if (req.is_tuple(2) && req[0].is_atom("echo")) return req[1];
    return term::tuple(atom{"error"}, atom{"unknown_request"});
  }
  void handle_cast(term msg) {
    if (msg.is_tuple(2) && msg[0].is_atom("add")) n += msg[1].as<std::int64_t>();
  }
  void handle_info(term msg) { infos.push_back(std::move(msg)); }
};

/// Records what reaches it (nodedown, plain terms).
struct recorder : otpp::gen_server<recorder> {
  using info_types = otpp::type_list<otpp::nodedown, term>;
  std::vector<std::string> seen;
  struct get {
    using reply_type = std::vector<std::string>;
  };
  std::vector<std::string> handle_call(get) { return seen; }
  void handle_info(otpp::nodedown d) { seen.push_back("nodedown " + d.node); }
  void handle_info(term t) { seen.push_back(fmt::format("{}", t)); }
};

/// Asks a remote store from a coroutine handler.
struct asker : otpp::gen_server<asker> {
  otpp::node* node;
  otpp::remote_name to;
  asker(otpp::node* n, otpp::remote_name t) : node{n}, to{std::move(t)} {}
  struct ask {
    std::string key;
  };
  otpp::async<term> handle_call(ask a) {
    auto pending = node->async_call(to, term::tuple(atom{"get"}, a.key));
    co_return co_await pending;
  }
  struct ask_nobody {};
  otpp::async<std::string> handle_call(ask_nobody) {
    try {
      auto pending = node->async_call({"nobody", to.node}, atom{"x"});
      (void)co_await pending;
    } catch (const otpp::exit_error& e) {
      co_return std::string{e.what()};
    }
    co_return std::string{"no exception"};
  }
};

/// Hears nodedown for one peer.
struct watcher : otpp::gen_server<watcher> {
  using info_types = otpp::type_list<otpp::nodedown>;
  otpp::node* node;
  std::string peer;
  std::vector<std::string> seen;
  watcher(otpp::node* n, std::string p) : node{n}, peer{std::move(p)} {}
  void init() { node->monitor_node(peer); }
  struct get {
    using reply_type = std::vector<std::string>;
  };
  std::vector<std::string> handle_call(get) { return seen; }
  void handle_info(otpp::nodedown d) { seen.push_back(d.node); }
};

/// Log lines, for what only the log can show (a refused handshake).
struct log_lines {
  std::mutex mu;
  std::vector<std::string> lines;
  log_lines() {
    otpp::set_logger([this](otpp::log_level, std::string_view l) {
      std::lock_guard lock{mu};
      lines.emplace_back(l);
    });
  }
  ~log_lines() { otpp::set_logger(nullptr); }
  bool contains(std::string_view s) {
    std::lock_guard lock{mu};
    for (auto& l : lines)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
};

/// The node name an Elixir peer prints once ready ("ready <node>").
std::string ready_node(otpp_test::beam_peer& peer) {
  auto ready = peer.read_line();
  REQUIRE(ready.has_value());
  REQUIRE(ready->rfind("ready ", 0) == 0);
  return ready->substr(6);
}

std::map<std::string, std::string> read_results(otpp_test::beam_peer& peer) {
  std::map<std::string, std::string> out;
  while (auto line = peer.read_line()) {
    auto sp = line->find(' ');
    if (sp == std::string::npos) continue;
    out[line->substr(0, sp)] = line->substr(sp + 1);
  }
  return out;
}

}  // namespace

TEST_CASE("node: an Elixir node calls, casts and sends to an otpp server") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node n{{.name = unique("otpp_a"), .cookie = cookie}};
  auto worker = rt.start<remote_counter>().value();
  auto counter = rt.start<remote_counter>(n.pid_of(worker)).value();
  REQUIRE(n.serve("counter", counter));
  CHECK_FALSE(n.serve("counter", counter));  // the name is taken while it lives

  otpp_test::beam_peer peer{unique("ex_caller"), cookie, script("call_otpp.exs"), {n.name()}};
  REQUIRE(peer.started());
  auto r = read_results(peer);
  CHECK(peer.finish() == 0);

  CHECK(r["ping"] == ":pong");
  CHECK(r["add"] == "5");
  CHECK(r["get"] == "15");  // the cast came before the second call
  CHECK(r["infos"] == "[hello: \"world\"]");  // Elixir prints a list of 2-tuples headed by atoms as a keyword list
  CHECK(r["echo"] == "true");  // maps, bignums, floats, pids, refs, improper lists, charlists, UTF-8 atoms
  CHECK(r["worker_pid"] == "true");
  CHECK(r["by_pid"] == "1");
  CHECK(r["linked_exit"] == "{:exception, \"std::runtime_error: asked to crash\"}");
  CHECK(r["noproc"] == ":noproc");  // the caller's monitor on an unserved name
  CHECK(r["crash"] == "{:exception, \"std::runtime_error: asked to crash\"}");
  CHECK(r["down"] == "{:exception, \"std::runtime_error: asked to crash\"}");
  CHECK_FALSE(counter.pid().alive());
}

TEST_CASE("node: an otpp node calls an Elixir GenServer") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node n{{.name = unique("otpp_b"), .cookie = cookie}};
  otpp_test::beam_peer peer{unique("ex_store"), cookie, script("store_server.exs")};
  REQUIRE(peer.started());
  const std::string beam = ready_node(peer);
  const otpp::remote_name store{"store", beam};

  // From a plain thread.
  CHECK(n.try_call(store, term::tuple(atom{"put"}, "k", 1)).value() == atom{"ok"});
  CHECK(n.try_call(store, term::tuple(atom{"get"}, "k")).value() == term{1});
  n.cast(store, term::tuple(atom{"put"}, "c", 2));
  n.send(store, term::tuple(atom{"put"}, "s", 3));
  CHECK(n.try_call(store, term::tuple(atom{"get"}, "c")).value() == term{2});
  CHECK(n.try_call(store, term::tuple(atom{"get"}, "s")).value() == term{3});
  CHECK(n.nodes() == std::vector<std::string>{beam});

  // GenServer.multi_call and abcast to the Elixir node (and to this one,
  // which serves no "store").
  n.abcast({beam}, "store", term::tuple(atom{"put"}, "m", 4));
  const auto many = n.multi_call({beam, n.name()}, "store", term::tuple(atom{"get"}, "m"));
  REQUIRE(many.replies.size() == 1);
  CHECK(many.replies[0] == std::pair<std::string, term>{beam, term{4}});
  REQUIRE(many.bad_nodes.size() == 1);
  CHECK(many.bad_nodes[0].first == n.name());
  CHECK(many.bad_nodes[0].second.kind() == otpp::exit_kind::noproc);

  // From a process, with co_await: the worker is free while it waits.
  auto a = rt.start<asker>(&n, store).value();
  CHECK(otpp::call(a, asker::ask{"k"}) == term{1});

  // Failures come back as OTP's reasons.
  CHECK(n.try_call({"nobody", beam}, atom{"x"}).error().kind() == otpp::exit_kind::noproc);
  auto slow = n.try_call(store, atom{"hold"}, std::chrono::milliseconds{100});
  CHECK(slow.error().kind() == otpp::exit_kind::timeout);
  auto crash = n.try_call(store, atom{"crash"});
  REQUIRE_FALSE(crash);
  CHECK(crash.error().to_string() == "error(boom)");
  CHECK(n.try_call(store, atom{"x"}).error().kind() == otpp::exit_kind::noproc);  // it is gone

  // In a coroutine handler a failure is thrown, naming the call.
  CHECK(otpp::call(a, asker::ask_nobody{}) == "otpp::async_call({nobody, " + beam + "}, otpp::term, 5000 ms): noproc");
  CHECK(peer.finish() == 0);
}

/// Monitors remote processes, and says what it heard.
struct remote_watcher : otpp::gen_server<remote_watcher> {
  using info_types = otpp::type_list<otpp::remote_down, otpp::nodedown>;
  otpp::node* node;
  std::vector<std::string> seen;
  explicit remote_watcher(otpp::node* n) : node{n} {}
  struct watch_name {
    otpp::remote_name name;
  };
  otpp::remote_ref handle_call(watch_name w) { return node->monitor(w.name); }
  struct link_to {
    otpp::remote_pid pid;
  };
  bool handle_call(link_to l) {
    node->link(l.pid);
    return true;
  }
  struct get {
    using reply_type = std::vector<std::string>;
  };
  std::vector<std::string> handle_call(get) { return seen; }
  void handle_info(otpp::remote_down d) { seen.push_back(fmt::format("{} {}", d.target, d.reason.to_string())); }
  void handle_info(otpp::nodedown d) { seen.push_back("nodedown " + d.node); }
};

TEST_CASE("node: otpp processes monitor and link Elixir processes") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node n{{.name = unique("otpp_g"), .cookie = cookie}};
  otpp_test::beam_peer peer{unique("ex_linked"), cookie, script("store_server.exs")};
  const std::string beam = ready_node(peer);

  auto w = rt.start<remote_watcher>(&n).value();
  (void)otpp::call(w, remote_watcher::watch_name{{"store", beam}});
  (void)otpp::call(w, remote_watcher::watch_name{{"nobody", beam}});
  CHECK(otpp_test::eventually([&] {
    return otpp::call(w, remote_watcher::get{}) == std::vector<std::string>{"{nobody, " + beam + "} noproc"};
  }));
  CHECK(n.try_call({"store", beam}, atom{"crash"}).error().to_string() == "error(boom)");
  CHECK(otpp_test::eventually([&] { return otpp::call(w, remote_watcher::get{}).size() == 2; }));
  CHECK(otpp::call(w, remote_watcher::get{})[1] == "{store, " + beam + "} error(boom)");

  // A linked process dies with the Elixir process it is linked to.
  auto linked = rt.start<remote_watcher>(&n).value();
  const auto other = n.try_call({"other", beam}, atom{"whoami"}).value().as<otpp::remote_pid>();
  CHECK(otpp::call(linked, remote_watcher::link_to{other}));
  otpp::exit_watch dies{linked.pid()};
  CHECK(n.try_call({"other", beam}, atom{"crash"}).error().to_string() == "error(boom)");
  CHECK(dies.wait(std::chrono::seconds{10}).value().to_string() == "error(boom)");
  CHECK(peer.finish() == 0);
}

TEST_CASE("node: when the Elixir node dies, calls fail with noconnection and watchers hear nodedown") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node n{{.name = unique("otpp_c"), .cookie = cookie}};
  otpp_test::beam_peer peer{unique("ex_doomed"), cookie, script("store_server.exs")};
  const std::string beam = ready_node(peer);
  REQUIRE(n.connect(beam));

  auto w = rt.start<watcher>(&n, beam).value();
  auto mon = rt.start<remote_watcher>(&n).value();
  (void)otpp::call(mon, remote_watcher::watch_name{{"store", beam}});
  // And a process linked to it goes down with the connection.
  auto linked = rt.start<remote_watcher>(&n).value();
  CHECK(otpp::call(linked, remote_watcher::link_to{n.try_call({"other", beam}, atom{"whoami"}).value().as<otpp::remote_pid>()}));
  otpp::exit_watch dies{linked.pid()};
  auto pending = n.async_try_call({"store", beam}, atom{"hold"}, std::chrono::seconds{30});
  CHECK_FALSE(pending.wait_for(std::chrono::milliseconds{50}));  // held over there: not answered
  peer.kill_now();
  CHECK(pending.get().error().kind() == otpp::exit_kind::noconnection);
  CHECK(otpp_test::eventually([&] { return otpp::call(w, watcher::get{}) == std::vector<std::string>{beam}; }));
  CHECK(otpp_test::eventually([&] {
    return otpp::call(mon, remote_watcher::get{}) == std::vector<std::string>{"{store, " + beam + "} noconnection"};
  }));
  CHECK(dies.wait(std::chrono::seconds{10}).value().kind() == otpp::exit_kind::noconnection);
  CHECK(n.nodes().empty());
  // A call after the close tries a fresh connection (none can be made),
  // not the closed one: it fails with noconnection, not at its timeout.
  const auto before = std::chrono::steady_clock::now();
  CHECK(n.try_call({"store", beam}, atom{"get"}, std::chrono::seconds{30}).error().kind() == otpp::exit_kind::noconnection);
  CHECK(std::chrono::steady_clock::now() - before < std::chrono::seconds{20});
}

TEST_CASE("node: a wrong cookie is refused on both sides") {
  log_lines log;
  otpp::node n{{.name = unique("otpp_d"), .cookie = cookie}};
  // Elixir with another cookie pings us: refused.
  otpp_test::beam_peer wrong{unique("ex_wrong"), "not_the_cookie", script("call_otpp.exs"), {n.name()}};
  auto first = wrong.read_line();
  REQUIRE(first.has_value());
  CHECK(*first == "ping :pang");
  wrong.kill_now();
  CHECK(otpp_test::eventually([&] { return log.contains("refused an incoming connection"); }));
  // And we, with another cookie, cannot reach an Elixir node.
  otpp_test::beam_peer store{unique("ex_store2"), cookie, script("store_server.exs")};
  const std::string beam = ready_node(store);
  otpp::node stranger{{.name = unique("otpp_stranger"), .cookie = "not_the_cookie"}};
  auto r = stranger.try_call({"store", beam}, atom{"x"}, std::chrono::seconds{10});
  CHECK(r.error().kind() == otpp::exit_kind::noconnection);
  CHECK(log.contains("cannot connect to " + beam));
}

TEST_CASE("node: two otpp nodes call, link-free monitor and fail as Erlang's do") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node a{{.name = unique("otpp_e1"), .cookie = cookie}};
  auto counter = rt.start<remote_counter>().value();
  REQUIRE(a.serve("counter", counter));
  const otpp::remote_name to{"counter", a.name()};
  {
    otpp::node b{{.name = unique("otpp_e2"), .cookie = cookie}};
    CHECK(b.try_call(to, term::tuple(atom{"add"}, 2)).value() == term{2});
    b.cast(to, term::tuple(atom{"add"}, 3));
    CHECK(b.try_call(to, atom{"get"}).value() == term{5});
    // By pid, twice (the second from the frame heads kept for that pid).
    const otpp::remote_pid by_pid = a.pid_of(counter);
    CHECK(b.try_call(by_pid, term::tuple(atom{"add"}, 1)).value() == term{6});
    CHECK(b.try_call(by_pid, term::tuple(atom{"add"}, -1)).value() == term{5});
    // A plain send to an exported pid reaches handle_info(term).
    auto rec = rt.start<recorder>().value();
    b.send(a.pid_of(rec.pid()), term::tuple(atom{"hi"}, 1));
    CHECK(otpp_test::eventually([&] { return otpp::call(rec, recorder::get{}).size() == 1; }));
    CHECK(otpp::call(rec, recorder::get{})[0] == "{hi, 1}");
    // The server's death fails the call with its reason, at once.
    auto crash = b.try_call(to, atom{"crash"});
    CHECK(crash.error().kind() == otpp::exit_kind::custom);
    CHECK(crash.error().detail().find("asked to crash") != std::string::npos);
    CHECK(b.try_call(to, atom{"get"}).error().kind() == otpp::exit_kind::noproc);
    CHECK(b.try_call(by_pid, atom{"get"}).error().kind() == otpp::exit_kind::noproc);
  }
  // b is gone: a no longer lists it.
  CHECK(otpp_test::eventually([&] { return a.nodes().empty(); }));
}

namespace {
// Fans a request out with async_multi_call from a coroutine handler.
struct fanner : otpp::gen_server<fanner> {
  struct fan {
    std::vector<std::string> nodes;
  };
  otpp::node* via;
  explicit fanner(otpp::node* n) : via{n} {}
  otpp::async<otpp::multi_call_result> handle_call(fan f) {
    // The term in a statement of its own: GCC 12 mishandles a temporary
    // holding a string inside a co_await expression (docs/semantics.md 1.3a).
    const term get{atom{"get"}};
    co_return co_await via->async_multi_call(f.nodes, "counter", get, std::chrono::seconds{10});
  }
};
}  // namespace

TEST_CASE("node: multi_call and abcast reach a served name on several nodes at once") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node a{{.name = unique("otpp_m1"), .cookie = cookie}};
  otpp::node b{{.name = unique("otpp_m2"), .cookie = cookie}};
  auto ca = rt.start<remote_counter>().value();
  auto cb = rt.start<remote_counter>().value();
  REQUIRE(a.serve("counter", ca));
  REQUIRE(b.serve("counter", cb));
  const std::string nobody = unique("nobody") + a.name().substr(a.name().find('@'));
  // b's own name among them: its server is reached here, not through the network.
  b.abcast({a.name(), b.name()}, "counter", term::tuple(atom{"add"}, 2));
  const auto r = b.multi_call({a.name(), nobody, b.name()}, "counter", term::tuple(atom{"add"}, 1), std::chrono::seconds{10});
  for (const auto& [n, why] : r.bad_nodes) UNSCOPED_INFO(n << ": " << fmt::format("{}", why));
  REQUIRE(r.replies.size() == 2);
  CHECK(r.replies[0] == std::pair<std::string, term>{a.name(), term{3}});  // the cast came first, on the same way
  CHECK(r.replies[1] == std::pair<std::string, term>{b.name(), term{3}});
  REQUIRE(r.bad_nodes.size() == 1);
  CHECK(r.bad_nodes[0].first == nobody);
  CHECK(r.bad_nodes[0].second.kind() == otpp::exit_kind::noconnection);
  // A node without the name: noproc, beside the others' replies.
  const auto missing = b.multi_call({a.name(), b.name()}, "nothing_here", atom{"get"});
  CHECK(missing.replies.empty());
  REQUIRE(missing.bad_nodes.size() == 2);
  CHECK(missing.bad_nodes[0].second.kind() == otpp::exit_kind::noproc);
  CHECK(missing.bad_nodes[1].second.kind() == otpp::exit_kind::noproc);
  // From a coroutine handler, holding no worker meanwhile.
  auto f = rt.start<fanner>(&b).value();
  const auto fanned = otpp::call(f, fanner::fan{{a.name(), b.name()}}, std::chrono::seconds{20});
  REQUIRE(fanned.replies.size() == 2);
  CHECK(fanned.replies[0].second == term{3});
  CHECK(fanned.replies[1].second == term{3});
  otpp::stop(f);
}

TEST_CASE("node: frames larger than a read, and frames split across reads, arrive whole") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node a{{.name = unique("otpp_f1"), .cookie = cookie}};
  auto echo = rt.start<remote_counter>().value();
  REQUIRE(a.serve("echo", echo));
  otpp::node b{{.name = unique("otpp_f2"), .cookie = cookie}};
  const otpp::remote_name to{"echo", a.name()};
  // Sizes about the 64 KiB one read takes and well past it, many in flight
  // at once, so that frames begin and end anywhere in a read.
  const std::size_t sizes[] = {1, 1000, 65535, 65536, 70000, 200000, std::size_t{1} << 20};
  std::vector<std::pair<std::string, otpp::pending_call<term>>> calls;
  for (std::size_t round = 0; round < 6; ++round) {
    for (std::size_t n : sizes) {
      std::string blob(n, '\0');
      for (std::size_t i = 0; i < n; ++i) blob[i] = static_cast<char>('a' + (i * 7 + round + n) % 26);
      auto pending = b.async_call(to, term::tuple(atom{"echo"}, otpp::binary{blob}), std::chrono::seconds{60});
      calls.emplace_back(std::move(blob), std::move(pending));
    }
  }
  std::size_t whole = 0;
  for (auto& [blob, pending] : calls) {
    const auto r = pending.get();
    REQUIRE(r.has_value());
    REQUIRE(r->is<otpp::binary>());
    if (r->as<otpp::binary>().bytes == blob) ++whole;
  }
  CHECK(whole == calls.size());
  CHECK(b.try_call(to, atom{"get"}).value() == term{0});  // the connection is still up and in step
}

namespace {
/// A hand-made peer's handshake with `to` under the name `as`; the
/// connection is left open, and the hand-made peer never ticks.
int handshake_as(const otpp::node& to, const std::string& as) {
  namespace dist = otpp::detail::dist;
  const auto deadline = dist::clock::now() + std::chrono::seconds{5};
  std::string error;
  const auto port = dist::epmd_lookup("127.0.0.1", to.name().substr(0, to.name().find('@')), error, deadline);
  REQUIRE(port.has_value());
  const int fd = dist::tcp_connect("127.0.0.1", *port, deadline);
  REQUIRE(fd >= 0);
  auto r = dist::handshake_out(fd, as, dist::our_flags, 1, cookie, to.name(), deadline);
  INFO("handshake as " << as);
  REQUIRE(r.error.empty());
  return fd;
}

/// True once the other side has closed `fd` (within 10 s).
bool closed_by_peer(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 10'000) != 1) return false;
  char c;
  return ::recv(fd, &c, 1, 0) <= 0;
}

bool lists(const otpp::node& n, const std::string& peer) {
  for (auto& p : n.nodes())
    if (p == peer) return true;
  return false;
}
}  // namespace

TEST_CASE("node: garbage after the handshake closes only that connection") {
  log_lines log;
  otpp::runtime rt{{.workers = 2}};
  otpp::node a{{.name = unique("otpp_f1"), .cookie = cookie}};
  auto counter = rt.start<remote_counter>().value();
  REQUIRE(a.serve("counter", counter));
  otpp::node good{{.name = unique("otpp_f2"), .cookie = cookie}};
  CHECK(good.try_call({"counter", a.name()}, atom{"get"}).value() == term{0});

  // A hand-made peer: a real handshake, then frames of our own making.
  // Each attack reconnects under the same name as the one before, often
  // while the node is still closing that one's connection.
  auto attack = [&](const std::string& frame, const char* expect) {
    INFO("the attack that should log: " << expect);
    namespace dist = otpp::detail::dist;
    const int fd = handshake_as(a, unique("otpp_f3") + a.name().substr(a.name().find('@')));
    const auto deadline = dist::clock::now() + std::chrono::seconds{5};
    REQUIRE(dist::write_all(fd, frame, deadline));
    char c;
    CHECK_FALSE(dist::read_exact(fd, &c, 1, deadline));  // closed by the node
    ::close(fd);
    CHECK(otpp_test::eventually([&] { return log.contains(expect); }));
  };
  const std::string not_pass_through{"\0\0\0\2\x71\x83", 6};
  attack(not_pass_through, "not a pass-through frame");
  const std::string truncated_term{"\0\0\0\5\x70\x83\x68\x03\x61", 9};
  attack(truncated_term, "malformed frame");
  const std::string huge{"\x7f\xff\xff\xff", 4};
  attack(huge, "a frame of 2147483647 bytes");
  const std::string bad_control{"\0\0\0\4\x70\x83\x61\x07", 8};
  attack(bad_control, "not a tuple with an operation");

  // Random corruptions of valid frames, each on a connection of its own:
  // whatever they decode to, the node stays up (the sanitizers watch the
  // decoder and the dispatch).
  {
    namespace dist = otpp::detail::dist;
    const std::string host = a.name().substr(a.name().find('@'));
    auto frame_of = [](const term& control, const term& message) {
      std::string body = "p" + otpp::encode_term(control) + otpp::encode_term(message);
      std::string f;
      for (int k = 3; k >= 0; --k) f.push_back(static_cast<char>(body.size() >> (8 * k)));
      return f + body;
    };
    const otpp::remote_pid from{unique("otpp_fz") + host, 1, 0, 1};
    auto target = rt.start<remote_counter>().value();
    REQUIRE(a.serve("target", target));
    const std::vector<std::string> bases{
        frame_of(term::tuple(6, from, atom{""}, atom{"nobody"}),
                 term::tuple(atom{"$gen_call"}, term::tuple(from, otpp::remote_ref{from.node, 1, {1, 2, 3}}),
                             term::map({{atom{"k"}, term::list(1, 2.5, "x")}}))),
        frame_of(term::tuple(19, from, atom{"nobody"}, otpp::remote_ref{from.node, 1, {4, 5, 6}}), term{}),
        // The call protocol to a served name, which the node reads in
        // place rather than as terms: a plain tag and OTP 24's alias tag.
        // A corruption may make any signal of it (an exit, say), so its
        // target is a server of its own.
        frame_of(term::tuple(6, from, atom{""}, atom{"target"}),
                 term::tuple(atom{"$gen_call"}, term::tuple(from, otpp::remote_ref{from.node, 1, {7, 8, 9}}),
                             term::tuple(atom{"echo"}, term::map({{atom{"k"}, term::list(1, "x")}})))),
        frame_of(term::tuple(6, from, atom{""}, atom{"target"}),
                 term::tuple(atom{"$gen_call"},
                             term::tuple(from, term{otpp::term_list{{atom{"alias"}}, {otpp::remote_ref{from.node, 1, {1, 1, 1}}}}}),
                             term::tuple(atom{"echo"}, 1))),
        frame_of(term::tuple(19, from, atom{"target"}, otpp::remote_ref{from.node, 1, {2, 2, 2}}), term{}),
        frame_of(term::tuple(20, from, atom{"target"}, otpp::remote_ref{from.node, 1, {2, 2, 2}}), term{})};
    std::mt19937 rng{17};
    for (int round = 0; round < 80; ++round) {
      std::string f = bases[static_cast<std::size_t>(round) % bases.size()];
      for (int e = 0; e < 3; ++e) f[4 + rng() % (f.size() - 4)] = static_cast<char>(rng());
      if (round % 3 == 0) {
        // Cut short, its length told truthfully: every read must stop at the end.
        f.resize(6 + rng() % (f.size() - 6));
        const auto body = static_cast<std::uint32_t>(f.size() - 4);
        for (int k = 0; k < 4; ++k) f[static_cast<std::size_t>(k)] = static_cast<char>(body >> (24 - 8 * k));
      }
      const int fd = handshake_as(a, unique("otpp_fz" + std::to_string(round)) + host);
      CHECK(dist::write_all(fd, f, dist::clock::now() + std::chrono::seconds{5}));
      ::close(fd);
    }
  }

  // The good connection never noticed.
  CHECK(good.try_call({"counter", a.name()}, term::tuple(atom{"add"}, 1)).value() == term{1});
}

// A peer's host crashed, or a cable was cut: the node still has the old
// connection up when the peer, restarted, connects again. As Erlang's
// nodes do, it answers "alive", and the peer's "true" replaces the old
// connection at once rather than after the tick timeout.
TEST_CASE("node: a peer that connects again while its old connection looks up replaces it") {
  log_lines log;
  otpp::runtime rt{{.workers = 2}};
  otpp::node a{{.name = unique("otpp_r1"), .cookie = cookie}};
  auto worker = rt.start<remote_counter>().value();
  auto counter = rt.start<remote_counter>(a.pid_of(worker)).value();
  REQUIRE(a.serve("counter", counter));
  const std::string host = a.name().substr(a.name().find('@'));

  const std::string hand_made = unique("otpp_r2") + host;
  const int stale = handshake_as(a, hand_made);
  REQUIRE(otpp_test::eventually([&] { return lists(a, hand_made); }));
  const int again = handshake_as(a, hand_made);  // otpp as the side that connects again
  CHECK(closed_by_peer(stale));
  CHECK(otpp_test::eventually([&] { return log.contains("the peer connected again"); }));
  CHECK(otpp_test::eventually([&] { return lists(a, hand_made); }));  // the new one is up after the old one's close
  ::close(stale);
  ::close(again);

  // Elixir as the side that connects again.
  const std::string ex = unique("ex_again");
  const int stale_ex = handshake_as(a, ex + host);
  REQUIRE(otpp_test::eventually([&] { return lists(a, ex + host); }));
  otpp_test::beam_peer peer{ex, cookie, script("call_otpp.exs"), {a.name()}};
  REQUIRE(peer.started());
  auto r = read_results(peer);
  CHECK(peer.finish() == 0);
  CHECK(r["ping"] == ":pong");
  CHECK(r["add"] == "5");
  CHECK(closed_by_peer(stale_ex));
  ::close(stale_ex);
}

TEST_CASE("node: hidden by default, visible when asked") {
  otpp::runtime rt{{.workers = 2}};
  for (bool hidden : {true, false}) {
    otpp::node n{{.name = unique(hidden ? "otpp_h1" : "otpp_h2"), .cookie = cookie, .hidden = hidden}};
    auto counter = rt.start<remote_counter>().value();
    REQUIRE(n.serve("counter", counter));
    otpp_test::beam_peer peer{unique(hidden ? "ex_h1" : "ex_h2"), cookie, script("visible.exs"), {n.name()}};
    auto r = read_results(peer);
    CHECK(peer.finish() == 0);
    CHECK(r["connect"] == "true");
    CHECK(r["visible"] == (hidden ? "false" : "true"));
    CHECK(r["hidden"] == (hidden ? "true" : "false"));
    CHECK(r["call"] == "0");
  }
}

TEST_CASE("node: long names (name@address) connect as short ones do") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node a{{.name = unique("otpp_la") + "@127.0.0.1", .cookie = cookie}};
  otpp::node b{{.name = unique("otpp_lb") + "@127.0.0.1", .cookie = cookie}};
  CHECK(a.name() == unique("otpp_la") + "@127.0.0.1");
  auto counter = rt.start<remote_counter>().value();
  REQUIRE(a.serve("counter", counter));
  CHECK(b.try_call({"counter", a.name()}, term::tuple(atom{"add"}, 7)).value() == term{7});
  CHECK(b.nodes() == std::vector<std::string>{a.name()});
  // A node name without a host part cannot be reached: noconnection, at once.
  CHECK(b.try_call({"counter", "nohost"}, atom{"get"}).error().kind() == otpp::exit_kind::noconnection);
}

TEST_CASE("node: bad options are refused with the node's name and the cause") {
  CHECK_THROWS_WITH((otpp::node{{.name = "", .cookie = cookie}}), Catch::Matchers::Contains("bad node name"));
  CHECK_THROWS_WITH((otpp::node{{.name = unique("otpp_bad"), .cookie = cookie, .address = "not-an-ip"}}),
                    Catch::Matchers::Contains("bad listen address 'not-an-ip'"));
  // The name is taken (epmd holds it for the first node).
  otpp::node first{{.name = unique("otpp_taken"), .cookie = cookie}};
  CHECK_THROWS_WITH((otpp::node{{.name = unique("otpp_taken"), .cookie = cookie}}),
                    Catch::Matchers::Contains("cannot register with epmd"));
}

TEST_CASE("node: a process of this node is not reached through the network") {
  otpp::runtime rt{{.workers = 2}};
  otpp::node n{{.name = unique("otpp_self"), .cookie = cookie}};
  auto counter = rt.start<remote_counter>().value();
  REQUIRE(n.serve("counter", counter));
  const otpp::remote_pid me = n.pid_of(counter.pid());
  CHECK(n.try_call({"counter", n.name()}, atom{"get"}).error().detail().find("this node itself") != std::string::npos);
  auto w = rt.start<remote_watcher>(&n).value();
  // Linking to it through the node is a clear error (here it crashes the
  // handler that tried, which the call reports).
  CHECK_THROWS_WITH(otpp::call(w, remote_watcher::link_to{me}), Catch::Matchers::Contains("use otpp::link"));
  CHECK(n.nodes().empty());  // and no connection to itself was attempted
  // A send to one of its own pids is delivered here.
  auto rec = rt.start<recorder>().value();
  n.send(n.pid_of(rec.pid()), atom{"local"});
  CHECK(otpp_test::eventually([&] { return otpp::call(rec, recorder::get{}) == std::vector<std::string>{"local"}; }));
}

/// Checks what reaches it: per sender, every sequence number once, in order.
struct sequence_checker : otpp::gen_server<sequence_checker> {
  using info_types = otpp::type_list<term>;
  std::map<std::int64_t, std::int64_t> next;  // sender -> the number it must send next
  std::int64_t received = 0, out_of_order = 0;
  void handle_info(term t) {
    const auto sender = t[0].as<std::int64_t>();
    const auto seq = t[1].as<std::int64_t>();
    if (seq != next[sender]) ++out_of_order;
    next[sender] = seq + 1;
    ++received;
  }
  struct get {
    using reply_type = std::pair<std::int64_t, std::int64_t>;
  };
  std::pair<std::int64_t, std::int64_t> handle_call(get) { return {received, out_of_order}; }
};

/// Calls a remote counter `count` times with co_await, checking each reply.
struct remote_caller : otpp::gen_server<remote_caller> {
  otpp::node* node;
  otpp::remote_name to;
  remote_caller(otpp::node* n, otpp::remote_name t) : node{n}, to{std::move(t)} {}
  struct run {
    int id;
    int count;
  };
  otpp::async<int> handle_call(run r) {
    int wrong = 0;
    for (int k = 0; k < r.count; ++k) {
      auto pending = node->async_call(to, term::tuple(atom{"echo"}, term::tuple(r.id, k)));
      const term reply = co_await pending;
      if (reply != term::tuple(r.id, k)) ++wrong;
    }
    co_return wrong;
  }
};

/// Sends `count` numbered messages, 100 per turn: the other processes on its
/// worker write between its batches, into the same connection's output.
struct remote_sender : otpp::gen_server<remote_sender> {
  otpp::node* node;
  otpp::remote_pid to;
  remote_sender(otpp::node* n, otpp::remote_pid t) : node{n}, to{std::move(t)} {}
  struct run {
    int id;
    int from;
    int count;
  };
  void handle_cast(run r) {
    const int end = std::min(r.from + 100, r.count);
    for (int k = r.from; k < end; ++k) node->send(to, term::tuple(r.id, k));
    if (end < r.count) otpp::cast(self(), run{r.id, end, r.count});
  }
};

/// Plain threads and processes sending numbered messages, and processes
/// calling, at once over b's one connection to a: nothing lost, doubled or
/// reordered, and every reply is its own call's. A thread writes to the
/// socket itself; a process's writes wait for its worker to run out of work
/// (or for a poll).
void check_one_connection_under_load(const std::string& tag, int thread_senders, int process_senders, int per_sender,
                                     int callers, int per_caller) {
  otpp::runtime rt{{.workers = 2}};
  otpp::node a{{.name = unique(tag + "1"), .cookie = cookie}};
  otpp::node b{{.name = unique(tag + "2"), .cookie = cookie}};
  auto checker = rt.start<sequence_checker>().value();
  auto counter = rt.start<remote_counter>().value();
  REQUIRE(a.serve("counter", counter));
  const otpp::remote_pid to = a.pid_of(checker.pid());
  const int senders = thread_senders + process_senders;
  std::vector<std::thread> threads;
  for (int s = 0; s < thread_senders; ++s)
    threads.emplace_back([&, s] {
      for (int k = 0; k < per_sender; ++k) b.send(to, term::tuple(s, k));
    });
  std::vector<otpp::server<remote_sender>> sending;
  for (int s = thread_senders; s < senders; ++s) {
    sending.push_back(rt.start<remote_sender>(&b, to).value());
    otpp::cast(sending.back(), remote_sender::run{s, 0, per_sender});
  }
  std::vector<otpp::pending_call<int>> calls;
  std::vector<otpp::server<remote_caller>> procs;
  for (int c = 0; c < callers; ++c) {
    procs.push_back(rt.start<remote_caller>(&b, otpp::remote_name{"counter", a.name()}).value());
    calls.push_back(otpp::async_call(procs.back(), remote_caller::run{c, per_caller}, otpp::infinity));
  }
  for (auto& t : threads) t.join();
  for (auto& c : calls) CHECK(c.get().value() == 0);  // every reply was its own call's
  CHECK(otpp_test::eventually([&] { return otpp::call(checker, sequence_checker::get{}).first == senders * per_sender; }));
  const auto [received, out_of_order] = otpp::call(checker, sequence_checker::get{});
  CHECK(received == senders * per_sender);
  CHECK(out_of_order == 0);
  CHECK(a.nodes() == std::vector<std::string>{b.name()});  // one connection carried it all
}

TEST_CASE("node: many senders over one connection: nothing lost, doubled or reordered") {
  check_one_connection_under_load("otpp_s", 2, 2, 5000, 6, 300);
}

TEST_CASE("node: processes sending and calling at once over one connection: nothing lost, doubled or reordered") {
  // No plain thread writes here, so the workers poll the connections while
  // traffic flows and the processes' writes wait for their worker: this is
  // that path's sequence check.
  check_one_connection_under_load("otpp_p", 0, 4, 3000, 4, 500);
}

/// Records when its first message came.
struct arrival_clock : otpp::gen_server<arrival_clock> {
  using info_types = otpp::type_list<term>;
  std::int64_t at = 0;  // steady ns
  void handle_info(const term&) {
    if (at == 0) at = std::chrono::steady_clock::now().time_since_epoch().count();
  }
  struct get {
    using reply_type = std::int64_t;
  };
  std::int64_t handle_call(get) { return at; }
};

/// Calls across (traffic flows: its worker polls the connection), sends one
/// message, then keeps its worker busy: the message must not wait for it.
struct busy_sender : otpp::gen_server<busy_sender> {
  otpp::node* node;
  otpp::remote_name echo;
  otpp::remote_pid to;
  busy_sender(otpp::node* n, otpp::remote_name e, otpp::remote_pid t) : node{n}, echo{std::move(e)}, to{std::move(t)} {}
  struct go {};
  otpp::async<std::int64_t> handle_call(go) {
    for (int k = 0; k < 20; ++k) {
      auto pending = node->async_call(echo, term::tuple(atom{"echo"}, k));
      (void)co_await pending;
    }
    node->send(to, atom{"hello"});
    const auto busy_until = std::chrono::steady_clock::now() + std::chrono::milliseconds{300};
    while (std::chrono::steady_clock::now() < busy_until) {
    }
    co_return busy_until.time_since_epoch().count();
  }
};

TEST_CASE("node: what a process sent goes out while its worker is still busy") {
  // Each side on a runtime of one worker: the sender's worker runs nothing
  // but its handler for 300 ms after the send.
  otpp::runtime ra{{.workers = 1}};
  otpp::runtime rb{{.workers = 1}};
  otpp::node a{{.name = unique("otpp_busy_a"), .cookie = cookie}};
  otpp::node b{{.name = unique("otpp_busy_b"), .cookie = cookie}};
  auto echo = ra.start<remote_counter>().value();
  REQUIRE(a.serve("counter", echo));
  auto clock = ra.start<arrival_clock>().value();
  auto sender = rb.start<busy_sender>(&b, otpp::remote_name{"counter", a.name()}, a.pid_of(clock.pid())).value();
  const std::int64_t busy_until = otpp::call(sender, busy_sender::go{}, std::chrono::seconds{30});
  REQUIRE(otpp_test::eventually([&] { return otpp::call(clock, arrival_clock::get{}) != 0; }));
  CHECK(otpp::call(clock, arrival_clock::get{}) < busy_until);
}
