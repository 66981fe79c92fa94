// otpp::observer through HTTP, as a browser or curl reaches it: the page,
// the snapshot (tree, table, restarts, history), a process's detail and
// state, the metrics, kill behind allow_actions and the token, requests
// addressed by a foreign host name, malformed requests, a port in use, and
// the listener gone with the process.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <fmt/format.h>

#include <otpp/metrics.hpp>
#include <otpp/observer.hpp>
#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using otpp_test::eventually;

namespace {

// One exchange over a fresh connection: sends `raw`, reads to the end (the
// observer closes after each answer). Empty when it cannot connect.
std::string http_exchange(std::uint16_t port, const std::string& raw) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  std::string got;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    std::size_t sent = 0;
    while (sent < raw.size()) {
      const ssize_t k = ::send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
      if (k <= 0) break;
      sent += static_cast<std::size_t>(k);
    }
    ::shutdown(fd, SHUT_WR);  // all sent: a request cut short ends here
    char buf[65536];
    for (ssize_t k; (k = ::recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<std::size_t>(k));
  }
  ::close(fd);
  return got;
}

std::string request(std::uint16_t port, const std::string& method, const std::string& target, const std::string& extra = "") {
  return http_exchange(port, fmt::format("{} {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}\r\n", method, target, port, extra));
}

int status_of(const std::string& response) {
  if (response.size() < 12 || response.compare(0, 9, "HTTP/1.1 ") != 0) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string body_of(const std::string& response) {
  const auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? std::string{} : response.substr(at + 4);
}

// One process's object in a snapshot (flat: it ends at the first '}').
std::string row(const std::string& snap, const std::string& pid) {
  const auto at = snap.find(fmt::format(R"({{"pid":"{}")", pid));
  return at == std::string::npos ? std::string{} : snap.substr(at, snap.find('}', at) - at + 1);
}

// A number field of a JSON object, or -1.
long number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  return at == std::string::npos ? -1 : std::stol(json.substr(at + key.size() + 3));
}

std::uint16_t port_of(const std::string& url) {
  const auto colon = url.rfind(':');
  return static_cast<std::uint16_t>(std::stoi(url.substr(colon + 1)));
}

std::string token_of(const std::string& url) {
  const auto at = url.find("#token=");
  return at == std::string::npos ? std::string{} : url.substr(at + 7);
}

struct worker : otpp::gen_server<worker> {
  struct ping {
    using reply_type = int;
  };
  struct hold {
    otpp_test::gate* g;
  };
  int handle_call(ping) { return ++pings; }
  void handle_cast(hold h) { h.g->wait(); }
  int pings = 0;
};

struct formatted : otpp::gen_server<formatted> {
  struct add {
    int n;
  };
  void handle_cast(add a) { total += a.n; }
  int total = 0;
};

}  // namespace

template <>
struct fmt::formatter<formatted> : fmt::formatter<std::string_view> {
  auto format(const formatted& f, fmt::format_context& ctx) const {
    return fmt::format_to(ctx.out(), "total <{}>", f.total);
  }
};

namespace {

struct fixture {
  otpp::runtime rt{{.workers = 2}};
  otpp::server<otpp::supervisor> sup;
  otpp::server<otpp::observer> obs;
  std::uint16_t port = 0;
  std::string token;

  explicit fixture(otpp::observer_options o = {}) {
    o.observed = &rt;
    o.sample_every = 20ms;
    sup = rt.start<otpp::supervisor>(
                std::vector<otpp::child_spec>{otpp::child<worker>().with_id("alpha"), otpp::child<worker>().with_id("beta")},
                otpp::supervisor_flags{.max_restarts = 10})
              .value();
    obs = rt.start<otpp::observer>(std::move(o)).value();
    const std::string url = otpp::observer_url(obs).value();
    port = port_of(url.substr(0, url.find('/', 7)));
    token = token_of(url);
  }
  otpp::pid child(const std::string& id) {
    for (const auto& c : otpp::which_children(sup).value())
      if (c.id == id) return c.process;
    return {};
  }
};

}  // namespace

