#pragma once
// Reads that take no locked instruction, for tables made with
// read_concurrency (ETS's promise for them: reads are cheap and a switch
// from reading to writing costs more).
//
// A shard's reader lock costs each read one locked compare-and-swap. Its
// own cost is a few cycles, but a locked instruction is a full fence: the
// cache miss of one lookup cannot overlap the next one's, and a lookup in a
// table larger than the cache is mostly that miss. While a table is
// *biased*, a reader instead announces itself with a plain store in a slot
// of its thread's own and checks the bias (the frequent side of an
// asymmetric fence), reads, and clears its slot. A writer first *revokes*
// the bias: clears it, makes every thread pass a full fence (the rare side:
// one membarrier system call), and waits until no slot names the table;
// then it takes its shard's lock as usual. Either the reader sees the bias
// cleared and takes the lock, or the writer sees the reader's slot and
// waits for it (Dekker's handshake). One writer revokes; the others wait
// until it is done, not merely until the bias is cleared: its readers may
// still be reading. The writer revokes before it takes its lock, not
// holding it: a read nested in a biased read may be waiting for that lock.
//
// Readers that find the table unbiased use the shard locks, and one of them
// now and then biases it again, once a while has passed since the last
// revocation (20 revocations' time, at least 1 ms: a table written
// steadily spends at most about a twentieth of its writer's time
// revoking). Re-biasing takes every shard's write lock, without waiting for
// any: a writer never writes while the table is biased.
//
// A thread's slot holds one table at a time: a read nested in another
// (a visitor that looks in a table) takes its shard's lock.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <new>
#include <thread>

#include "asymmetric_fence.hpp"
#include "platform.hpp"

namespace otpp::detail {

/// A thread's announcement of the biased table it is reading, if any. Slots
/// are never freed: a thread that ends leaves its slot to the next one.
struct alignas(cache_line) read_slot {
  std::atomic<const void*> reading{nullptr};
  std::atomic<bool> taken{false};
  read_slot* next = nullptr;  // set once, before the slot is published
};

/// Every thread's slot, for a writer to look through.
class read_slots {
 public:
  static read_slots& instance() noexcept {
    static read_slots all;
    return all;
  }
  [[nodiscard]] read_slot* first() const noexcept { return head_.load(std::memory_order_acquire); }

  /// The calling thread's slot (claimed on its first biased read); null if
  /// none could be had (out of memory: the thread's reads take the locks).
  static read_slot* mine() noexcept {
    thread_local read_slot* slot = nullptr;
    if (slot == nullptr) [[unlikely]]
      slot = claim();
    return slot;
  }

 private:
  // Gives the slot back when its thread ends.
  struct holder {
    read_slot* slot = nullptr;
    ~holder() {
      if (slot != nullptr) slot->taken.store(false, std::memory_order_release);
    }
  };
  [[gnu::noinline, gnu::cold]] static read_slot* claim() noexcept {
    thread_local holder h;
    read_slots& all = instance();
    for (read_slot* s = all.first(); s != nullptr; s = s->next) {
      bool free = false;
      if (!s->taken.load(std::memory_order_relaxed) && s->taken.compare_exchange_strong(free, true, std::memory_order_acquire)) {
        h.slot = s;
        return s;
      }
    }
    auto* s = new (std::nothrow) read_slot;  // never freed (see above)
    if (s == nullptr) return nullptr;
    s->taken.store(true, std::memory_order_relaxed);
    std::lock_guard g{all.push_};
    s->next = all.head_.load(std::memory_order_relaxed);
    all.head_.store(s, std::memory_order_release);
    h.slot = s;
    return s;
  }

  std::atomic<read_slot*> head_{nullptr};
  spin_lock push_;  // new slots are rare: one per thread that ever reads
};

/// One table's bias: whether its readers may skip the shard locks.
class read_bias {
 public:
  /// Starts unbiased: a table is filled first, and the first reads bias it.
  read_bias() noexcept = default;
  read_bias(const read_bias&) = delete;
  read_bias& operator=(const read_bias&) = delete;

