#pragma once
// Names: look processes up by the name they were started with, and talk to
// them by name (Erlang's registered names, Elixir's `name:` option).
//
//   auto c = otpp::start<cache>(otpp::name("cache")).value();
//   otpp::whereis<cache>("cache");            // server<cache>, empty if absent
//   otpp::call<cache>("cache", cache::get{}); // noproc if nobody holds the name
//   otpp::start<cache>(otpp::named);          // named after the type:
//   otpp::call<cache>(cache::get{});          //   the __MODULE__ idiom
//
// otpp::registry is Elixir's Registry: a process registers itself under keys
// (unique, or duplicate for pub/sub), entries vanish when it exits, and a
// unique registry names processes at start with otpp::via.
//
// A name is registered before init runs and released when the process exits
// (or when start fails). Names are process-wide (like a node's): one table
// for every runtime. A typed lookup of a name held by another server type
// finds nothing. Casts to a missing name are dropped; calls and stops fail
// with noproc.

#include <algorithm>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "detail/name_table.hpp"
#include "gen_server.hpp"
#include "process.hpp"

namespace otpp {

/// The process registered as `name`, or an empty pid.
[[nodiscard]] inline pid whereis(std::string_view name) {
  detail::process_base* p = detail::name_table::instance().find(name);
  pid out = detail::pid_access::make(p);
  if (p) p->release();
  return out;
}

/// The server<Impl> registered as `name`, or an empty handle (also when the
/// name is held by a process of another type).
template <class Impl>
[[nodiscard]] server<Impl> whereis(std::string_view name) {
  detail::process_base* p = detail::name_table::instance().find(name, detail::type_id<Impl>);
  server<Impl> out = detail::server_access::make<Impl>(detail::pid_access::make(p));
  if (p) p->release();
  return out;
}

/// The name the __MODULE__ idiom uses for Impl (see otpp::named).
template <class Impl>
[[nodiscard]] constexpr std::string_view name_of() noexcept {
  return detail::type_name<Impl>();
}

/// Registers the calling process under `name` (Process.register(self(), name)).
/// Returns false outside a process, if the name is taken, or if the process
/// already has a name.
inline bool register_name(std::string name) {
  detail::process_base* me = detail::tls().current;
  if (me == nullptr || name.empty()) return false;
  if (!me->cold_state().name.empty()) return false;
  return !detail::local_registration{std::move(name), nullptr}(me);
}

/// Removes the calling process's name. Returns false if it had none.
inline bool unregister_name() {
  detail::process_base* me = detail::tls().current;
  if (me == nullptr) return false;
  detail::process_cold* c = me->cold_if_any();
  if (c == nullptr || c->name.empty()) return false;
  detail::release_name(*me, *c);
  return true;
}

/// Every registered name.
[[nodiscard]] inline std::vector<std::string> registered() {
  std::vector<std::string> out;
  detail::name_table::instance().for_each([&](std::string_view n, detail::process_base*) { out.emplace_back(n); });
  return out;
}

/// call / try_call / cast / stop by name.
template <class Impl, class Req>
[[nodiscard]] auto try_call(std::string_view name, Req&& req,
                            std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return try_call(whereis<Impl>(name), std::forward<Req>(req), timeout);
}
template <class Impl, class Req>
auto call(std::string_view name, Req&& req, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return call(whereis<Impl>(name), std::forward<Req>(req), timeout);
}
template <class Impl, class Msg>
void cast(std::string_view name, Msg&& msg) {
  cast(whereis<Impl>(name), std::forward<Msg>(msg));
}

/// The __MODULE__ idiom: call the server registered under Impl's own name.
template <class Impl, class Req>
  requires(!std::is_convertible_v<Req, std::string_view>)
auto call(Req&& req, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return call(whereis<Impl>(name_of<Impl>()), std::forward<Req>(req), timeout);
}
template <class Impl, class Req>
  requires(!std::is_convertible_v<Req, std::string_view>)
[[nodiscard]] auto try_call(Req&& req, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return try_call(whereis<Impl>(name_of<Impl>()), std::forward<Req>(req), timeout);
}
template <class Impl, class Msg>
  requires(!std::is_convertible_v<Msg, std::string_view>)
void cast(Msg&& msg) {
  cast(whereis<Impl>(name_of<Impl>()), std::forward<Msg>(msg));
}

// -- Registry ---------------------------------------------------------------------

enum class registry_keys { unique, duplicate };

template <class Key, class Value = std::monostate>
class registry;

/// Names a process through a unique registry at start:
/// `otpp::start<session>(otpp::via(sessions, user_id), args...)`.
template <class Key, class Value>
struct via_t {
  registry<Key, Value> reg;  ///< The registry.
  Key key;                   ///< The key the process is registered under.
  Value value;               ///< The value stored with it.