TEST_CASE("observer: serves its page and a snapshot of the tree, the processes and the history") {
  fixture f;
  const std::string url = otpp::observer_url(f.obs).value();
  CHECK(url.rfind("http://127.0.0.1:", 0) == 0);
  CHECK(url.find("#token=") == std::string::npos);  // no actions, no token shown

  const auto page = request(f.port, "GET", "/");
  CHECK(status_of(page) == 200);
  CHECK(page.find("Content-Type: text/html") != std::string::npos);
  CHECK(body_of(page).find("<title>otpp observer</title>") != std::string::npos);

  const auto alpha = fmt::format("{}", f.child("alpha"));
  const auto sup = fmt::format("{}", f.sup.pid());
  const auto snap = body_of(request(f.port, "GET", "/api/snapshot"));
  CHECK(snap.find(fmt::format(R"("pid":"{}")", alpha)) != std::string::npos);
  CHECK(snap.find(R"("id":"alpha")") != std::string::npos);
  CHECK(snap.find(R"("id":"beta")") != std::string::npos);
  CHECK(snap.find(fmt::format(R"("parent":"{}")", sup)) != std::string::npos);
  CHECK(snap.find(R"("supervisor":true)") != std::string::npos);
  CHECK(snap.find(R"("actions":false)") != std::string::npos);
  // The sampler adds points every 20 ms.
  CHECK(eventually([&] { return body_of(request(f.port, "GET", "/api/snapshot")).find(R"("utilisation":[)") != std::string::npos; }));
}

TEST_CASE("observer: a restart is counted for the supervisor and the child, and charted") {
  fixture f;
  const otpp::pid old = f.child("alpha");
  otpp::exit(old, otpp::exit_reason::error("boom"));
  REQUIRE(eventually([&] { auto p = f.child("alpha"); return p && p != old; }));
  const auto sup = fmt::format("{}", f.sup.pid());
  const auto alpha = fmt::format("{}", f.child("alpha"));
  REQUIRE(eventually([&] {
    const auto snap = body_of(request(f.port, "GET", "/api/snapshot"));
    return row(snap, sup).find(R"("restarts":1,)") != std::string::npos &&
           row(snap, alpha).find(R"("restarts":1,"id":"alpha")") != std::string::npos &&
           row(snap, fmt::format("{}", f.child("beta"))).find(R"("restarts":0,"id":"beta")") != std::string::npos &&
           snap.find(R"("restarts":1,"processes")") != std::string::npos;  // a point of the restarts chart
  }));
  CHECK(body_of(request(f.port, "GET", "/metrics")).find("otpp_restarts_total 1\n") != std::string::npos);
}

TEST_CASE("observer: a process's detail: links, parent, and its state through its fmt formatter") {
  fixture f;
  auto fmt_server = f.rt.start<formatted>().value();
  otpp::cast(fmt_server, formatted::add{41});
  otpp::cast(fmt_server, formatted::add{1});
  // Read between messages, after the two casts: a flush as well.
  CHECK(otpp::sys::format_state(fmt_server.pid()).value() == std::optional<std::string>{"total <42>"});
  const auto text = fmt::format("{}", fmt_server.pid());
  const auto d = body_of(request(f.port, "GET", "/api/process?pid=" + text));
  CHECK(d.find(R"("state":"total <42>")") != std::string::npos);
  CHECK(number(d, "handled") >= 2);
  CHECK(number(d, "memory") > 0);

  const auto alpha = fmt::format("{}", f.child("alpha"));
  const auto a = body_of(request(f.port, "GET", "/api/process?pid=" + alpha));
  CHECK(a.find(R"("state":null)") != std::string::npos);  // worker has no formatter
  CHECK(a.find(fmt::format(R"("parent":"{}")", f.sup.pid())) != std::string::npos);
  CHECK(a.find(fmt::format(R"("links":["{}"])", f.sup.pid())) != std::string::npos);

  const auto s = body_of(request(f.port, "GET", fmt::format("/api/process?pid={}", f.sup.pid())));
  CHECK(s.find(fmt::format(R"({{"id":"alpha","pid":"{}","state":"running"}})", alpha)) != std::string::npos);

  CHECK(status_of(request(f.port, "GET", "/api/process?pid=%3C0.999999.0%3E")) == 404);
  CHECK(status_of(request(f.port, "GET", "/api/process")) == 400);
  CHECK(status_of(request(f.port, "GET", "/nowhere")) == 404);
}

