#pragma once
// The storage behind otpp::table: the objects, sharded by key hash (set,
// bag, duplicate_bag) or kept in key order (ordered_set), each shard under
// its own reader-writer lock; with read_concurrency, lookups skip the locks
// while nobody writes (read_bias.hpp). Knows nothing of owners and access
// rights.

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "btree_map.hpp"
#include "flat_hash_map.hpp"
#include "key_hash.hpp"
#include "platform.hpp"
#include "read_bias.hpp"
#include "rw_spinlock.hpp"

namespace otpp::detail {

/// The layout of a table type: several objects per key (`Multi`), kept
/// distinct (`Distinct`, a bag), in key order (`Ordered`).
template <class K, class V, bool Multi, bool Distinct, bool Ordered>
class table_store {
 public:
  static constexpr bool multi = Multi;
  static constexpr bool ordered = Ordered;
  /// What a key holds: the object, or a bag's objects in insertion order.
  using bucket = std::conditional_t<multi, std::vector<V>, V>;
  // Hash tables: open addressing, one cache miss per lookup (a node map
  // costs two or three). ordered_set: a B+ tree, four or five nodes per
  // lookup in a million keys where a red-black tree chases twenty. Both
  // measured in benchmarks/otpp_bench (ets_*).
  using map_type = std::conditional_t<ordered, btree_map<K, bucket>, flat_hash_map<K, bucket, key_hash<K>, key_equal<K>>>;

  struct alignas(cache_line) shard {
    rw_spinlock lock;
    map_type map;
    std::size_t objects = 0;  // under the lock; summed for size() (decentralized counters)
  };

  /// `reader_groups` (read_concurrency): readers count themselves per
  /// thread group (see rw_spinlock), and lookups skip the locks while the
  /// table is biased (read_bias), for tables read from many threads at once.
  /// `decentralized`: each shard counts its own objects (writers to
  /// different shards share no counter; size() sums the shards), else one
  /// counter for the table (size() reads it at once). An ordered store has
  /// one shard, whose count is already the table's: it never bumps a
  /// second counter (a locked add per insert and erase, 4-5 ns of a
  /// 1M-key fill's ~18 ns an insert).
  table_store(std::size_t shards, bool reader_groups, bool decentralized)
      : n_{ordered ? 1 : std::bit_ceil(std::max<std::size_t>(1, shards))},
        decentralized_{decentralized || ordered},
        biasable_{reader_groups},
        shards_{new shard[n_]} {
    if (reader_groups)
      for (std::size_t i = 0; i < n_; ++i) shards_[i].lock.use_reader_groups();
  }

  [[nodiscard]] std::size_t shard_count() const noexcept { return n_; }
  shard& shard_at(std::size_t i) noexcept { return shards_[i]; }
  std::size_t index_of(const K& k) const noexcept {
    if constexpr (ordered) {
      return 0;
    } else {
      return index_of_hash(key_hash<K>{}(k));
    }
  }
  shard& shard_of(const K& k) noexcept { return shards_[index_of(k)]; }

  /// Where k lives: its shard, and its key's hash for the shard's map
  /// (a string key is hashed once per operation, not twice). An ordered
  /// shard needs no hash: 0.
  struct place {
    shard& at;
    std::size_t hash;
  };
  place place_of(const K& k) noexcept {
    if constexpr (ordered) {
      return {shards_[0], 0};
    } else {
      const std::size_t h = key_hash<K>{}(k);
      return {shards_[index_of_hash(h)], h};
    }
  }

