#pragma once
// A search-result cache as a gen_server: fetch (call) / cache (cast), with
// true LRU eviction at a fixed capacity, telemetry, periodic stats, and
// optional persistence that survives crashes and restarts.
//
//   auto c = otpp::start_link<examples::search_cache>(otpp::name("search_cache"),
//                examples::search_cache_options{.capacity = 50'000, .snapshot = "cache.snap"}).value();
//   otpp::cast(c, examples::search_cache::cache{"otp", "<results>"});
//   std::optional<std::string> r = otpp::call(c, examples::search_cache::fetch{"otp"});
//
// Eviction drops the least recently used entry (a fetch hit or a cache
// counts as a use) in O(1): a recency list plus a hash index into it.
//
// Telemetry: [search_cache, fetch] {count} {hit}, [search_cache, cache]
// {size}, and every stats_every [search_cache, stats] {size, hits, misses,
// evictions} (a send_interval to itself).
//
// Persistence: with `snapshot` set, the cache is written on terminate and
// every snapshot_every, and read back in init. It then traps exits, so an
// exit signal (a supervisor's shutdown, a linked crash) runs terminate
// before it ends the cache; a kill does not, and loses what was cached
// since the last periodic snapshot. A write goes to a temporary
// file, is fsync'ed, then renamed over the old one (and the directory
// fsync'ed), so a crash mid-write leaves the previous snapshot whole. A
// snapshot that is missing starts empty; one that is corrupt or truncated
// (bad magic, lengths past the end, checksum mismatch) starts empty with a
// logged warning and is never a crash loop.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <otpp/gen_server.hpp>
#include <otpp/log.hpp>
#include <otpp/process.hpp>
#include <otpp/telemetry.hpp>
#include <otpp/timer.hpp>

namespace examples {

struct search_cache_options {
  std::size_t capacity = 10'000;
  /// 0: no periodic stats event.
  std::chrono::milliseconds stats_every{0};
  /// Empty: no persistence.
  std::filesystem::path snapshot{};
  /// 0: snapshot on terminate only.
  std::chrono::milliseconds snapshot_every{0};
};

namespace search_cache_events {
inline const otpp::telemetry::event fetch{"search_cache", "fetch"};
inline const otpp::telemetry::event cache{"search_cache", "cache"};
inline const otpp::telemetry::event stats{"search_cache", "stats"};
}  // namespace search_cache_events

class search_cache : public otpp::gen_server<search_cache> {
 public:
  /// call → the cached result, or nothing.
  struct fetch {
    std::string query;
  };
  /// cast: stores (or refreshes) a result.
  struct cache {
    std::string query;
    std::string result;
  };
  struct stats {
    std::size_t size = 0;
    std::size_t capacity = 0;
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t evictions = 0;
  };
  /// call → stats.
  struct get_stats {};
  /// call: writes the snapshot now → whether it was written.
  struct save {};
  /// Timer messages.
  struct stats_tick {};
  struct snapshot_tick {};

  explicit search_cache(search_cache_options opts = {}) : opts_{std::move(opts)} {
    if (opts_.capacity == 0) throw std::invalid_argument("search_cache: capacity must be positive");
  }

  void init() {
    if (!opts_.snapshot.empty()) {
      trap_exit(true);  // so that a shutdown or an exit signal runs terminate, which saves
      restore();
    }
    if (opts_.stats_every.count() > 0) stats_timer_ = otpp::send_interval(self(), stats_tick{}, opts_.stats_every);
    if (!opts_.snapshot.empty() && opts_.snapshot_every.count() > 0)
      snapshot_timer_ = otpp::send_interval(self(), snapshot_tick{}, opts_.snapshot_every);
  }

  void terminate(const otpp::exit_reason&) {
    if (!opts_.snapshot.empty()) (void)write_snapshot();
  }

  std::optional<std::string> handle_call(const fetch& f) {
    auto it = index_.find(f.query);
    const bool hit = it != index_.end();
    otpp::telemetry::execute(search_cache_events::fetch, {{"count", 1}}, {{"hit", hit}});
    if (!hit) {
      ++stats_.misses;
      return std::nullopt;
    }
    ++stats_.hits;
    lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
    return it->second->second;
  }

  void handle_cast(cache c) {
    auto it = index_.find(c.query);
    if (it != index_.end()) {
      it->second->second = std::move(c.result);
      lru_.splice(lru_.begin(), lru_, it->second);
    } else {
      if (lru_.size() == opts_.capacity) evict();
      lru_.emplace_front(std::move(c.query), std::move(c.result));
      index_.emplace(lru_.front().first, lru_.begin());
    }
    otpp::telemetry::execute(search_cache_events::cache, {{"size", lru_.size()}});
  }

