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
// snapshot that is missing starts empty; one that cannot be read (a
// directory, an I/O error) or is corrupt or truncated (bad magic, lengths
// past the end, checksum mismatch) starts empty with a logged warning and is
// never a crash loop. Restore streams the file (only what fits the capacity
// is kept in memory). The periodic snapshot is written by a background
// thread from an immutable view of the entries (entries are shared and
// never changed in place), so the server only spends the time to copy one
// pointer per entry: fetches go on while a large cache is written. A tick
// that finds the previous write still running skips its turn.

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

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
    if (opts_.snapshot.empty()) return;
    if (writer_.valid()) writer_.wait();  // the last word is this one
    (void)write_snapshot(opts_.snapshot, view());
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
    return (*it->second)->second;
  }

  void handle_cast(cache c) {
    auto it = index_.find(c.query);
    if (it != index_.end()) {
      // Entries are never changed in place (a snapshot being written may
      // hold this one): a new entry replaces it, and the index follows.
      auto pos = it->second;
      index_.erase(it);
      *pos = std::make_shared<const entry>(std::move(c.query), std::move(c.result));
      lru_.splice(lru_.begin(), lru_, pos);
      index_.emplace((*pos)->first, pos);
    } else {
      if (lru_.size() == opts_.capacity) evict();
      lru_.push_front(std::make_shared<const entry>(std::move(c.query), std::move(c.result)));
      index_.emplace(lru_.front()->first, lru_.begin());
    }
    otpp::telemetry::execute(search_cache_events::cache, {{"size", lru_.size()}});
  }

  stats handle_call(get_stats) const { return current_stats(); }

  /// The counters now (what get_stats answers, and what the cache's fmt
  /// formatter prints for otpp's observer).
  [[nodiscard]] stats current_stats() const {
    stats s = stats_;
    s.size = lru_.size();
    s.capacity = opts_.capacity;
    return s;
  }

  bool handle_call(save) {
    if (writer_.valid()) writer_.wait();
    return write_snapshot(opts_.snapshot, view());
  }

  void handle_info(stats_tick) {
    otpp::telemetry::execute(search_cache_events::stats, {{"size", lru_.size()},
                                                          {"hits", stats_.hits},
                                                          {"misses", stats_.misses},
                                                          {"evictions", stats_.evictions}});
  }
  void handle_info(snapshot_tick) {
    if (writer_.valid() && writer_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
    writer_ = std::async(std::launch::async, [path = opts_.snapshot, v = view()] { return write_snapshot(path, v); });
  }
  /// Trapping only to save first: an exit signal still ends the cache.
  void handle_info(const otpp::exit_signal& e) {
    if (!e.reason.is_normal()) stop(e.reason);
  }

 private:
  using entry = std::pair<std::string, std::string>;
  using entry_ptr = std::shared_ptr<const entry>;

  void evict() {
    index_.erase(std::string_view{lru_.back()->first});
    lru_.pop_back();
    ++stats_.evictions;
  }

  // What a snapshot writes: the entries, most recent first, shared.
  [[nodiscard]] std::vector<entry_ptr> view() const { return {lru_.begin(), lru_.end()}; }

  // -- snapshot format: magic, entry count, then (u64 length, bytes) pairs
  //    most recent first, then an FNV-1a 64 checksum of everything before it.
  static constexpr std::string_view magic{"otpp-search-cache-1\n"};
  static constexpr std::uint64_t fnv_basis = 0xcbf29ce484222325ull;
  static std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
    for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
    return h;
  }

  // Buffered writes to a file descriptor, checksumming what goes through.
  class snapshot_writer {
   public:
    explicit snapshot_writer(int fd) : fd_{fd} { buf_.reserve(1 << 20); }
    void put(std::string_view s) {
      hash_ = fnv1a(hash_, s);
      raw(s);
    }
    void put_u64(std::uint64_t v) {
      char b[8];
      for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
      put({b, 8});
    }
    void put_checksum() {
      const std::uint64_t h = hash_;
      char b[8];
      for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((h >> (8 * i)) & 0xff);
      raw({b, 8});
    }
    [[nodiscard]] bool finish() { return flush() && ::fsync(fd_) == 0; }

   private:
    void raw(std::string_view s) {
      if (buf_.size() + s.size() > buf_.capacity()) ok_ = flush() && ok_;
      if (s.size() >= buf_.capacity()) {
        ok_ = write_all(s) && ok_;
      } else {
        buf_.append(s);
      }
    }
    bool flush() {
      const bool ok = write_all(buf_);
      buf_.clear();
      return ok && ok_;
    }
    bool write_all(std::string_view s) const {
      std::size_t done = 0;
      while (done < s.size()) {
        const ssize_t n = ::write(fd_, s.data() + done, s.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
      }
      return true;
    }
    int fd_;
    std::string buf_;
    std::uint64_t hash_ = fnv_basis;
    bool ok_ = true;
  };

  // Buffered reads, checksumming what comes through; any read error or a
  // short read fails it (and stays failed).
  class snapshot_reader {
   public:
    explicit snapshot_reader(int fd) : fd_{fd}, buf_(1 << 20) {}
    [[nodiscard]] bool ok() const noexcept { return ok_; }
    [[nodiscard]] int error() const noexcept { return errno_; }
    [[nodiscard]] std::uint64_t hash() const noexcept { return hash_; }
    bool get(std::string& out, std::uint64_t n, bool keep) {
      if (keep) out.clear();
      while (n > 0 && fill()) {
        const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(n, end_ - pos_));
        const std::string_view chunk{buf_.data() + pos_, take};
        hash_ = fnv1a(hash_, chunk);
        if (keep) out.append(chunk);
        pos_ += take;
        n -= take;
      }
      return ok_ && n == 0;
    }
    bool get_u64(std::uint64_t& v, bool hashed = true) {
      char b[8];
      for (char& c : b) {
        if (!fill()) return false;
        c = buf_[pos_++];
      }
      if (hashed) hash_ = fnv1a(hash_, {b, 8});
      v = 0;
      for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
      return true;
    }
    [[nodiscard]] bool at_end() { return !fill() && errno_ == 0; }

   private:
    bool fill() {
      if (!ok_) return false;
      if (pos_ < end_) return true;
      for (;;) {
        const ssize_t n = ::read(fd_, buf_.data(), buf_.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) errno_ = errno;
        if (n <= 0) {
          ok_ = false;
          return false;
        }
        pos_ = 0;
        end_ = static_cast<std::size_t>(n);
        return true;
      }
    }
    int fd_;
    std::vector<char> buf_;
    std::size_t pos_ = 0, end_ = 0;
    std::uint64_t hash_ = fnv_basis;
    bool ok_ = true;
    int errno_ = 0;
  };

  // Runs on the server (terminate, save) or on the background writer: it
  // touches nothing of the server's but what it is given.
  static bool write_snapshot(const std::filesystem::path& path, const std::vector<entry_ptr>& entries) {
    const std::filesystem::path tmp = path.string() + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      otpp::log(otpp::log_level::warning, "search_cache: cannot write {}: {}", tmp.string(), std::strerror(errno));
      return false;
    }
    bool ok = false;
    try {
      snapshot_writer w{fd};
      w.put(magic);
      w.put_u64(entries.size());
      for (const entry_ptr& e : entries) {
        w.put_u64(e->first.size());
        w.put(e->first);
        w.put_u64(e->second.size());
        w.put(e->second);
      }
      w.put_checksum();
      ok = w.finish();
    } catch (...) {
      ok = false;  // out of memory for the buffer: this snapshot is skipped
    }
    ::close(fd);
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
      otpp::log(otpp::log_level::warning, "search_cache: writing snapshot {} failed", path.string());
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      return false;
    }
    // The rename is durable only once the directory entry is.
    auto dir = path.parent_path();
    if (dir.empty()) dir = ".";
    if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
    return true;
  }

  void restore() {
    const int fd = ::open(opts_.snapshot.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno != ENOENT)
        otpp::log(otpp::log_level::warning, "search_cache: cannot read snapshot {}: {}; starting empty",
                  opts_.snapshot.string(), std::strerror(errno));
      return;  // missing: no snapshot yet
    }
    std::vector<entry> entries;
    int read_error = 0;
    bool good = false;
    try {
      snapshot_reader r{fd};
      good = parse(r, entries);
      read_error = r.error();
    } catch (...) {
      good = false;  // out of memory reading it: as good as unreadable
    }
    ::close(fd);
    if (!good) {
      entries.clear();
      if (read_error != 0) {
        otpp::log(otpp::log_level::warning, "search_cache: cannot read snapshot {}: {}; starting empty",
                  opts_.snapshot.string(), std::strerror(read_error));
      } else {
        otpp::log(otpp::log_level::warning, "search_cache: snapshot {} is corrupt or truncated; starting empty",
                  opts_.snapshot.string());
      }
      return;
    }
    // Oldest first, so the most recent ends up at the front.
    for (std::size_t i = entries.size(); i-- > 0;) {
      if (index_.contains(entries[i].first)) continue;
      lru_.push_front(std::make_shared<const entry>(std::move(entries[i])));
      index_.emplace(lru_.front()->first, lru_.begin());
    }
  }

  // Keeps the first `capacity` entries (the most recent); the rest are read
  // through for the checksum only.
  bool parse(snapshot_reader& r, std::vector<entry>& out) const {
    std::string head;
    if (!r.get(head, magic.size(), true) || head != magic) return false;
    std::uint64_t count = 0;
    if (!r.get_u64(count)) return false;
    std::string skipped;
    for (std::uint64_t i = 0; i < count; ++i) {
      const bool keep = out.size() < opts_.capacity;
      entry e;
      std::uint64_t n = 0;
      if (!r.get_u64(n) || !r.get(keep ? e.first : skipped, n, keep)) return false;
      if (!r.get_u64(n) || !r.get(keep ? e.second : skipped, n, keep)) return false;
      if (keep) out.push_back(std::move(e));
    }
    const std::uint64_t expected = r.hash();
    std::uint64_t sum = 0;
    return r.get_u64(sum, false) && sum == expected && r.at_end();
  }

  struct sv_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  search_cache_options opts_;
  std::list<entry_ptr> lru_;  // most recently used first
  std::unordered_map<std::string_view, std::list<entry_ptr>::iterator, sv_hash, std::equal_to<>> index_;  // keys view lru_
  std::future<bool> writer_;  // the periodic snapshot being written, if any
  stats stats_;
  otpp::timer_ref stats_timer_;
  otpp::timer_ref snapshot_timer_;
};

}  // namespace examples

// The state as otpp's observer shows it (otpp::sys::format_state).
template <>
struct fmt::formatter<examples::search_cache> : fmt::formatter<std::string_view> {
  auto format(const examples::search_cache& c, fmt::format_context& ctx) const {
    const auto s = c.current_stats();
    return fmt::format_to(ctx.out(), "{} of {} entries; {} hits, {} misses, {} evictions", s.size, s.capacity, s.hits,
                          s.misses, s.evictions);
  }
};
