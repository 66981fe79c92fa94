#pragma once
// The search cache's ETS form ("Option 3: ETS"): the results live in an
// otpp::table that any thread or process reads directly, so fetches scale
// with the readers and cost no message; the server owns the table and
// serialises the writes (cache) and the eviction.
//
//   std::vector<otpp::child_spec> kids{
//       otpp::child<examples::search_cache_keeper>(otpp::name("results_keeper")),
//       otpp::child<examples::search_cache_table>(
//           examples::search_cache_table_options{.capacity = 50'000, .keeper = "results_keeper"})};
//   auto sup = otpp::start<otpp::supervisor>(kids, otpp::supervisor_flags{.strategy = otpp::strategy::rest_for_one}).value();
//   otpp::cast(c, examples::search_cache_table::cache{"otp", "<results>"});
//   examples::search_cache_reader r = otpp::call(c, examples::search_cache_table::get_reader{});
//   std::optional<std::string> hit = r.fetch("otp");   // any thread, no message
//
// Eviction is CLOCK, an approximation of LRU that costs readers nothing
// but, the first time an entry is read after the hand passed it, one store
// to a flag in the entry: the server sweeps a ring of the keys, clearing
// the flags it finds set and evicting the first entry whose flag is clear.
// Unlike search_cache's true LRU, an entry read once since the last sweep
// is as safe as one read a thousand times, and a cache that was never
// read evicts in insertion order.
//
// Surviving a crash: with a search_cache_keeper (a small process a
// supervisor starts first, as Elixir code does with an ETS heir), the table
// belongs to the keeper, which hands it to the cache at start and gets it
// back (as heir) when the cache crashes; the restarted cache finds every
// result still there. Without a keeper the table dies with the cache.
//
// Readers taken before a restart keep reading the same table, but count
// their hits into the old cache's stats: take a new one after a restart.
//
// Telemetry: [search_cache, fetch] {count} {hit} from the reader's thread,
// [search_cache, cache] {size}, and every stats_every [search_cache, stats]
// {size, hits, misses, evictions}. Hits and misses are counted in an
// otpp::counters with write_concurrency: each thread on a cache line of its
// own, with no locked instruction.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <otpp/counters.hpp>
#include <otpp/gen_server.hpp>
#include <otpp/process.hpp>
#include <otpp/registry.hpp>
#include <otpp/table.hpp>
#include <otpp/telemetry.hpp>
#include <otpp/timer.hpp>

#include "search_cache.hpp"

namespace examples {

/// A cached result and its CLOCK reference flag.
struct search_cache_entry {
  std::string result;
  // Set by readers (relaxed: a hint, never a guard), cleared by the server.
  mutable std::atomic<bool> referenced{false};