  /// Announces a read of this table without a lock: the thread's slot if
  /// it may go on (then end_read with it), null if it must take the
  /// shard's lock (then unbiased_read first).
  [[nodiscard]] read_slot* try_read() noexcept {
    if (state_.load(std::memory_order_relaxed) != biased_state) return nullptr;
    read_slot* mine = read_slots::mine();
    if (mine == nullptr) [[unlikely]]
      return nullptr;
    read_slot& me = *mine;
    if (me.reading.load(std::memory_order_relaxed) != nullptr) return nullptr;  // nested in another read
    me.reading.store(this, std::memory_order_relaxed);
    // The frequent side of the asymmetric fence: only a compiler barrier,
    // as a table is biased only where the rare side is the system call.
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (state_.load(std::memory_order_acquire) == biased_state) [[likely]]
      return &me;
    me.reading.store(nullptr, std::memory_order_relaxed);
    return nullptr;
  }
  static void end_read(read_slot* me) noexcept { me->reading.store(nullptr, std::memory_order_release); }

  /// Counts a read that took a lock; every so often checks whether the
  /// table may be biased again, and asks `rebias` to do it (it takes every
  /// shard's write lock if all are free and calls set_biased). Call holding
  /// no lock of this table.
  template <class Rebias>
  void unbiased_read(Rebias&& rebias) {
    thread_local unsigned reads = 0;
    if ((++reads & 255) != 0) [[likely]]
      return;
    // Not unbiased: this read was nested in another, or a writer revokes.
    if (state_.load(std::memory_order_relaxed) != unbiased_state || now_ns() < inhibit_until_.load(std::memory_order_relaxed)) return;
    rebias();
  }
  /// Called with every shard's write lock held. Where membarrier is not to
  /// be had, a biased read would need a full fence, no cheaper than the
  /// lock: the table stays unbiased.
  void set_biased() noexcept {
    // Only from unbiased: a writer may have begun revoking another bias
    // set meanwhile, and must not see it set again under it.
    std::uint32_t was = unbiased_state;
    if (membarrier_ready()) (void)state_.compare_exchange_strong(was, biased_state, std::memory_order_release, std::memory_order_relaxed);
  }

  /// Before a writer takes a shard's lock; returns once no read without a
  /// lock is in progress or can start. After taking the lock, the writer
  /// checks biased() again (the table may have been biased meanwhile) and,
  /// if so, lets go and comes back here.
  void revoke() noexcept {
    for (unsigned spins = 0;; ++spins) {
      std::uint32_t s = state_.load(std::memory_order_acquire);
      if (s == unbiased_state) [[likely]]
        return;
      if (s == biased_state && state_.compare_exchange_strong(s, revoking_state, std::memory_order_seq_cst)) break;
      wait(spins);  // another writer revokes: not done until its readers are out
    }
    const std::int64_t t0 = now_ns();
    // Not to be biased again before this revocation is done and timed.
    inhibit_until_.store(t0 + min_inhibit_ns, std::memory_order_relaxed);
    heavy_fence();
    for (read_slot* r = read_slots::instance().first(); r != nullptr; r = r->next) {
      for (unsigned spins = 0; r->reading.load(std::memory_order_acquire) == this; ++spins) wait(spins);
    }
    const std::int64_t took = now_ns() - t0;
    inhibit_until_.store(now_ns() + std::max<std::int64_t>(20 * took, min_inhibit_ns), std::memory_order_relaxed);
    state_.store(unbiased_state, std::memory_order_release);
  }
  /// Whether reads without a lock may be in progress (for a writer that
  /// holds a shard's lock: then it must let go and revoke).
  [[nodiscard]] bool biased() const noexcept { return state_.load(std::memory_order_acquire) != unbiased_state; }

 private:
  static constexpr std::int64_t min_inhibit_ns = 1'000'000;
  static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  static void wait(unsigned spins) noexcept {
    if (spins < 64) {
      cpu_relax();
    } else {
      std::this_thread::yield();  // a reader preempted in its read
    }
  }

  // unbiased: every reader takes the locks. biased: lookups may skip them.
  // revoking: a writer waits for the reads in progress without a lock.
  enum : std::uint32_t { unbiased_state = 0, biased_state = 1, revoking_state = 2 };
  std::atomic<std::uint32_t> state_{unbiased_state};
  std::atomic<std::int64_t> inhibit_until_{0};
};

}  // namespace otpp::detail