 private:
  friend struct detail::registrar_access;
  std::optional<exit_reason> register_for(detail::process_base* p) { return reg.register_owner(p, key, std::move(value)); }
};

template <class Key, class Value>
[[nodiscard]] via_t<Key, Value> via(const registry<Key, Value>& reg, Key key, Value value = {}) {
  return via_t<Key, Value>{reg, std::move(key), std::move(value)};
}

/// Elixir's Registry: processes register themselves under keys, with a value.
/// Unique keys map to one process (and can name processes, see via);
/// duplicate keys to many (pub/sub: dispatch to all under a key). Entries
/// vanish when their process exits.
///
/// A registry is a handle: copies share the same table. The table is split
/// into partitions, each behind a reader/writer lock, so lookups of different
/// keys never wait on one another and lookups of the same key only wait for
/// writers of that partition.
///
///   otpp::registry<std::string> pubsub{otpp::registry_keys::duplicate};
///   // inside a subscriber process:
///   pubsub.register_key("topic");
///   // anywhere:
///   pubsub.dispatch("topic", [](const otpp::pid& p, std::monostate) { otpp::send(p, news{}); });
template <class Key, class Value>
class registry {
 public:
  /// A new registry; copies share it. `partitions` spreads the keys over
  /// that many locks.
  explicit registry(registry_keys kind = registry_keys::unique, std::size_t partitions = 64)
      : state_{std::make_shared<state>(kind, partitions == 0 ? 1 : partitions)} {}

  /// Unique or duplicate keys.
  [[nodiscard]] registry_keys kind() const noexcept { return state_->kind; }

  /// Registers the calling process under `key`. A unique key held by another
  /// process fails with already_started (otpp::holder(reason) is the holder);
  /// outside a process, with noproc.
  result<void> register_key(Key key, Value value = {}) {
    detail::process_base* me = detail::tls().current;
    if (me == nullptr) return exit_reason::noproc();
    if (auto err = register_owner(me, std::move(key), std::move(value))) return std::move(*err);
    return {};
  }

  /// Removes the calling process's entries under `key`. Returns whether any.
  bool unregister_key(const Key& key) {
    detail::process_base* me = detail::tls().current;
    if (me == nullptr) return false;
    membership* m = find_membership(*me);
    if (m == nullptr) return false;
    auto it = std::find(m->keys.begin(), m->keys.end(), key);
    if (it == m->keys.end()) return false;
    m->keys.erase(std::remove(m->keys.begin(), m->keys.end(), key), m->keys.end());
    state_->remove(key, me);
    return true;
  }

  /// The processes under `key`, with their values (at most one if unique).
  [[nodiscard]] std::vector<std::pair<pid, Value>> lookup(const Key& key) const {
    std::vector<std::pair<pid, Value>> out;
    auto& sh = state_->shard_of(key);
    std::shared_lock lock{sh.mutex};
    auto it = sh.map.find(key);
    if (it == sh.map.end()) return out;
    out.reserve(it->second.size());
    for (auto& e : it->second) out.emplace_back(detail::pid_access::make(e.owner), e.value);
    return out;
  }

  /// The process under a unique `key`, or an empty pid.
  [[nodiscard]] pid whereis(const Key& key) const {
    auto& sh = state_->shard_of(key);
    std::shared_lock lock{sh.mutex};
    auto it = sh.map.find(key);
    if (it == sh.map.end() || it->second.empty()) return {};
    return detail::pid_access::make(it->second.front().owner);
  }

  /// The server<Impl> under a unique `key`, or empty (also for another type).
  template <class Impl>
  [[nodiscard]] server<Impl> whereis(const Key& key) const {
    pid p = whereis(key);
    detail::process_base* proc = detail::pid_access::get(p);
    if (proc == nullptr || proc->impl_type() != detail::type_id<Impl>) return {};
    return detail::server_access::make<Impl>(std::move(p));
  }