  search_cache_entry() = default;
  explicit search_cache_entry(std::string r) : result{std::move(r)} {}
  search_cache_entry(const search_cache_entry& o) : result{o.result}, referenced{o.referenced.load(std::memory_order_relaxed)} {}
  search_cache_entry(search_cache_entry&& o) noexcept
      : result{std::move(o.result)}, referenced{o.referenced.load(std::memory_order_relaxed)} {}
  search_cache_entry& operator=(const search_cache_entry& o) {
    result = o.result;
    referenced.store(o.referenced.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }
  search_cache_entry& operator=(search_cache_entry&& o) noexcept {
    result = std::move(o.result);
    referenced.store(o.referenced.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }
  ~search_cache_entry() = default;
};

using search_cache_results = otpp::table<std::string, search_cache_entry, otpp::set>;

/// Reads the cache from any thread or process, without a message.
class search_cache_reader {
 public:
  /// Counter indexes in the cache's otpp::counters.
  static constexpr std::size_t hits = 0;
  static constexpr std::size_t misses = 1;

  search_cache_reader() = default;
  search_cache_reader(search_cache_results t, otpp::counters c) : table_{std::move(t)}, counters_{std::move(c)} {}

  /// The cached result for `query`, if any. Throws otpp::table_error once
  /// the table is gone (its owner exited without a keeper).
  [[nodiscard]] std::optional<std::string> fetch(const std::string& query) const {
    std::optional<std::string> out;
    look_up(query, [&](const std::string& r) { out = r; });
    return out;
  }
  /// As fetch, but the result is copied into `into` (as std::getline
  /// fills a string), whose memory a loop of fetches reuses: no allocation
  /// once it is big enough. Returns whether there was one; on a miss,
  /// `into` is left as it was.
  [[nodiscard]] bool fetch(const std::string& query, std::string& into) const {
    return look_up(query, [&](const std::string& r) { into.assign(r); });
  }

 private:
  template <class F>
  bool look_up(const std::string& query, F&& copy) const {
    const bool hit = table_.lookup(query, [&](const search_cache_entry& e) {
      copy(e.result);
      // Written once per sweep at most: a reader that finds it set stores nothing.
      if (!e.referenced.load(std::memory_order_relaxed)) e.referenced.store(true, std::memory_order_relaxed);
    });
    counters_.add(hit ? hits : misses, 1);
    // Checked first, so that an unwatched fetch does not build the event's lists.
    if (search_cache_events::fetch.active()) otpp::telemetry::execute(search_cache_events::fetch, {{"count", 1}}, {{"hit", hit}});
    return hit;
  }

  search_cache_results table_;
  otpp::counters counters_{2};
};

/// Holds the results table across crashes of the cache (its heir).
class search_cache_keeper : public otpp::gen_server<search_cache_keeper> {
 public:
  using info_types = otpp::type_list<otpp::table_transfer<search_cache_results>>;
  /// call from a starting cache: the table, now owned by `cache`.
  struct claim {
    otpp::pid cache;
  };

  explicit search_cache_keeper(std::string table_name = {}) : name_{std::move(table_name)} {}
  void init() {
    table_ = search_cache_results::create(
        {.name = name_, .heir = self().pid(), .read_concurrency = true, .write_concurrency = true});
  }
  search_cache_results handle_call(claim c) {
    table_.give_away(c.cache);  // the heir (this keeper) stays set
    return table_;
  }
  /// The table came back: its owner exited.
  void handle_info(otpp::table_transfer<search_cache_results>) {}

 private:
  std::string name_;
  search_cache_results table_;
};

struct search_cache_table_options {
  std::size_t capacity = 10'000;
  /// 0: no periodic stats event.
  std::chrono::milliseconds stats_every{0};
  /// The registered name of a search_cache_keeper (started before the
  /// cache, e.g. by the same rest_for_one supervisor), found at every
  /// (re)start. Empty: the cache makes its own table, which dies with it.
  std::string keeper{};
};

class search_cache_table : public otpp::gen_server<search_cache_table> {
 public:
  using info_types = otpp::type_list<otpp::table_transfer<search_cache_results>>;
  /// cast: stores (or refreshes) a result.
  struct cache {
    std::string query;
    std::string result;
  };
  /// call → a search_cache_reader.
  struct get_reader {};
  /// call → stats (the same shape as search_cache's).
  struct get_stats {};
  struct stats_tick {};

  explicit search_cache_table(search_cache_table_options opts = {}) : opts_{std::move(opts)} {
    if (opts_.capacity == 0) throw std::invalid_argument("search_cache_table: capacity must be positive");
  }

  void init() {
    if (!opts_.keeper.empty()) {
      auto keeper = otpp::whereis<search_cache_keeper>(opts_.keeper);
      if (!keeper) throw std::runtime_error("search_cache_table: no search_cache_keeper named '" + opts_.keeper + "'");
      table_ = otpp::call(keeper, search_cache_keeper::claim{self().pid()});
      // A restart after a crash: the results are still there; the ring is rebuilt from them.
      ring_ = table_.foldl(std::vector<std::string>{}, [](std::vector<std::string> acc, const std::string& k, const search_cache_entry&) {
        acc.push_back(k);
        return acc;
      });
    } else {
      table_ = search_cache_results::create({.read_concurrency = true, .write_concurrency = true});
    }
    if (opts_.stats_every.count() > 0) stats_timer_ = otpp::send_interval(self(), stats_tick{}, opts_.stats_every);
  }

  void handle_cast(cache c) {
    if (!table_.member(c.query)) {
      if (ring_.size() < opts_.capacity) {
        ring_.push_back(c.query);
      } else {
        evict_at_hand();
        ring_[hand_] = c.query;  // the new key takes the evicted one's place
        advance();
      }
    }
    table_.insert(std::move(c.query), search_cache_entry{std::move(c.result)});
    otpp::telemetry::execute(search_cache_events::cache, {{"size", table_.size()}});
  }

  search_cache_reader handle_call(get_reader) const { return {table_, counters_}; }

  // Only ever added to: never negative.
  std::uint64_t count(std::size_t which) const { return static_cast<std::uint64_t>(counters_.get(which)); }

  search_cache::stats handle_call(get_stats) const {
    return {table_.size(), opts_.capacity, count(search_cache_reader::hits), count(search_cache_reader::misses), evictions_};
  }

  void handle_info(stats_tick) {
    otpp::telemetry::execute(search_cache_events::stats, {{"size", table_.size()},
                                                          {"hits", count(search_cache_reader::hits)},
                                                          {"misses", count(search_cache_reader::misses)},
                                                          {"evictions", evictions_}});
  }
  /// The keeper's give_away arrives as a message too: the table is already ours.
  void handle_info(otpp::table_transfer<search_cache_results>) {}

 private:
  // Sweeps from the hand: a referenced entry loses its flag and is passed
  // over; the first one without it is erased, and the hand stays on its slot.
  void evict_at_hand() {
    for (;;) {
      bool referenced = false;
      (void)table_.lookup(ring_[hand_], [&](const search_cache_entry& e) {
        referenced = e.referenced.exchange(false, std::memory_order_relaxed);
      });
      if (!referenced) {
        (void)table_.erase(ring_[hand_]);
        ++evictions_;
        return;
      }
      advance();
    }
  }
  void advance() noexcept { hand_ = (hand_ + 1) % ring_.size(); }

  search_cache_table_options opts_;
  search_cache_results table_;
  // Counted per thread (write_concurrency): readers on different cores share no cache line.
  otpp::counters counters_{2, {.write_concurrency = true}};
  std::vector<std::string> ring_;  // every key in the table, in CLOCK order
  std::size_t hand_ = 0;
  std::uint64_t evictions_ = 0;
  otpp::timer_ref stats_timer_;
};

}  // namespace examples