TEST_CASE("observer: a process stuck in a handler shows as busy, and does not hold the page") {
  otpp::observer_options o;
  o.process_timeout = 50ms;
  fixture f{o};
  auto w = f.rt.start<worker>().value();
  otpp_test::gate g;
  otpp::cast(w, worker::hold{&g});
  REQUIRE(eventually([&] { return g.entered.load() == 1; }));
  otpp::cast(w, worker::hold{&g});  // one waiting behind it
  const auto text = fmt::format("{}", w.pid());
  const auto snap = body_of(request(f.port, "GET", "/api/snapshot"));
  CHECK(row(snap, text).find(R"("status":"busy","queue":1,)") != std::string::npos);
  const auto d = body_of(request(f.port, "GET", "/api/process?pid=" + text));
  CHECK(d.find(R"("status":"busy")") != std::string::npos);
  CHECK(d.find("no answer within 50 ms") != std::string::npos);
  g.release();
  CHECK(otpp::call(w, worker::ping{}) == 1);
}

TEST_CASE("observer: a suspended process shows as suspended, its held messages in its queue") {
  fixture f;
  auto w = f.rt.start<worker>().value();
  REQUIRE(otpp::sys::suspend(w.pid()));
  otpp_test::gate open;
  open.release();
  otpp::cast(w, worker::hold{&open});  // held: not run while suspended
  const auto text = fmt::format("{}", w.pid());
  REQUIRE(eventually([&] { return otpp::sys::info(w.pid()).value().mailbox_length == 1; }));
  CHECK(row(body_of(request(f.port, "GET", "/api/snapshot")), text).find(R"("status":"suspended")") != std::string::npos);
  CHECK(body_of(request(f.port, "GET", "/api/process?pid=" + text)).find(R"("status":"suspended")") != std::string::npos);
  REQUIRE(otpp::sys::resume(w.pid()));
  CHECK(otpp::call(w, worker::ping{}) == 1);
}

TEST_CASE("observer: kill, suspend and resume need allow_actions and the token") {
  SECTION("off by default") {
    fixture f;
    const auto alpha = f.child("alpha");
    const auto r = request(f.port, "POST", fmt::format("/api/kill?pid={}", alpha), "X-Otpp-Token: anything\r\n");
    CHECK(status_of(r) == 403);
    CHECK(body_of(r).find("actions are off") != std::string::npos);
    CHECK(alpha.alive());
  }
  SECTION("on, with the token") {
    otpp::observer_options o;
    o.allow_actions = true;
    fixture f{o};
    REQUIRE(f.token.size() == 32);  // made up at random
    const auto alpha = f.child("alpha");
    const auto target = fmt::format("/api/kill?pid={}", alpha);
    CHECK(status_of(request(f.port, "POST", target)) == 403);
    CHECK(status_of(request(f.port, "POST", target, "X-Otpp-Token: " + f.token + "x\r\n")) == 403);
    CHECK(status_of(request(f.port, "POST", target, "X-Otpp-Token: " + f.token.substr(1) + "\r\n")) == 403);
    CHECK(status_of(request(f.port, "GET", target, "X-Otpp-Token: " + f.token + "\r\n")) == 404);  // an action is a POST
    CHECK(alpha.alive());
    otpp::exit_watch watch{alpha};
    const auto r = request(f.port, "POST", target, "X-Otpp-Token: " + f.token + "\r\n");
    CHECK(status_of(r) == 200);
    CHECK(watch.wait(10s).value() == otpp::exit_reason::killed());
    REQUIRE(eventually([&] { auto p = f.child("alpha"); return p && p != alpha; }));  // the supervisor restarts it
    CHECK(status_of(request(f.port, "POST", target, "X-Otpp-Token: " + f.token + "\r\n")) == 404);  // gone now
  }
  SECTION("suspend and resume, with the token") {
    otpp::observer_options o;
    o.allow_actions = true;
    fixture f{o};
    auto w = f.rt.start<worker>().value();
    const auto text = fmt::format("{}", w.pid());
    CHECK(status_of(request(f.port, "POST", "/api/suspend?pid=" + text)) == 403);  // no token
    CHECK_FALSE(otpp::sys::info(w.pid()).value().suspended);
    const auto s = request(f.port, "POST", "/api/suspend?pid=" + text, "X-Otpp-Token: " + f.token + "\r\n");
    CHECK(status_of(s) == 200);
    CHECK(body_of(s) == fmt::format(R"({{"suspended":"{}"}})", text));
    CHECK(otpp::sys::info(w.pid()).value().suspended);
    const auto r = request(f.port, "POST", "/api/resume?pid=" + text, "X-Otpp-Token: " + f.token + "\r\n");
    CHECK(status_of(r) == 200);
    CHECK(body_of(r) == fmt::format(R"({{"resumed":"{}"}})", text));
    CHECK_FALSE(otpp::sys::info(w.pid()).value().suspended);
    CHECK(otpp::call(w, worker::ping{}) == 1);
  }
  SECTION("a token given in the options") {
    otpp::observer_options o;
    o.allow_actions = true;
    o.token = "s3cret";
    fixture f{o};
    CHECK(f.token == "s3cret");
    const auto beta = f.child("beta");
    CHECK(status_of(request(f.port, "POST", fmt::format("/api/kill?pid={}", beta), "X-Otpp-Token: s3cret\r\n")) == 200);
  }
}

