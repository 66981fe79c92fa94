#pragma once
// A reader-writer lock for short critical sections (a table shard's lookup
// or insert): readers share it without waiting for each other, a writer
// waits for the readers in it to leave and keeps new ones out.
//
// Two ways to count readers. Plain: on the lock's own cache line (cheapest
// when one thread uses the shard). Grouped (ETS's read_concurrency): on one
// of a few cache lines picked per thread, so readers on different cores
// write different lines and never pull a line from each other; a writer
// then checks every group.
//
// Each place a reader counts itself has a slot beside its count. A reader
// that finds the slot free claims it (one compare-and-swap) and leaves with
// a plain store: no other reader can touch a slot held, so clearing it
// needs no locked instruction, wherever the holder runs by then. A reader
// that finds the slot held (a second reader on the line, or a nested one)
// counts itself with an RMW each way instead. One locked instruction a read
// where there were two: search_cache's keys, one thread, best of 8 runs
// alternated, 16.0 -> 12.1 ns a lookup that copies nothing and 17.9 ->
// 15.5 ns one that copies the result into a reused string.
//
// The writer's flag is a word of its own, not a bit of the readers' count,
// so that a writer leaves with a plain store: clearing a shared bit took a
// second locked instruction per write (update_counter on one key, one
// thread, the two builds alternated: 12.5-12.8 ns -> 6.5-6.7 ns).
// Readers and writers each announce themselves and then look at the other
// side (seq_cst both ways), so one of the two always sees the other.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "platform.hpp"

namespace otpp::detail {

class rw_spinlock {
 public:
  static constexpr unsigned reader_groups = 8;

  rw_spinlock() noexcept = default;
  rw_spinlock(const rw_spinlock&) = delete;
  rw_spinlock& operator=(const rw_spinlock&) = delete;

  /// Before first use: readers count themselves in groups. Throws std::bad_alloc.
  void use_reader_groups() { groups_.reset(new group[reader_groups]); }

  /// Returns what unlock_shared needs (where the reader counted itself,
  /// which must not be looked up again: the holder may have moved to
  /// another thread meanwhile).
  [[nodiscard]] unsigned lock_shared() noexcept {
    if (!groups_) return enter(readers_, 0);
    const unsigned g = my_group();
    return enter(groups_[g].readers, (g + 1) << 1);
  }
  void unlock_shared(unsigned token) noexcept {
    const unsigned where = token >> 1;
    readers_t& r = where == 0 ? readers_ : groups_[where - 1].readers;
    if (token & 1) {
      r.slot.store(0, std::memory_order_release);
    } else {
      r.count.fetch_sub(1, std::memory_order_release);
    }
  }

  // Claims the flag first (new readers back off), then waits for the
  // readers already in to leave. The common case inline: free, no reader
  // in, readers not grouped; the rest out of line. As a call, with the
  // loops' registers saved and restored, it was a quarter of an insert's
  // instructions (callgrind, 1M ordered_set inserts: 39 of 160).
  [[gnu::always_inline]] void lock() noexcept {
    if (claim_writer()) [[likely]] {
      if (!groups_ && nobody_in(readers_)) [[likely]]
        return;
      wait_for_readers();
      return;
    }
    lock_slowly();
  }
  void unlock() noexcept { writer_.store(0, std::memory_order_release); }
  /// Takes the lock only if nobody holds it, in either mode; never waits
  /// (for a reader that must not wait for a read it may itself be in).
  [[nodiscard]] bool try_lock() noexcept {
    if (!claim_writer()) return false;
    bool free = nobody_in(readers_);
    if (groups_) {
      for (unsigned g = 0; free && g < reader_groups; ++g) free = nobody_in(groups_[g].readers);
    }
    if (!free) unlock();
    return free;
  }

 private:
  // Readers in at one place: the slot's holder (0 or 1) and the others.
  struct readers_t {
    std::atomic<std::uint32_t> slot{0};
    std::atomic<std::uint32_t> count{0};
  };
  struct alignas(cache_line) group {
    readers_t readers;
  };

  // A writer that had to wait starts its next wait where this one ended
  // (less one step each time it got in at its first try). Two threads
  // updating one key take turns at the lock: the loser, starting from the
  // shortest pause each time, read the lock word every 25-50 ns in the
  // winner's first stretch, and each read made the winner's next claim
  // fetch the line back from the other core. Starting where it left off,
  // it lets the winner run longer batches (otpp_bench
  // ets_update_counter_2procs_same_key, 5 alternated runs on a noisy host:
  // median 95 -> 163 M/s). Per thread, not per lock: a level kept beside
  // the lock word is one more write to that line per contended claim, and
  // came out less steady (57-174 M/s in 4 runs, against 162-176).
  [[gnu::noinline]] void lock_slowly() noexcept {
    thread_local unsigned level = 0;
    unsigned spins = level;
    for (;; ++spins) {
      backoff(spins);
      if (claim_writer()) break;
    }
    level = spins > level ? std::min(spins, max_level) : (level > 0 ? level - 1 : 0);
    wait_for_readers();
  }
  [[gnu::noinline]] void wait_for_readers() noexcept {
    wait_out(readers_);
    if (groups_) {
      for (unsigned g = 0; g < reader_groups; ++g) wait_out(groups_[g].readers);
    }
  }