  /// Objects in the table: exact when nobody writes, else within the writes
  /// in flight.
  [[nodiscard]] std::size_t size() noexcept {
    if (!decentralized_) return static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, total_.load(std::memory_order_relaxed)));
    std::size_t n = 0;
    for (std::size_t i = 0; i < n_; ++i) {
      shared_spin_guard g{shards_[i].lock};
      n += shards_[i].objects;
    }
    return n;
  }

  /// Counts objects added to (or, negative, removed from) shard `s`, which
  /// the caller holds exclusively.
  void counted(shard& s, std::ptrdiff_t delta) noexcept {
    if (decentralized_) {
      s.objects += static_cast<std::size_t>(delta);  // wraps back for a negative delta
    } else {
      total_.fetch_add(delta, std::memory_order_relaxed);
    }
  }

  /// Adds `v` under `k` in a shard the caller holds exclusively: a set
  /// replaces, a bag skips an equal object, a duplicate_bag appends.
  /// Returns whether the table grew.
  template <class KK, class VV>
  bool put_locked(place p, KK&& k, VV&& v) {
    shard& s = p.at;
    if constexpr (!multi) {
      auto [it, fresh] = s.map.try_emplace_hashed(p.hash, std::forward<KK>(k), std::forward<VV>(v));
      if (!fresh) it->second = std::forward<VV>(v);
      if (fresh) counted(s, 1);
      return fresh;
    } else {
      auto it = s.map.find(k, p.hash);
      const bool new_key = it == s.map.end();
      if (new_key) it = s.map.try_emplace_hashed(p.hash, std::forward<KK>(k)).first;
      if constexpr (Distinct) {
        if (std::find(it->second.begin(), it->second.end(), v) != it->second.end()) return false;
      }
      try {
        it->second.push_back(std::forward<VV>(v));
      } catch (...) {
        if (new_key) s.map.erase(it);  // no key without objects
        throw;
      }
      counted(s, 1);
      return true;
    }
  }

  /// put_locked for every object of a batch, in shards the caller holds
  /// exclusively: all of them or, if one throws (bad_alloc where a shard
  /// or a bag grows, a throwing constructor), none: what the batch did is
  /// undone before the exception goes on. For that each key is copied, in
  /// an array allocated before anything changes. (A value whose move
  /// assignment throws may be left as that throw leaves it.)
  template <class Objects>
  void put_all_locked(Objects& objects) {
    struct undo {
      shard* at;
      std::size_t hash;
      K key;
      std::optional<V> replaced;  // a set's object this one replaced, moved out
      bool applied = false;       // put_locked added an object (a set: under a new key)
    };
    std::vector<undo> done;
    done.reserve(objects.size());
    try {
      for (auto& [k, v] : objects) {
        place p = place_of(k);
        undo& u = done.emplace_back(undo{&p.at, p.hash, k, std::nullopt});
        if constexpr (!multi) {
          auto it = find_in(p, k);
          if (it != p.at.map.end()) u.replaced.emplace(std::move_if_noexcept(it->second));
        }
        u.applied = put_locked(p, std::move(k), std::move(v));
      }
    } catch (...) {
      for (auto u = done.rbegin(); u != done.rend(); ++u) undo_put(*u);
      throw;
    }
  }

  /// The object under k in p's shard, or the map's end.
  auto find_in(place p, const K& k) noexcept {
    if constexpr (ordered) {
      return p.at.map.find(k);
    } else {
      return p.at.map.find(k, p.hash);
    }
  }

  /// Holds shard `s` for reading: its lock, or, while the table is biased,
  /// only the thread's announcement (lookups; traversals take the locks).
  class read_guard {
   public:
    read_guard(table_store& t, shard& s) noexcept {
      if (t.biasable_) {
        slot_ = t.bias_.try_read();
        if (slot_ != nullptr) return;
        t.bias_.unbiased_read([&t] { t.rebias(); });
      }
      lock_ = &s.lock;
      token_ = s.lock.lock_shared();
    }
    ~read_guard() {
      if (slot_ != nullptr) {
        read_bias::end_read(slot_);
      } else {
        lock_->unlock_shared(token_);
      }
    }
    read_guard(const read_guard&) = delete;
    read_guard& operator=(const read_guard&) = delete;

   private:
    read_slot* slot_ = nullptr;
    rw_spinlock* lock_ = nullptr;
    unsigned token_ = 0;
  };

  /// Holds shard `s` exclusively for its scope (the table unbiased first).
  class write_guard {
   public:
    write_guard(table_store& t, shard& s) noexcept : lock_{s.lock} {
      t.lock_unbiased([&] { s.lock.lock(); }, [&] { s.lock.unlock(); });
    }
    ~write_guard() { lock_.unlock(); }
    write_guard(const write_guard&) = delete;
    write_guard& operator=(const write_guard&) = delete;

   private:
    rw_spinlock& lock_;
  };

  /// Locks the shards of `keys` exclusively, in index order (no deadlock
  /// between two batches), and unlocks them when it goes.
  class batch_lock {
   public:
    template <class KeyRange>
    batch_lock(table_store& t, const KeyRange& keys) : t_{t} {
      for (const auto& k : keys) held_.push_back(t.index_of(k));
      std::sort(held_.begin(), held_.end());
      held_.erase(std::unique(held_.begin(), held_.end()), held_.end());
      t_.lock_unbiased([&] { for (std::size_t i : held_) t_.shards_[i].lock.lock(); },
                       [&] { for (std::size_t i : held_) t_.shards_[i].lock.unlock(); });
    }
    ~batch_lock() {
      for (std::size_t i : held_) t_.shards_[i].lock.unlock();
    }
    batch_lock(const batch_lock&) = delete;
    batch_lock& operator=(const batch_lock&) = delete;

   private:
    table_store& t_;
    std::vector<std::size_t> held_;
  };

  /// Removes every object; returns how many there were.
  std::size_t clear() noexcept {
    std::size_t n = 0;
    for (std::size_t i = 0; i < n_; ++i) {
      map_type gone;
      {
        write_guard g{*this, shards_[i]};
        gone.swap(shards_[i].map);
        std::size_t held = 0;
        if constexpr (multi) {
          for (auto& [k, b] : gone) held += b.size();
        } else {
          held = gone.size();
        }
        shards_[i].objects = 0;
        if (!decentralized_) total_.fetch_sub(static_cast<std::ptrdiff_t>(held), std::memory_order_relaxed);
        n += held;
      }
      // Destroyed outside the lock: readers of this shard go on meanwhile.
    }
    return n;
  }

 private:
  // Takes a writer's locks (lock(), undone by unlock()) with the table
  // unbiased. The bias is revoked before the locks are taken, not while
  // holding them: a reader nested in a biased read (a visitor looking up
  // another key) may be waiting for one, and the revocation waits for that
  // read.
  template <class Lock, class Unlock>
  void lock_unbiased(Lock&& lock, Unlock&& unlock) noexcept {
    if (!biasable_) {
      lock();
      return;
    }
    for (;;) {
      bias_.revoke();
      lock();
      if (!bias_.biased()) return;
      unlock();  // biased again between the two: revoke again
    }
  }
  // Biases the table if no shard is held: a writer then either holds a
  // shard (and this gives up) or will revoke before it writes.
  void rebias() noexcept {
    std::size_t i = 0;
    while (i < n_ && shards_[i].lock.try_lock()) ++i;
    if (i == n_) bias_.set_biased();
    while (i > 0) shards_[--i].lock.unlock();
  }

  // Takes back one object of a batch (put_all_locked): the object it
  // replaced goes back, or the object it added goes.
  template <class Undo>
  void undo_put(Undo& u) noexcept {
    auto it = find_in({*u.at, u.hash}, u.key);
    if constexpr (multi) {
      if (!u.applied) return;
      it->second.pop_back();  // the batch appended in order: its objects are last
      if (it->second.empty()) u.at->map.erase(it);
      counted(*u.at, -1);
    } else if (u.replaced) {
      try {
        it->second = std::move(*u.replaced);
      } catch (...) {  // NOLINT(bugprone-empty-catch): kept as the throw left it (documented)
      }
    } else if (u.applied) {
      u.at->map.erase(it);
      counted(*u.at, -1);
    }
  }

  std::size_t index_of_hash(std::size_t hash) const noexcept {
    // Mixed so that keys whose hashes differ only in high bits (or an
    // identity hash of small integers) still spread over the shards. A
    // well-mixed hash is used as it is, from bits the shard's map takes
    // neither its slot index (the low ones) nor its tag (the top seven) from.
    if constexpr (avalanching_hash<key_hash<K>>) return (hash >> 32) & (n_ - 1);
    std::uint64_t h = static_cast<std::uint64_t>(hash);
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return static_cast<std::size_t>(h) & (n_ - 1);  // n_ is a power of two: a mask, not a division
  }

  std::size_t n_;
  bool decentralized_;
  bool biasable_;
  std::unique_ptr<shard[]> shards_;
  alignas(cache_line) read_bias bias_;  // read by every lookup: a line of its own
  alignas(cache_line) std::atomic<std::ptrdiff_t> total_{0};
};

}  // namespace otpp::detail