  stats handle_call(get_stats) const {
    stats s = stats_;
    s.size = lru_.size();
    s.capacity = opts_.capacity;
    return s;
  }

  bool handle_call(save) { return write_snapshot(); }

  void handle_info(stats_tick) {
    otpp::telemetry::execute(search_cache_events::stats, {{"size", lru_.size()},
                                                          {"hits", stats_.hits},
                                                          {"misses", stats_.misses},
                                                          {"evictions", stats_.evictions}});
  }
  void handle_info(snapshot_tick) { (void)write_snapshot(); }
  /// Trapping only to save first: an exit signal still ends the cache.
  void handle_info(const otpp::exit_signal& e) {
    if (!e.reason.is_normal()) stop(e.reason);
  }

 private:
  using entry = std::pair<std::string, std::string>;

  void evict() {
    index_.erase(std::string_view{lru_.back().first});
    lru_.pop_back();
    ++stats_.evictions;
  }

  // -- snapshot format: magic, entry count, then (u32 length, bytes) pairs
  //    most recent first, then an FNV-1a 64 checksum of everything before it.
  static constexpr std::string_view magic{"otpp-search-cache-1\n"};

  static void put_u64(std::string& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  static std::uint64_t fnv1a(std::string_view s) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
    return h;
  }

  bool write_snapshot() {
    std::string out{magic};
    put_u64(out, lru_.size());
    for (auto& [k, v] : lru_) {
      put_u64(out, k.size());
      out += k;
      put_u64(out, v.size());
      out += v;
    }
    put_u64(out, fnv1a(out));
    const std::filesystem::path tmp = opts_.snapshot.string() + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      otpp::log(otpp::log_level::warning, "search_cache: cannot write {}", tmp.string());
      return false;
    }
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::write(fd, out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    const bool ok = done == out.size() && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || std::rename(tmp.c_str(), opts_.snapshot.c_str()) != 0) {
      otpp::log(otpp::log_level::warning, "search_cache: writing snapshot {} failed", opts_.snapshot.string());
      std::filesystem::remove(tmp);
      return false;
    }
    // The rename is durable only once the directory entry is.
    auto dir = opts_.snapshot.parent_path();
    if (dir.empty()) dir = ".";
    if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
    return true;
  }

  void restore() {
    std::ifstream f{opts_.snapshot, std::ios::binary};
    if (!f) return;  // no snapshot yet
    const std::string data{std::istreambuf_iterator<char>{f}, std::istreambuf_iterator<char>{}};
    std::vector<entry> entries;
    if (!parse(data, entries)) {
      otpp::log(otpp::log_level::warning, "search_cache: snapshot {} is corrupt or truncated; starting empty",
                opts_.snapshot.string());
      return;
    }
    // Oldest first, so the most recent ends up at the front; past capacity,
    // the least recent are the ones left out.
    const std::size_t keep = std::min(entries.size(), opts_.capacity);
    for (std::size_t i = keep; i-- > 0;) {
      if (index_.contains(entries[i].first)) continue;
      lru_.emplace_front(std::move(entries[i]));
      index_.emplace(lru_.front().first, lru_.begin());
    }
  }

  static bool parse(std::string_view data, std::vector<entry>& out) {
    if (data.size() < magic.size() + 16 || data.substr(0, magic.size()) != magic) return false;
    const std::string_view body = data.substr(0, data.size() - 8);
    std::size_t pos = magic.size();
    auto get_u64 = [&](std::string_view s, std::size_t at) {
      std::uint64_t v = 0;
      for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
      return v;
    };
    if (get_u64(data, data.size() - 8) != fnv1a(body)) return false;
    auto take = [&](std::string& s) {
      if (body.size() - pos < 8) return false;
      const std::uint64_t n = get_u64(body, pos);
      pos += 8;
      if (n > body.size() - pos) return false;
      s.assign(body.substr(pos, n));
      pos += n;
      return true;
    };
    if (body.size() - pos < 8) return false;
    const std::uint64_t count = get_u64(body, pos);
    pos += 8;
    if (count > body.size()) return false;  // each entry takes at least 16 bytes
    out.reserve(count);
    for (std::uint64_t i = 0; i < count; ++i) {
      entry e;
      if (!take(e.first) || !take(e.second)) return false;
      out.push_back(std::move(e));
    }
    return pos == body.size();
  }

  struct sv_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  search_cache_options opts_;
  std::list<entry> lru_;  // most recently used first
  std::unordered_map<std::string_view, std::list<entry>::iterator, sv_hash, std::equal_to<>> index_;  // keys view lru_
  stats stats_;
  otpp::timer_ref stats_timer_;
  otpp::timer_ref snapshot_timer_;
};

}  // namespace examples
