#pragma once
// Per-thread pools of small fixed-size blocks for message nodes, reply slots
// and process objects.
//
// Contract: pool_allocate(n) / pool_deallocate(p, n) with the same n. A block
// may be freed on any thread. Each thread keeps a free list per size class
// (16-byte steps up to 512 bytes); lists exchange whole batches with a central
// pool under a mutex, so a thread that only produces (a sender) and a thread
// that only consumes (the receiving worker) trade memory one lock per batch,
// and the steady state touches no global allocator. This is the tcmalloc
// thread-cache / central-list split, kept deliberately simple.
//
// Under AddressSanitizer every request goes to operator new, so ASan sees each
// node's lifetime exactly (use-after-free in message handling stays visible);
// so it does in test programs that make allocations fail (pool_through_new).
//
// A batch that a thread's frees made travels with an array of its blocks
// beside the list (when the array could be had), and the thread that takes
// it hands blocks out from the array, prefetching a few ahead. Walking the
// list instead, each allocation read the link of a block that the freeing
// thread had just written: a load from the other core's cache, one at a
// time, on which the next allocation depended. A sender flooding a server
// then ran at the rate of those loads whenever the server kept up with it
// (otpp_bench, 5 alternated pairs: cast_1sender 29-66 -> 51-70 M/s,
// cast_2senders 14-38 -> 30-48 M/s).
//
// Slabs are 16 KiB spaces cut from 2 MiB regions mapped with huge pages
// advised (huge_pages.hpp): a burst of a million messages or timers then
// takes a few hundred page faults instead of tens of thousands.
//
// After a spike (a mailbox backlog that drained) the central lists can hold
// gigabytes of free blocks. release_free_slabs() gives back to the system
// every slab whose blocks are all free in the central lists (its pages are
// discarded, its space kept for the next slab; a region all of whose spaces
// are free is unmapped); workers call it as they go idle once more than
// `pool_release_threshold` bytes sit free there. Slabs some block of which
// is still in use, or cached by a thread, stay.
//
// Out of memory: pool_allocate throws std::bad_alloc like operator new.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <vector>

#include "config.hpp"
#include "huge_pages.hpp"
#include "platform.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace otpp::detail {

// Every block straight from operator new: under AddressSanitizer, so that
// it sees each node's lifetime exactly, and in a test program built with
// OTPP_POOL_THROUGH_NEW=1 (the whole program, header-only), whose replaced
// operator new makes the runtime's allocations fail on demand.
#if defined(OTPP_POOL_THROUGH_NEW) && OTPP_POOL_THROUGH_NEW
inline constexpr bool pool_through_new = true;
#else
inline constexpr bool pool_through_new = address_sanitizer;
#endif

inline constexpr std::size_t pool_granule = 16;
inline constexpr std::size_t pool_max_size = 768;  // a process's cold part (process_cold) fits
inline constexpr std::size_t pool_classes = pool_max_size / pool_granule;
inline constexpr std::size_t pool_release_threshold = std::size_t{64} << 20;
inline constexpr std::size_t pool_slab_bytes = 16384;
inline constexpr std::size_t pool_slabs_per_region = huge_page_bytes / pool_slab_bytes;
inline constexpr std::uint32_t pool_prefetch_ahead = 6;

struct free_block {
  free_block* next;
};

constexpr std::size_t pool_class_of(std::size_t n) noexcept { return (n - 1) / pool_granule; }
constexpr std::size_t pool_class_size(std::size_t c) noexcept { return (c + 1) * pool_granule; }
constexpr std::uint32_t pool_slab_blocks(std::size_t c) noexcept {
  return static_cast<std::uint32_t>(pool_slab_bytes / pool_class_size(c));
}
constexpr std::uint32_t pool_batch(std::size_t c) noexcept {
  std::size_t by_bytes = 16384 / pool_class_size(c);
  return static_cast<std::uint32_t>(by_bytes < 16 ? 16 : (by_bytes > 128 ? 128 : by_bytes));
}

class central_pool {
 public:
  /// A list of `count` free blocks, and perhaps the same blocks in list
  /// order in `blocks` (new[]'d; whoever takes the batch owns it).
  struct batch {
    free_block* head;
    std::uint32_t count;
    free_block** blocks = nullptr;
  };

  // Never destroyed: blocks may be freed by static destructors and by threads
  // that outlive main's statics; a leaked singleton stays reachable (no LSan
  // report) and valid until the process image goes away.
  static central_pool& instance() {
    static central_pool* p = new central_pool;
    return *p;
  }

  batch take(std::size_t c);

  /// False if there was no memory to list it (the caller keeps it).
  [[nodiscard]] bool give(std::size_t c, batch b) noexcept;

  /// Bytes in free blocks held here (not counting the threads' caches).
  [[nodiscard]] std::size_t free_bytes() const noexcept { return free_bytes_.load(std::memory_order_relaxed); }
  /// Bytes in slabs obtained from the system and not given back.
  [[nodiscard]] std::size_t slab_bytes() const noexcept { return slab_bytes_.load(std::memory_order_relaxed); }

  /// Gives back every slab whose blocks are all free here. O(free blocks
  /// × log slabs), under the lock: meant for idle moments. Returns the bytes
  /// given back; 0 at once if another thread is already at it.
  std::size_t release_free_slabs() noexcept;

  void give_one(std::size_t c, free_block* blk) noexcept;

