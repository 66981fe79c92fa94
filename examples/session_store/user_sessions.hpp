#pragma once
// The "one process per user" form of a session store: each user's session
// is a process of its own, started on demand under a dynamic supervisor and
// found through a registry keyed by user id. A session that sees no message
// for its idle ttl ends itself (normally: not restarted); one that crashes
// is restarted empty (transient).
//
//   examples::user_sessions users{{.idle_ttl = 15min, .max_users = 100'000}};
//   auto s = users.open("alice").value();               // server<user_session>
//   otpp::cast(s, examples::user_session::put{"cart", "3 items"});
//   otpp::call(s, examples::user_session::get{"cart"});  // "3 items"
//   users.close("alice");
//
// open() from several places at once starts one process: the registry
// refuses the second start and open() returns the first.

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include <otpp/dynamic_supervisor.hpp>
#include <otpp/gen_server.hpp>
#include <otpp/registry.hpp>
#include <otpp/runtime.hpp>

namespace examples {

class user_session : public otpp::gen_server<user_session> {
 public:
  struct put {  // cast
    std::string key;
    std::string value;
  };
  struct get {  // call → the value, or nothing
    std::string key;
  };
  struct user {};  // call → the user id

  user_session(std::string user, std::chrono::milliseconds idle_ttl) : user_{std::move(user)}, ttl_{idle_ttl} {}

  otpp::init_result init() { return set_timeout(ttl_); }
  void handle_cast(put p) {
    data_[std::move(p.key)] = std::move(p.value);
    set_timeout(ttl_);
  }
  std::optional<std::string> handle_call(const get& g) {
    set_timeout(ttl_);
    auto it = data_.find(g.key);
    if (it == data_.end()) return std::nullopt;
    return it->second;
  }
  std::string handle_call(user) {
    set_timeout(ttl_);
    return user_;
  }
  void handle_info(otpp::timeout) { stop(); }  // idle: the session ends, normally

 private:
  std::string user_;
  std::chrono::milliseconds ttl_;
  std::map<std::string, std::string> data_;
};

struct user_sessions_options {
  std::chrono::milliseconds idle_ttl{30 * 60 * 1000};
  /// Empty: no limit.
  std::optional<std::size_t> max_users{};
};

/// Owns the dynamic supervisor and the registry; stopping it (or its
/// destructor) ends every session.
class user_sessions {
 public:
  /// In the calling process's runtime (or the default one).
  explicit user_sessions(user_sessions_options opts = {})
      : opts_{opts}, sup_{otpp::start<otpp::dynamic_supervisor>(flags(opts)).value()} {}
  user_sessions(otpp::runtime& rt, user_sessions_options opts)
      : opts_{opts}, sup_{rt.start<otpp::dynamic_supervisor>(flags(opts)).value()} {}
  user_sessions(const user_sessions&) = delete;
  user_sessions& operator=(const user_sessions&) = delete;
  ~user_sessions() { stop(); }

  /// The user's session, started if it is not running. Fails with
  /// error("max_children") when the limit is reached.
  otpp::result<otpp::server<user_session>> open(const std::string& user) {
    if (auto s = find(user)) return s;
    auto r = otpp::start_child(sup_, otpp::child<user_session>(otpp::via(registry_, user), user, opts_.idle_ttl)
                                         .with_restart(otpp::restart_type::transient));
    if (r) return r;  // a child<T> recipe gives a typed handle
    if (r.error().kind() == otpp::exit_kind::already_started) return otpp::server_cast<user_session>(otpp::holder(r.error()));
    return r.error();
  }

  /// The user's running session, or an empty handle.
  [[nodiscard]] otpp::server<user_session> find(const std::string& user) const {
    auto found = registry_.lookup(user);
    if (found.empty()) return {};
    auto s = otpp::server_cast<user_session>(found.front().first);
    return s ? *s : otpp::server<user_session>{};
  }

  /// Ends the user's session; error("not_found") if there is none.
  otpp::result<void> close(const std::string& user) {
    auto s = find(user);
    if (!s) return otpp::exit_reason::error("not_found");
    return otpp::terminate_child(sup_, s.pid());
  }

  /// Sessions running (or being restarted).
  [[nodiscard]] std::size_t count() const { return otpp::count_children(sup_).value().specs; }

  [[nodiscard]] const otpp::server<otpp::dynamic_supervisor>& supervisor() const noexcept { return sup_; }

  void stop() {
    if (sup_) (void)otpp::try_stop(std::exchange(sup_, {}).pid(), otpp::exit_reason::shutdown());
  }

 private:
  static otpp::dynamic_supervisor_flags flags(const user_sessions_options& o) {
    otpp::dynamic_supervisor_flags f;
    f.max_children = o.max_users;
    return f;
  }

  user_sessions_options opts_;
  otpp::registry<std::string> registry_;
  otpp::server<otpp::dynamic_supervisor> sup_;
};

}  // namespace examples
