#pragma once
// Sessions with a time to live, in one gen_server: create / get / refresh /
// remove, and a periodic cleanup.
//
//   auto s = otpp::start_link<examples::session_store>(examples::session_store_options{.ttl = 30min}).value();
//   std::string id = otpp::call(s, examples::session_store::create{"user=42"}).value();
//   otpp::call(s, examples::session_store::get{id});   // the data, or error expired / not_found
//
// Ids are 128 bits from the OS CSPRNG (getrandom), as 32 hex digits: never
// a PRNG, so they cannot be predicted from earlier ones. A session expires
// `ttl` after it was created or last refreshed; get reports
// error("expired") for it until the cleanup after next removes it (at least
// one cleanup_every), and error("not_found") for ids never issued, removed,
// cleaned up, or malformed. create past max_sessions fails with
// error("too_many_sessions").
//
// Telemetry: [session_store, created] {count}, [session_store, cleanup]
// {removed, live}.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>

#include <sys/random.h>

#include <otpp/exit_reason.hpp>
#include <otpp/gen_server.hpp>
#include <otpp/telemetry.hpp>
#include <otpp/timer.hpp>

namespace examples {

/// 128 random bits from the kernel's CSPRNG, as 32 lowercase hex digits.
inline std::string random_session_id() {
  unsigned char buf[16];
  std::size_t got = 0;
  while (got < sizeof buf) {
    const ssize_t n = ::getrandom(buf + got, sizeof buf - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom");
    }
    got += static_cast<std::size_t>(n);
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (std::size_t i = 0; i < sizeof buf; ++i) {
    id[2 * i] = hex[buf[i] >> 4];
    id[2 * i + 1] = hex[buf[i] & 15];
  }
  return id;
}

struct session_store_options {
  std::chrono::milliseconds ttl{30 * 60 * 1000};
  std::chrono::milliseconds cleanup_every{60 * 1000};
  std::size_t max_sessions = 1'000'000;
};

namespace session_store_events {
inline const otpp::telemetry::event created{"session_store", "created"};
inline const otpp::telemetry::event cleanup{"session_store", "cleanup"};
}  // namespace session_store_events

class session_store : public otpp::gen_server<session_store> {
 public:
  // Pure bookkeeping, no waits: callers may run it on their own thread
  // (see otpp::declares_nonblocking_handlers).
  static constexpr bool nonblocking_handlers = true;
  /// call → the new session's id.
  struct create {
    std::string data;
  };
  /// call → the session's data.
  struct get {
    std::string id;
  };
  /// call: the session lives `ttl` from now.
  struct refresh {
    std::string id;
  };
  /// call: ends the session.
  struct remove {
    std::string id;
  };
  /// call → sessions held (expired ones not yet cleaned up included).
  struct size {};
  struct cleanup_tick {};

  explicit session_store(session_store_options opts = {}) : opts_{opts} {
    if (opts_.ttl.count() <= 0) throw std::invalid_argument("session_store: ttl must be positive");
    if (opts_.cleanup_every.count() <= 0) throw std::invalid_argument("session_store: cleanup_every must be positive");
  }

  void init() { cleanup_timer_ = otpp::send_interval(self(), cleanup_tick{}, opts_.cleanup_every); }

  otpp::result<std::string> handle_call(create c) {
    if (sessions_.size() >= opts_.max_sessions) return otpp::exit_reason::error("too_many_sessions");
    std::string id = random_session_id();
    while (sessions_.contains(id)) id = random_session_id();  // 2^-128: for form's sake
    sessions_.emplace(id, session{std::move(c.data), otpp::monotonic_time() + opts_.ttl});
    otpp::telemetry::execute(session_store_events::created, {{"count", 1}});
    return id;
  }

  otpp::result<std::string> handle_call(const get& g) {
    auto it = sessions_.find(g.id);
    if (it == sessions_.end()) return otpp::exit_reason::error("not_found");
    if (it->second.expires <= otpp::monotonic_time()) return otpp::exit_reason::error("expired");
    return it->second.data;
  }

  otpp::result<void> handle_call(const refresh& r) {
    auto it = sessions_.find(r.id);
    if (it == sessions_.end()) return otpp::exit_reason::error("not_found");
    const auto now = otpp::monotonic_time();
    if (it->second.expires <= now) return otpp::exit_reason::error("expired");
    it->second.expires = now + opts_.ttl;
    return {};
  }

  otpp::result<void> handle_call(const remove& r) {
    if (sessions_.erase(r.id) == 0) return otpp::exit_reason::error("not_found");
    return {};
  }

  std::size_t handle_call(size) const { return sessions_.size(); }

  void handle_info(cleanup_tick) {
    const auto forget_before = otpp::monotonic_time() - opts_.cleanup_every;
    std::size_t removed = 0;
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (it->second.expires <= forget_before) {
        it = sessions_.erase(it);
        ++removed;
      } else {
        ++it;
      }
    }
    if (sessions_.bucket_count() > 1024 && sessions_.size() * 4 < sessions_.bucket_count()) sessions_.rehash(0);
    otpp::telemetry::execute(session_store_events::cleanup, {{"removed", removed}, {"live", sessions_.size()}});
  }

 private:
  struct session {
    std::string data;
    std::chrono::steady_clock::time_point expires;
  };

  session_store_options opts_;
  std::unordered_map<std::string, session> sessions_;
  otpp::timer_ref cleanup_timer_;
};

}  // namespace examples