 private:
  struct slab {
    char* mem;
    std::uint32_t cls;
    std::uint32_t free = 0;  // counted during a release pass
    friend bool operator<(const slab& a, const slab& b) noexcept { return a.mem < b.mem; }
  };

  std::size_t release_locked();

  // A new slab of class c: its first batch is returned, the rest join the list.
  batch carve(std::size_t c);

  // Unmaps every region all of whose spaces are free.
  void unmap_free_regions();

  std::mutex mutex_;
  std::vector<batch> lists_[pool_classes];
  std::vector<slab> slabs_;  // keeps every slab reachable
  std::vector<char*> free_spaces_;  // slab-sized spaces of the regions, untouched or discarded
  std::atomic<std::size_t> free_bytes_{0};  // written under mutex_
  std::atomic<std::size_t> slab_bytes_{0};
};

// Trivially destructible, so it stays usable while thread_local destructors
// and static destructors run; `retired` routes late frees to the central pool.
struct thread_cache {
  free_block* head[pool_classes];  // this thread's frees (a list)
  std::uint32_t count[pool_classes];
  free_block** taken[pool_classes];  // a batch's array taken from the central pool, handed out from the end
  std::uint32_t taken_left[pool_classes];
  bool retired;
  bool guarded;
};
inline thread_local thread_cache tls_cache_storage{};
/// This thread's cache, its address computed afresh (see detail::tls()):
/// a handler may resume on another thread after a blocking call.
[[gnu::noinline]] inline thread_cache& tls_cache() noexcept {
  thread_cache* p = &tls_cache_storage;
  asm volatile("" : "+r"(p));
  return *p;
}

// The slow halves of pool_allocate/pool_free, kept out of line so the fast
// halves stay small enough to inline.
void* pool_refill(std::size_t c);
void pool_give_back_taken(thread_cache& tc, std::size_t c) noexcept;
// False if the central pool could not take a batch (no memory).
bool pool_flush(std::size_t c) noexcept;
// A free while this thread's locals are being torn down: straight to the
// central pool.
void pool_free_retired(std::size_t c, free_block* b) noexcept;

[[nodiscard]] inline void* pool_allocate(std::size_t n) {
  if constexpr (pool_through_new) {
    return ::operator new(n);
  } else {
    if (n > pool_max_size) return ::operator new(n);
    const std::size_t c = pool_class_of(n);
    auto& tc = tls_cache();
    if (free_block* b = tc.head[c]) [[likely]] {
      free_block* next = b->next;
      tc.head[c] = next;
      --tc.count[c];
      // The next block is written soon: fetch it for writing now, so that the
      // next node's stores do not stall a later locked instruction.
      if (next != nullptr) {
        __builtin_prefetch(next, 1);
        if (n > cache_line) __builtin_prefetch(reinterpret_cast<char*>(next) + cache_line, 1);
      }
      return b;
    }
    if (std::uint32_t k = tc.taken_left[c]) {
      free_block** blocks = tc.taken[c];
      tc.taken_left[c] = --k;
      // Some blocks ahead, fetched for writing: the freeing thread's cache
      // holds them, and one block ahead hid too little of that.
      if (k >= pool_prefetch_ahead) __builtin_prefetch(blocks[k - pool_prefetch_ahead], 1);
      return blocks[k];
    }
    return pool_refill(c);
  }
}

inline void pool_deallocate(void* p, std::size_t n) noexcept {
  if constexpr (pool_through_new) {
    ::operator delete(p);
  } else {
    if (n > pool_max_size) {
      ::operator delete(p);
      return;
    }
    const std::size_t c = pool_class_of(n);
    auto& tc = tls_cache();
    auto* b = static_cast<free_block*>(p);
    if (tc.retired) [[unlikely]] {
      pool_free_retired(c, b);
      return;
    }
    b->next = tc.head[c];
    tc.head[c] = b;
    if (++tc.count[c] >= 2 * pool_batch(c)) [[unlikely]] pool_flush(c);
  }
}

/// An idle worker's chore: after a spike, give fully free slabs back.
inline void pool_release_if_idle_and_large() noexcept {
  if constexpr (!pool_through_new) {
    auto& central = central_pool::instance();
    if (central.free_bytes() <= pool_release_threshold) return;
    // A pass walks every free block: at most one a second, so that memory
    // that stays fragmented (slabs partly in use) costs no idle CPU.
    static std::atomic<std::int64_t> last_pass{0};
    const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch()).count();
    std::int64_t last = last_pass.load(std::memory_order_relaxed);
    if (now - last < 1000 || !last_pass.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
    if (central.release_free_slabs() > 0) {
#if defined(__GLIBC__)
      ::malloc_trim(0);  // blocks over pool_max_size came from malloc: take its free memory back too
#endif
    }
  }
}

/// Gives this thread's cached blocks back to the central pool, keeping at
/// most one batch per size class (a hibernating process's share).
inline void pool_trim() noexcept {
  if constexpr (!pool_through_new) {
    auto& tc = tls_cache();
    if (tc.retired) return;
    for (std::size_t c = 0; c < pool_classes; ++c) {
      if (tc.taken[c] != nullptr) pool_give_back_taken(tc, c);
      while (tc.count[c] > pool_batch(c) && pool_flush(c)) {
      }
    }
  }
}

}  // namespace otpp::detail

#if OTPP_HEADER_ONLY
#include "node_pool-inl.hpp"
#endif
