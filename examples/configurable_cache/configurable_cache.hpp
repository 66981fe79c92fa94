#pragma once
// A cache with both a time to live and a size bound (LRU), and statistics:
// the "configurable cache" of the classic examples.
//
//   using cache = examples::configurable_cache<std::string, std::string>;
//   auto c = otpp::start<cache>(examples::cache_options{.capacity = 1000, .ttl = 5min}).value();
//   otpp::cast(c, cache::put{"k", "v"});                 // or put{"k", "v", 10s}: its own ttl
//   otpp::call(c, cache::get{"k"});                       // "v" until it expires or is evicted
//   otpp::call(c, cache::get_stats{});                    // hits, misses, evictions, expirations
//
// An entry expires `ttl` (or its own) after its last put; a get of an
// expired entry is a miss and removes it; a sweep every sweep_every removes
// the rest, so memory follows the live entries. Past capacity, the least
// recently used entry goes (a get hit or a put counts as a use). Time is the
// runtime's clock (otpp::monotonic_time).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include <otpp/gen_server.hpp>
#include <otpp/timer.hpp>

namespace examples {

struct cache_options {
  std::size_t capacity = 1000;
  /// Default time to live; zero: entries never expire.
  std::chrono::milliseconds ttl{0};
  /// Zero: ttl (when there is one).
  std::chrono::milliseconds sweep_every{0};
};

template <class K, class V, class Hash = std::hash<K>>
class configurable_cache : public otpp::gen_server<configurable_cache<K, V, Hash>> {
  using base = otpp::gen_server<configurable_cache<K, V, Hash>>;

 public:
  // Pure bookkeeping, no waits: callers may run it on their own thread
  // (see otpp::declares_nonblocking_handlers).
  static constexpr bool nonblocking_handlers = true;
  struct put {  // cast
    K key;
    V value;
    std::optional<std::chrono::milliseconds> ttl{};
  };
  struct get {  // call → the value, or nothing (missing, expired)
    K key;
  };
  struct remove {  // call → whether a live entry was there
    K key;
  };
  struct clear {};  // cast
  struct stats {
    std::size_t size = 0;
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t evictions = 0;
    std::uint64_t expirations = 0;
  };
  struct get_stats {};  // call
  struct sweep_tick {};

  explicit configurable_cache(cache_options opts = {}) : opts_{opts} {
    if (opts_.capacity == 0) throw std::invalid_argument("configurable_cache: capacity must be positive");
    if (opts_.ttl.count() < 0 || opts_.sweep_every.count() < 0)
      throw std::invalid_argument("configurable_cache: negative ttl or sweep interval");
    if (opts_.sweep_every.count() == 0) opts_.sweep_every = opts_.ttl;
  }

  void init() {
    if (opts_.sweep_every.count() > 0) sweep_ = otpp::send_interval(this->self(), sweep_tick{}, opts_.sweep_every);
  }

  void handle_cast(put p) {
    const auto ttl = p.ttl.value_or(opts_.ttl);
    const auto expires = ttl.count() > 0 ? otpp::monotonic_time() + ttl : never;
    if (auto it = index_.find(p.key); it != index_.end()) {
      it->second->value = std::move(p.value);
      it->second->expires = expires;
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    if (order_.size() == opts_.capacity) {
      index_.erase(order_.back().key);
      order_.pop_back();
      ++stats_.evictions;
    }
    order_.push_front(entry{p.key, std::move(p.value), expires});
    index_.emplace(std::move(p.key), order_.begin());
  }

  std::optional<V> handle_call(const get& g) {
    auto it = index_.find(g.key);
    if (it == index_.end()) {
      ++stats_.misses;
      return std::nullopt;
    }
    if (it->second->expires <= otpp::monotonic_time()) {
      order_.erase(it->second);
      index_.erase(it);
      ++stats_.expirations;
      ++stats_.misses;
      return std::nullopt;
    }
    ++stats_.hits;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->value;
  }

  bool handle_call(const remove& r) {
    auto it = index_.find(r.key);
    if (it == index_.end()) return false;
    const bool live = it->second->expires > otpp::monotonic_time();
    order_.erase(it->second);
    index_.erase(it);
    return live;
  }

  void handle_cast(clear) {
    order_.clear();
    index_.clear();
  }

  stats handle_call(get_stats) const {
    stats s = stats_;
    s.size = order_.size();
    return s;
  }

  void handle_info(sweep_tick) {
    const auto now = otpp::monotonic_time();
    for (auto it = order_.begin(); it != order_.end();) {
      if (it->expires <= now) {
        index_.erase(it->key);
        it = order_.erase(it);
        ++stats_.expirations;
      } else {
        ++it;
      }
    }
  }

 private:
  static constexpr auto never = std::chrono::steady_clock::time_point::max();
  struct entry {
    K key;
    V value;
    std::chrono::steady_clock::time_point expires;
  };

  cache_options opts_;
  std::list<entry> order_;  // most recently used first
  std::unordered_map<K, typename std::list<entry>::iterator, Hash> index_;
  stats stats_;
  otpp::timer_ref sweep_;
};

}  // namespace examples
