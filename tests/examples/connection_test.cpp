// examples::connection through its public API on a virtual clock, against
// a fake backend that the test takes down and brings back: exponential
// backoff, requests postponed while down and answered once connected,
// giving up after request_timeout, the keep-alive, a link that fails under
// a request.

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "connection.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::connection;

namespace {

struct fake_backend {
  std::atomic<bool> up{true};
  std::atomic<bool> fail_next_send{false};
  std::atomic<int> pings{0};
  std::mutex m;
  std::vector<std::chrono::steady_clock::time_point> attempts;
  std::vector<std::string> sent;
};

struct fixture : otpp_test::virtual_runtime {
  std::shared_ptr<fake_backend> backend = std::make_shared<fake_backend>();

  otpp::server<connection> start(std::chrono::milliseconds request_timeout = 1h) {
    auto b = backend;
    auto c = clock;
    return rt
        .start<connection>(examples::connection_options{
            .connect =
                [b, c] {
                  std::lock_guard lock{b->m};
                  b->attempts.push_back(c->now());
                  return b->up.load();
                },
            .send = [b](const std::string& q) -> std::optional<std::string> {
              if (!b->up || b->fail_next_send.exchange(false)) return std::nullopt;
              std::lock_guard lock{b->m};
              b->sent.push_back(q);
              return "echo " + q;
            },
            .ping =
                [b] {
                  ++b->pings;
                  return b->up.load();
                },
            .initial_backoff = 100ms,
            .max_backoff = 500ms,
            .keepalive_every = 1s,
            .request_timeout = request_timeout})
        .value();
  }
  std::size_t attempts() {
    std::lock_guard lock{backend->m};
    return backend->attempts.size();
  }
  std::vector<std::chrono::milliseconds> gaps() {
    std::lock_guard lock{backend->m};
    std::vector<std::chrono::milliseconds> out;
    for (std::size_t i = 1; i < backend->attempts.size(); ++i)
      out.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(backend->attempts[i] - backend->attempts[i - 1]));
    return out;
  }
};

std::string answer(const otpp::result<otpp::result<std::string>>& r) {
  if (!r) return "call failed";
  if (!*r) return "error";
  return **r;
}

}  // namespace

TEST_CASE("connects at start; requests are answered", "[examples][connection]") {
  fixture f;
  auto conn = f.start();
  CHECK(otpp::call(conn, connection::status{}) == "connected");
  CHECK(otpp::call(conn, connection::request{"a"}).value() == "echo a");
  CHECK(f.attempts() == 1);
}

TEST_CASE("down at start: tries again after 100, 200, 400 ms, then every 500 ms (the cap)", "[examples][connection]") {
  fixture f;
  f.backend->up = false;
  auto conn = f.start();
  CHECK(otpp::call(conn, connection::status{}) == "backing off (attempt 1)");
  for (int i = 0; i < 25; ++i) f.clock->advance(100ms);  // 2.5 s
  CHECK(f.gaps() == std::vector<std::chrono::milliseconds>{100ms, 200ms, 400ms, 500ms, 500ms, 500ms});
  f.backend->up = true;
  f.clock->advance(500ms);
  CHECK(otpp::call(conn, connection::status{}) == "connected");
}

TEST_CASE("requests wait while the link is down and are answered in order once it is up", "[examples][connection]") {
  fixture f;
  f.backend->up = false;
  auto conn = f.start();
  auto a = otpp::async_try_call(conn, connection::request{"a"}, 30s);
  auto b = otpp::async_try_call(conn, connection::request{"b"}, 30s);
  f.clock->settle();
  CHECK(otpp::call(conn, connection::status{}).rfind("backing off", 0) == 0);
  f.backend->up = true;
  f.clock->advance(100ms);
  CHECK(answer(a.get()) == "echo a");
  CHECK(answer(b.get()) == "echo b");
  std::lock_guard lock{f.backend->m};
  CHECK(f.backend->sent == std::vector<std::string>{"a", "b"});
}

TEST_CASE("down for request_timeout: waiting requests fail with unavailable, and new ones at once, until it is back",
          "[examples][connection]") {
  otpp::testing::telemetry_capture gave_up{examples::connection_events::gave_up};
  fixture f;
  f.backend->up = false;
  auto conn = f.start(2s);
  auto a = otpp::async_try_call(conn, connection::request{"a"}, 30s);
  f.clock->settle();
  f.clock->advance(1900ms);
  CHECK_FALSE(a.wait_for(0ms));  // still waiting
  f.clock->advance(100ms);
  auto r = a.get();
  REQUIRE(r);
  CHECK(r->error() == otpp::exit_reason::error("unavailable"));
  CHECK(otpp::call(conn, connection::request{"b"}).error() == otpp::exit_reason::error("unavailable"));
  CHECK(gave_up.events().size() == 1);
  f.backend->up = true;
  f.clock->advance(500ms);
  CHECK(otpp::call(conn, connection::request{"c"}).value() == "echo c");
}

TEST_CASE("the keep-alive pings an idle link; a failed ping reconnects", "[examples][connection]") {
  otpp::testing::telemetry_capture lost{examples::connection_events::lost};
  fixture f;
  auto conn = f.start();
  f.clock->advance(1s);
  CHECK(f.backend->pings == 1);
  f.clock->advance(500ms);
  CHECK(otpp::call(conn, connection::request{"x"}).value() == "echo x");  // activity pushes the ping back
  f.clock->advance(900ms);
  CHECK(f.backend->pings == 1);
  f.backend->up = false;
  f.clock->advance(100ms);
  CHECK(f.backend->pings == 2);
  CHECK(lost.events().size() == 1);
  CHECK(otpp::call(conn, connection::status{}) == "backing off (attempt 1)");
}

TEST_CASE("a request whose link fails under it is sent again after reconnecting", "[examples][connection]") {
  fixture f;
  auto conn = f.start();
  f.backend->fail_next_send = true;
  auto a = otpp::async_try_call(conn, connection::request{"a"}, 30s);
  f.clock->settle();
  CHECK(otpp::call(conn, connection::status{}) == "backing off (attempt 1)");
  f.clock->advance(100ms);
  CHECK(answer(a.get()) == "echo a");
}

TEST_CASE("bad options are start errors", "[examples][connection]") {
  otpp_test::log_capture logs;
  fixture f;
  CHECK_FALSE(f.rt.start<connection>(examples::connection_options{}));
  CHECK_FALSE(f.rt.start<connection>(examples::connection_options{
      .connect = [] { return true; }, .send = [](const std::string&) { return std::optional<std::string>{}; }, .initial_backoff = 0ms}));
}