  /// Calls f(pid, value) for every entry under `key` (Registry.dispatch).
  /// f runs on the caller's thread, after the partition lock is released.
  template <class F>
  void dispatch(const Key& key, F&& f) const {
    for (auto& [p, v] : lookup(key)) f(p, v);
  }

  /// The keys `p` is registered under (Registry.keys/2). From the process
  /// itself this reads its own list; from anywhere else it walks the table,
  /// partition by partition (each under its read lock).
  [[nodiscard]] std::vector<Key> keys(const pid& p) const {
    std::vector<Key> out;
    detail::process_base* proc = detail::pid_access::get(p);
    if (proc == nullptr || !proc->alive()) return out;
    if (proc == detail::tls().current) {
      if (membership* m = const_cast<registry*>(this)->find_membership(*proc)) {
        out = m->keys;
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
      }
      return out;
    }
    for (auto& sh : state_->shards) {
      std::shared_lock lock{sh.mutex};
      for (auto& [k, es] : sh.map)
        for (auto& e : es)
          if (e.owner == proc) {
            out.push_back(k);
            break;
          }
    }
    return out;
  }

  /// Number of entries.
  [[nodiscard]] std::size_t count() const {
    std::size_t n = 0;
    for (auto& sh : state_->shards) {
      std::shared_lock lock{sh.mutex};
      for (auto& [k, es] : sh.map) n += es.size();
    }
    return n;
  }

 private:
  template <class K, class V>
  friend struct via_t;
  /// Registers `p` (owned by the calling thread: itself, or a process being
  /// started) under `key`. Used by register_key and via.
  std::optional<exit_reason> register_owner(detail::process_base* p, Key key, Value value) {
    auto& sh = state_->shard_of(key);
    membership* m = find_membership(*p);
    if (m == nullptr) {
      auto hook = std::make_shared<membership>(state_);
      m = hook.get();
      p->cold_state().exit_hooks.push_back(std::move(hook));
    }
    m->keys.reserve(m->keys.size() + 1);
    {
      std::unique_lock lock{sh.mutex};
      auto& es = sh.map[key];
      if (state_->kind == registry_keys::unique && !es.empty()) return detail::already_started_by(es.front().owner);
      es.push_back(entry{p, std::move(value)});
    }
    m->keys.push_back(std::move(key));
    return std::nullopt;
  }

  struct entry {
    detail::process_base* owner;  // no reference: removed before the owner's memory can go
    Value value;
  };
  struct alignas(detail::cache_line) shard {
    mutable std::shared_mutex mutex;
    std::unordered_map<Key, std::vector<entry>> map;
  };
  struct state {
    state(registry_keys k, std::size_t n) : kind{k}, shards(n) {}
    registry_keys kind;
    std::vector<shard> shards;
    shard& shard_of(const Key& k) noexcept { return shards[std::hash<Key>{}(k) % shards.size()]; }
    void remove(const Key& key, detail::process_base* p) noexcept {
      auto& sh = shard_of(key);
      std::unique_lock lock{sh.mutex};
      auto it = sh.map.find(key);
      if (it == sh.map.end()) return;
      auto& es = it->second;
      es.erase(std::remove_if(es.begin(), es.end(), [p](const entry& e) { return e.owner == p; }), es.end());
      if (es.empty()) sh.map.erase(it);
    }
  };
  // One per (process, registry): the keys the process holds here, removed
  // when it exits. Touched only by the process that owns it.
  struct membership final : detail::exit_hook {
    explicit membership(const std::shared_ptr<state>& s) : reg{s}, tag{s.get()} {}
    std::weak_ptr<state> reg;  // the registry may go first
    const void* tag;
    std::vector<Key> keys;
    void on_exit(detail::process_base& p) noexcept override {
      if (auto s = reg.lock())
        for (auto& k : keys) s->remove(k, &p);
      keys.clear();
    }
    [[nodiscard]] const void* owner_tag() const noexcept override { return tag; }
  };

  membership* find_membership(detail::process_base& p) {
    detail::process_cold* c = p.cold_if_any();
    if (c == nullptr) return nullptr;
    for (auto& h : c->exit_hooks)
      if (h->owner_tag() == state_.get()) return static_cast<membership*>(h.get());
    return nullptr;
  }

  std::shared_ptr<state> state_;
};

}  // namespace otpp
