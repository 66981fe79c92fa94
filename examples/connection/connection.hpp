#pragma once
// A connection to a flaky backend as a state machine: connecting →
// connected, and on a failure backing off (exponentially, up to a cap)
// before connecting again. Requests that come while it is not connected are
// postponed and answered once it is; if it stays down for request_timeout,
// the waiting requests are answered error("unavailable") instead, until it
// is back. A keep-alive ping (a generic timeout) notices a dead link while
// idle.
//
//   auto conn = otpp::start_link<examples::connection>(examples::connection_options{
//       .connect = [] { return backend.open(); },
//       .send = [](const std::string& q) { return backend.ask(q); },   // nullopt: the link failed
//       .ping = [] { return backend.ping(); }}).value();
//   otpp::call(conn, examples::connection::request{"GET /"});   // the answer, or error("unavailable")
//
// The backend's functions run on the machine's own turn: they must be quick
// (non-blocking sockets, or a helper process that does the waiting).
//
// Telemetry: [connection, connected] {attempt}, [connection, lost] {} and
// [connection, gave_up] {} (queued requests failed).

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <otpp/exit_reason.hpp>
#include <otpp/gen_statem.hpp>
#include <otpp/telemetry.hpp>

namespace examples {

struct connection_options {
  std::function<bool()> connect;                                           ///< one attempt; true: connected
  std::function<std::optional<std::string>(const std::string&)> send;      ///< a request's answer; nullopt: the link failed
  std::function<bool()> ping = [] { return true; };                        ///< false: the link is dead
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{5'000};
  std::chrono::milliseconds keepalive_every{1'000};
  std::chrono::milliseconds request_timeout{3'000};
};

namespace connection_events {
inline const otpp::telemetry::event connected{"connection", "connected"};
inline const otpp::telemetry::event lost{"connection", "lost"};
inline const otpp::telemetry::event gave_up{"connection", "gave_up"};
}  // namespace connection_events

/// Trying to connect; `attempt` counts the tries since the link was last up.
struct conn_connecting {
  int attempt = 1;
  bool operator==(const conn_connecting&) const = default;
};
/// Waiting before the next try.
struct conn_backing_off {
  int attempt = 1;
  bool operator==(const conn_backing_off&) const = default;
};
struct conn_connected {};

class connection : public otpp::gen_statem<connection, conn_connecting, conn_backing_off, conn_connected> {
 public:
  /// call → the backend's answer; error("unavailable") if the link stayed
  /// down for request_timeout.
  struct request {
    using reply_type = otpp::result<std::string>;
    std::string payload;
  };
  /// call → "connected", "connecting (attempt n)" or "backing off (attempt n)".
  struct status {
    using reply_type = std::string;
  };
  // Timeout contents.
  struct try_now {};
  struct keepalive {};
  struct give_up {};

  explicit connection(connection_options opts) : opts_{std::move(opts)} {
    if (!opts_.connect || !opts_.send) throw std::invalid_argument("connection: connect and send are required");
    if (opts_.initial_backoff.count() <= 0 || opts_.max_backoff < opts_.initial_backoff)
      throw std::invalid_argument("connection: backoffs must be positive, the maximum at least the initial one");
  }

  transition init() { return keep_state(give_up_after()); }  // starts in connecting, attempt 1

  // connecting: try at once (a zero state timeout: after anything queued).
  transition handle_event(conn_connecting&, otpp::enter_event) { return keep_state(state_timeout(std::chrono::milliseconds(0), try_now{})); }
  transition handle_event(conn_connecting& s, otpp::state_timeout_event, try_now) {
    if (opts_.connect()) {
      otpp::telemetry::execute(connection_events::connected, {{"attempt", s.attempt}});
      return next_state(conn_connected{});
    }
    return next_state(conn_backing_off{s.attempt});
  }

  // backing off: initial_backoff, doubling per failed try, up to max_backoff.
  transition handle_event(conn_backing_off& s, otpp::enter_event) { return keep_state(state_timeout(backoff(s.attempt), try_now{})); }
  transition handle_event(conn_backing_off& s, otpp::state_timeout_event, try_now) {
    return next_state(conn_connecting{s.attempt + 1});
  }

  // connected: answer, and ping while idle.
  transition handle_event(conn_connected&, otpp::enter_event) {
    unavailable_ = false;
    return keep_state(cancel_generic_timeout("give_up"), ping_later());
  }
  transition handle_event(conn_connected&, otpp::call_event<otpp::result<std::string>> c, const request& r) {
    if (auto answer = opts_.send(r.payload)) return keep_state(reply(c, std::move(*answer)), ping_later());
    // The link failed under this request: keep it for the next connection.
    return lost(postpone());
  }
  transition handle_event(conn_connected&, otpp::generic_timeout_event, keepalive) {
    if (opts_.ping()) return keep_state(ping_later());
    return lost();
  }

  // not connected: requests wait (or fail once we have given up on them).
  template <class S>
    requires(!std::is_same_v<S, conn_connected>)
  transition handle_event(S&, otpp::call_event<otpp::result<std::string>> c, const request&) {
    if (unavailable_) return keep_state(reply(c, otpp::exit_reason::error("unavailable")));
    return keep_state(postpone());
  }
  template <class S>
    requires(!std::is_same_v<S, conn_connected>)
  transition handle_event(S& s, otpp::generic_timeout_event, give_up) {
    // Down for request_timeout: fail what waits (retried on the state change
    // below) and what comes until the link is back; and try again now.
    unavailable_ = true;
    otpp::telemetry::execute(connection_events::gave_up, {{"count", 1}});
    return next_state(conn_connecting{s.attempt + 1});
  }
  template <class S>
  transition handle_event(S& s, otpp::call_event<std::string> c, status) {
    if constexpr (std::is_same_v<S, conn_connected>) {
      return keep_state(reply(c, "connected"));
    } else if constexpr (std::is_same_v<S, conn_connecting>) {
      return keep_state(reply(c, "connecting (attempt " + std::to_string(s.attempt) + ")"));
    } else {
      return keep_state(reply(c, "backing off (attempt " + std::to_string(s.attempt) + ")"));
    }
  }

 private:
  template <class... A>
  transition lost(A&&... actions) {
    otpp::telemetry::execute(connection_events::lost, {{"count", 1}});
    return next_state(conn_backing_off{1}, cancel_generic_timeout("keepalive"), give_up_after(), std::forward<A>(actions)...);
  }
  action ping_later() const { return generic_timeout("keepalive", opts_.keepalive_every, keepalive{}); }
  action give_up_after() const { return generic_timeout("give_up", opts_.request_timeout, give_up{}); }
  std::chrono::milliseconds backoff(int attempt) const {
    auto d = opts_.initial_backoff;
    for (int i = 1; i < attempt && d < opts_.max_backoff; ++i) d *= 2;
    return std::min(d, opts_.max_backoff);
  }

  connection_options opts_;
  bool unavailable_ = false;
};

}  // namespace examples