  static unsigned my_group() noexcept {
    static std::atomic<unsigned> next{0};
    thread_local const unsigned mine = next.fetch_add(1, std::memory_order_relaxed) % reader_groups;
    return mine;
  }
  // `where` << 1 is the token's place; its low bit says "held the slot".
  // The common case inline: the slot free, no writer. The rest (a second
  // reader on the line, a writer in) out of line, so that the inline part
  // saves no registers: the loop around it cost a read a dozen pushes and
  // pops.
  unsigned enter(readers_t& r, unsigned where) noexcept {
    if (claim_slot(r)) {
      if (writer_.load(std::memory_order_seq_cst) == 0) [[likely]]
        return where | 1;
      r.slot.store(0, std::memory_order_relaxed);
    }
    return enter_slowly(r, where);
  }
  [[gnu::noinline]] unsigned enter_slowly(readers_t& r, unsigned where) noexcept {
    for (unsigned spins = 0;; ++spins) {
      while (writer_.load(std::memory_order_relaxed) != 0) backoff(spins++);
      if (claim_slot(r)) {
        if (writer_.load(std::memory_order_seq_cst) == 0) return where | 1;
        r.slot.store(0, std::memory_order_relaxed);
      } else {
        r.count.fetch_add(1, std::memory_order_seq_cst);
        if (writer_.load(std::memory_order_seq_cst) == 0) return where;
        r.count.fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }
  // seq_cst, as the writer's claim and its reads of the readers: either
  // the writer sees this reader, or the reader's next load sees its flag.
  static bool claim_slot(readers_t& r) noexcept {
    std::uint32_t free = 0;
    return r.slot.load(std::memory_order_relaxed) == 0 && r.slot.compare_exchange_strong(free, 1, std::memory_order_seq_cst);
  }
  // Tests first: a writer that finds the flag taken does not pull its
  // line from the holder.
  bool claim_writer() noexcept {
    return writer_.load(std::memory_order_relaxed) == 0 && writer_.exchange(1, std::memory_order_seq_cst) == 0;
  }
  static bool nobody_in(const readers_t& r) noexcept {
    return r.slot.load(std::memory_order_seq_cst) == 0 && r.count.load(std::memory_order_seq_cst) == 0;
  }
  void wait_out(const readers_t& r) noexcept {
    for (unsigned spins = 0; !nobody_in(r); ++spins) backoff(spins);
  }
  static void backoff(unsigned spins) noexcept {
    // Exponential: a waiter that comes back at once takes the lock word's
    // cache line from the holder on every try, and two threads on one key
    // then pay a line transfer per operation; waiting longer each time
    // lets the holder finish several in a row. A holder that was preempted
    // would keep a spinner busy for its whole time slice: after about 15 us
    // of pauses, give the core away.
    if (spins < max_spins) {
      for (unsigned n = 1u << std::min(spins, max_level); n > 0; --n) cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  static constexpr unsigned max_spins = 16;
  static constexpr unsigned max_level = 6;  // the longest pause: 2^6 pauses (~1.6 us here)

  std::atomic<std::uint32_t> writer_{0};   // 1 while a writer holds or claims the lock
  readers_t readers_;                      // plain readers in
  std::unique_ptr<group[]> groups_;
};

/// Holds a rw_spinlock shared for its scope.
class shared_spin_guard {
 public:
  explicit shared_spin_guard(rw_spinlock& l) noexcept : l_{l}, token_{l.lock_shared()} {}
  ~shared_spin_guard() { l_.unlock_shared(token_); }
  shared_spin_guard(const shared_spin_guard&) = delete;
  shared_spin_guard& operator=(const shared_spin_guard&) = delete;

 private:
  rw_spinlock& l_;
  unsigned token_;
};

/// Holds a rw_spinlock exclusively for its scope.
class unique_spin_guard {
 public:
  explicit unique_spin_guard(rw_spinlock& l) noexcept : l_{l} { l_.lock(); }
  ~unique_spin_guard() { l_.unlock(); }
  unique_spin_guard(const unique_spin_guard&) = delete;
  unique_spin_guard& operator=(const unique_spin_guard&) = delete;

 private:
  rw_spinlock& l_;
};

}  // namespace otpp::detail