TEST_CASE("observer: answers only requests addressed to it by a loopback name") {
  fixture f;
  auto with_host = [&](const std::string& host) {
    return status_of(http_exchange(f.port, fmt::format("GET /api/snapshot HTTP/1.1\r\nHost: {}\r\n\r\n", host)));
  };
  CHECK(with_host(fmt::format("127.0.0.1:{}", f.port)) == 200);
  CHECK(with_host(fmt::format("localhost:{}", f.port)) == 200);
  CHECK(with_host(fmt::format("evil.example:{}", f.port)) == 421);  // DNS rebinding
  CHECK(with_host(fmt::format("127.0.0.1:{}", f.port + 1)) == 421);
  CHECK(with_host("127.0.0.1") == 421);
}

TEST_CASE("observer: malformed requests get their 4xx and the observer goes on") {
  fixture f;
  const std::pair<std::string, int> bad[] = {
      {"garbage\r\n\r\n", 400},
      {"GET /\r\n\r\n", 400},
      {"get / HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\n\r\n", 505},
      {"GET nopath HTTP/1.1\r\n\r\n", 400},
      {"GET /%zz HTTP/1.1\r\n\r\n", 400},
      {"GET /api/process?pid=%4 HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400},
      {"POST /api/kill HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
      {"POST /api/kill HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 413},
      {"POST /api/kill HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"DELETE / HTTP/1.1\r\n\r\n", 405},
      {"GET / HTTP/1.1\r\nX-Big: " + std::string(40'000, 'a') + "\r\n\r\n", 431},
  };
  for (const auto& [raw, status] : bad) {
    INFO(raw.substr(0, 60));
    CHECK(status_of(http_exchange(f.port, raw)) == status);
  }
  CHECK(http_exchange(f.port, "").empty());                         // connected and left at once
  CHECK(http_exchange(f.port, "GET / HTTP/1.1\r\nHost: x").empty());  // a head cut short: closed, no answer
  CHECK(status_of(request(f.port, "GET", "/api/snapshot")) == 200);
  CHECK(f.obs.alive());
}

TEST_CASE("observer: /metrics holds the runtime's metrics, restarts and each reporter's") {
  otpp::observer_options o;
  static const otpp::telemetry::event hit{"observer_test", "hit"};
  auto rep = std::make_shared<otpp::metrics::reporter>(std::vector<otpp::metrics::metric>{otpp::metrics::counter("observer_test_hits", hit)});
  o.metrics.push_back(rep);
  fixture f{o};
  otpp::telemetry::execute(hit, {}, {});
  const auto r = request(f.port, "GET", "/metrics");
  CHECK(status_of(r) == 200);
  const auto m = body_of(r);
  CHECK(m.find("otpp_processes ") != std::string::npos);
  CHECK(m.find("otpp_messages_total{scheduler=\"0\"}") != std::string::npos);
  CHECK(m.find("otpp_restarts_total 0\n") != std::string::npos);
  CHECK(m.find("observer_test_hits 1\n") != std::string::npos);
}

TEST_CASE("observer: a port in use fails the start, naming the address; the listener goes with the process") {
  fixture f;
  otpp::observer_options o;
  o.port = f.port;
  o.observed = &f.rt;
  auto second = f.rt.start<otpp::observer>(o);
  REQUIRE(!second);
  CHECK(fmt::format("{}", second.error()).find(fmt::format("otpp::observer: cannot listen on 127.0.0.1:{}", f.port)) !=
        std::string::npos);

  otpp::observer_options bad;
  bad.address = "not an address";
  auto third = f.rt.start<otpp::observer>(bad);
  REQUIRE(!third);
  CHECK(fmt::format("{}", third.error()).find("cannot listen on not an address:0") != std::string::npos);

  // Killed (no terminate runs): the port is closed all the same.
  otpp::exit_watch watch{f.obs.pid()};
  otpp::exit(f.obs.pid(), otpp::exit_reason::kill());
  REQUIRE(watch.wait(10s));
  CHECK(http_exchange(f.port, "GET / HTTP/1.1\r\n\r\n").empty());
}
