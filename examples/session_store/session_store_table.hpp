#pragma once
// The session store's ETS form: sessions live in a protected table that any
// thread or process reads without a message, while create, refresh, remove
// and the cleanup go through the owning gen_server (the one writer).
//
//   auto s = otpp::start_link<examples::session_store_table>(examples::session_store_table_options{.ttl = 30min}).value();
//   std::string id = otpp::call(s, examples::session_store_table::create{"user=42"}).value();
//   auto sessions = otpp::call(s, examples::session_store_table::get_reader{});
//   sessions.get(id);   // from any thread: the data, or error expired / not_found
//
// Same outcomes as session_store (ids, expiry, the grace before cleanup,
// too_many_sessions, telemetry); the differences: get runs on the caller's
// thread, in parallel with other readers and with the owner's writes, and
// the sessions go with the owner if it exits (the table is deleted; a
// supervisor restarts it empty, as it restarts session_store).
//
// Expiry compares against the owner's clock. A reader on a plain thread
// reads otpp::monotonic_time() there (the default runtime's clock); give
// `clock` when the store runs on another runtime with its own clock (tests
// on a virtual_clock: `.clock = [&rt] { return rt.now(); }`).

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <otpp/exit_reason.hpp>
#include <otpp/gen_server.hpp>
#include <otpp/table.hpp>
#include <otpp/telemetry.hpp>
#include <otpp/timer.hpp>

#include "session_store.hpp"

namespace examples {

struct session_store_table_options {
  std::chrono::milliseconds ttl{30 * 60 * 1000};
  std::chrono::milliseconds cleanup_every{60 * 1000};
  std::size_t max_sessions = 1'000'000;
  /// What expiry is measured on; empty: otpp::monotonic_time.
  std::function<std::chrono::steady_clock::time_point()> clock{};
};

/// A session in the table.
struct stored_session {
  std::string data;
  std::chrono::steady_clock::time_point expires;
};

/// Reads sessions from any thread or process, without a message.
class session_reader {
 public:
  /// The session's data; error("expired") past its ttl (until cleaned up),
  /// error("not_found") for ids never issued, removed or cleaned up.
  [[nodiscard]] otpp::result<std::string> get(const std::string& id) const {
    const auto now = clock_ ? clock_() : otpp::monotonic_time();
    std::optional<std::string> data;
    bool expired = false;
    const bool found = table_.lookup(id, [&](const stored_session& s) {
      if (s.expires <= now) {
        expired = true;
      } else {
        data = s.data;  // the one copy a read makes
      }
    });
    if (!found) return otpp::exit_reason::error("not_found");
    if (expired) return otpp::exit_reason::error("expired");
    return std::move(*data);
  }

 private:
  friend class session_store_table;
  session_reader(otpp::table<std::string, stored_session> t, std::function<std::chrono::steady_clock::time_point()> clock)
      : table_{std::move(t)}, clock_{std::move(clock)} {}
  otpp::table<std::string, stored_session> table_;
  std::function<std::chrono::steady_clock::time_point()> clock_;
};

class session_store_table : public otpp::gen_server<session_store_table> {
 public:
  static constexpr bool nonblocking_handlers = true;  // bookkeeping only, no waits
  /// call → the new session's id.
  struct create {
    std::string data;
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
  /// call → a session_reader.
  struct get_reader {};
  struct cleanup_tick {};

  explicit session_store_table(session_store_table_options opts = {}) : opts_{std::move(opts)} {
    if (opts_.ttl.count() <= 0) throw std::invalid_argument("session_store_table: ttl must be positive");
    if (opts_.cleanup_every.count() <= 0) throw std::invalid_argument("session_store_table: cleanup_every must be positive");
  }

  void init() {
    // Many readers, one writer: readers count themselves apart; a single
    // object counter costs the one writer nothing and makes size() exact
    // and cheap for the max_sessions check.
    sessions_ = otpp::table<std::string, stored_session>::create(
        {.read_concurrency = true, .write_concurrency = true, .decentralized_counters = false});
    cleanup_timer_ = otpp::send_interval(self(), cleanup_tick{}, opts_.cleanup_every);
  }

  otpp::result<std::string> handle_call(create c) {
    if (sessions_.size() >= opts_.max_sessions) return otpp::exit_reason::error("too_many_sessions");
    stored_session s{std::move(c.data), now() + opts_.ttl};
    std::string id = random_session_id();
    while (!sessions_.insert_new(id, s)) id = random_session_id();  // 2^-128: for form's sake
    otpp::telemetry::execute(session_store_events::created, {{"count", 1}});
    return id;
  }

  otpp::result<void> handle_call(const refresh& r) {
    const auto t = now();
    bool expired = false;
    const bool found = sessions_.update_element(r.id, [&](stored_session& s) {
      if (s.expires <= t) {
        expired = true;
      } else {
        s.expires = t + opts_.ttl;
      }
    });
    if (!found) return otpp::exit_reason::error("not_found");
    if (expired) return otpp::exit_reason::error("expired");
    return {};
  }

  otpp::result<void> handle_call(const remove& r) {
    if (!sessions_.erase(r.id)) return otpp::exit_reason::error("not_found");
    return {};
  }

  std::size_t handle_call(size) const { return sessions_.size(); }

  session_reader handle_call(get_reader) const { return {sessions_, opts_.clock}; }

  void handle_info(cleanup_tick) {
    const auto forget_before = now() - opts_.cleanup_every;
    // Shard by shard under each shard's write lock: readers of the other
    // shards go on meanwhile.
    const std::size_t removed =
        sessions_.select_delete([&](const std::string&, const stored_session& s) { return s.expires <= forget_before; });
    otpp::telemetry::execute(session_store_events::cleanup, {{"removed", removed}, {"live", sessions_.size()}});
  }

 private:
  std::chrono::steady_clock::time_point now() const { return opts_.clock ? opts_.clock() : otpp::monotonic_time(); }

  session_store_table_options opts_;
  otpp::table<std::string, stored_session> sessions_;
  otpp::timer_ref cleanup_timer_;
};

}  // namespace examples
