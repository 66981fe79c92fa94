// A connection to a backend that is down at first: the machine backs off
// and retries, a request made meanwhile waits and is answered once the
// link is up; then the link drops under a request, which is sent again
// after reconnecting.
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include <fmt/core.h>

#include <otpp/otpp.hpp>

#include "connection.hpp"

int main() {
  using namespace std::chrono_literals;
  using examples::connection;
  std::atomic<int> tries{0};
  std::atomic<bool> drop_next{false};
  auto conn = otpp::start<connection>(examples::connection_options{
                                          .connect = [&] { return ++tries > 3; },  // up at the fourth try
                                          .send = [&](const std::string& q) -> std::optional<std::string> {
                                            if (drop_next.exchange(false)) return std::nullopt;
                                            return "answer to " + q;
                                          },
                                          .initial_backoff = 20ms,
                                          .max_backoff = 100ms})
                  .value();
  fmt::print("at start: {}\n", otpp::call(conn, connection::status{}));
  // Waits while the machine backs off 20, 40, 80 ms: the reply comes once connected.
  const std::string answer = otpp::call(conn, connection::request{"hello"}).value();
  fmt::print("request -> {} (after {} connect attempts)\n", answer, tries.load());
  drop_next = true;
  fmt::print("request over a link that drops -> {} (sent again after reconnecting)\n",
             otpp::call(conn, connection::request{"again"}).value());
  fmt::print("now: {}\n", otpp::call(conn, connection::status{}));
  otpp::stop(conn);
  return 0;
}
