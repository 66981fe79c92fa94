#pragma once
// node_pool's out-of-line code: the central pool's slab carving and release.

#include <algorithm>
#include <new>
#include <utility>

#include "node_pool.hpp"

namespace otpp::detail {

// Flushes a thread's cache to the central pool when the thread ends; only
// the slow paths below name it, so only they register it.
struct thread_cache_guard {
  thread_cache_guard() noexcept = default;
  thread_cache_guard(const thread_cache_guard&) = delete;
  thread_cache_guard& operator=(const thread_cache_guard&) = delete;
  ~thread_cache_guard() {
    auto& tc = tls_cache();
    auto& central = central_pool::instance();
    for (std::size_t c = 0; c < pool_classes; ++c) {
      if (tc.taken[c] != nullptr) pool_give_back_taken(tc, c);
      // Refused (no memory for the central list's entry): the blocks stay
      // unused, and the thread ends all the same.
      if (tc.head[c]) (void)central.give(c, {tc.head[c], tc.count[c]});
      tc.head[c] = nullptr;
      tc.count[c] = 0;
    }
    tc.retired = true;
  }
};
inline thread_local thread_cache_guard tls_cache_guard;

[[gnu::noinline]] OTPP_FUNC void* pool_refill(std::size_t c) {
  auto& tc = tls_cache();
  if (tc.retired) {
    // rare: allocation while this thread's locals are being torn down
    auto& central = central_pool::instance();
    auto b = central.take(c);
    delete[] b.blocks;  // the list will do
    if (b.count > 1) (void)central.give(c, {b.head->next, b.count - 1});  // refused: unused from now on
    return b.head;
  }
  if (!tc.guarded) {
    tc.guarded = true;
    // odr-use registers the flushing destructor for this thread
    [[maybe_unused]] auto* volatile g = &tls_cache_guard;
  }
  auto b = central_pool::instance().take(c);
  if (b.blocks != nullptr) {
    // Handed out from the end; the first few fetched now.
    delete[] std::exchange(tc.taken[c], b.blocks);  // the last batch's, used up
    std::uint32_t k = b.count - 1;
    tc.taken_left[c] = k;
    for (std::uint32_t i = 1; i <= pool_prefetch_ahead && i <= k; ++i) __builtin_prefetch(b.blocks[k - i], 1);
    return b.blocks[k];
  }
  free_block* blk = b.head;
  tc.head[c] = blk->next;
  tc.count[c] = b.count - 1;
  return blk;
}

// The blocks of the taken array not handed out yet join this thread's own
// list (whence a trim or the thread's end passes them on): they are still
// linked in array order, up to the first one handed out.
OTPP_FUNC void pool_give_back_taken(thread_cache& tc, std::size_t c) noexcept {
  free_block** blocks = std::exchange(tc.taken[c], nullptr);
  const std::uint32_t k = std::exchange(tc.taken_left[c], 0);
  if (k != 0) {
    blocks[k - 1]->next = tc.head[c];
    tc.head[c] = blocks[0];
    tc.count[c] += k;
  }
  delete[] blocks;
}

[[gnu::noinline]] OTPP_FUNC void pool_free_retired(std::size_t c, free_block* b) noexcept {
  central_pool::instance().give_one(c, b);
}

[[gnu::noinline]] OTPP_FUNC bool pool_flush(std::size_t c) noexcept {
  auto& tc = tls_cache();
  const std::uint32_t n = pool_batch(c);
  free_block* head = tc.head[c];
  free_block* tail = head;
  // The array too, if memory allows (else the taker walks the list).
  free_block** blocks = new (std::nothrow) free_block*[n];
  if (blocks != nullptr) blocks[0] = head;
  for (std::uint32_t i = 1; i < n; ++i) {
    tail = tail->next;
    if (blocks != nullptr) blocks[i] = tail;
  }
  free_block* const rest = tail->next;
  tail->next = nullptr;
  if (!central_pool::instance().give(c, {head, n, blocks})) {
    // No memory for the central list's entry: keep them for now.
    tail->next = rest;
    delete[] blocks;
    return false;
  }
  tc.head[c] = rest;
  tc.count[c] -= n;
  return true;
}

OTPP_FUNC central_pool::batch central_pool::take(std::size_t c) {
  {
    std::lock_guard lock{mutex_};
    auto& l = lists_[c];
    if (!l.empty()) {
      batch b = l.back();
      l.pop_back();
      free_bytes_.store(free_bytes_.load(std::memory_order_relaxed) - b.count * pool_class_size(c),
                        std::memory_order_relaxed);
      return b;
    }
  }
  return carve(c);
}

OTPP_FUNC bool central_pool::give(std::size_t c, batch b) noexcept {
  std::lock_guard lock{mutex_};
  try {
    lists_[c].push_back(b);
  } catch (...) {
    return false;
  }
  free_bytes_.store(free_bytes_.load(std::memory_order_relaxed) + b.count * pool_class_size(c), std::memory_order_relaxed);
  return true;
}

OTPP_FUNC std::size_t central_pool::release_free_slabs() noexcept {
  std::unique_lock lock{mutex_, std::try_to_lock};
  if (!lock.owns_lock()) return 0;
  try {
    return release_locked();
  } catch (...) {
    return 0;  // no memory for the bookkeeping: try another time
  }
}

OTPP_FUNC void central_pool::give_one(std::size_t c, free_block* blk) noexcept {
  std::lock_guard lock{mutex_};
  auto& l = lists_[c];
  // (Not into a batch that has an array: the array would miss the block.)
  if (!l.empty() && l.back().blocks == nullptr && l.back().count < pool_batch(c)) {
    blk->next = l.back().head;
    l.back().head = blk;
    ++l.back().count;
  } else {
    blk->next = nullptr;
    try {
      l.push_back({blk, 1});
    } catch (...) {
      return;  // no memory for the entry: the block stays unused
    }
  }
  free_bytes_.store(free_bytes_.load(std::memory_order_relaxed) + pool_class_size(c), std::memory_order_relaxed);
}

OTPP_FUNC std::size_t central_pool::release_locked() {
  if (slabs_.empty()) return 0;
  std::sort(slabs_.begin(), slabs_.end());
  auto slab_of = [&](const void* p) -> slab* {
    auto it = std::upper_bound(slabs_.begin(), slabs_.end(), slab{static_cast<char*>(const_cast<void*>(p)), 0});
    return it == slabs_.begin() ? nullptr : &*(it - 1);
  };
  for (auto& s : slabs_) s.free = 0;
  for (std::size_t c = 0; c < pool_classes; ++c)
    for (const batch& b : lists_[c])
      for (free_block* f = b.head; f != nullptr; f = f->next)
        if (slab* s = slab_of(f)) ++s->free;
  auto all_free = [](const slab& s) { return s.free == pool_slab_blocks(s.cls); };
  if (std::none_of(slabs_.begin(), slabs_.end(), all_free)) return 0;
  // Everything that may throw comes before anything changes.
  free_spaces_.reserve(free_spaces_.size() + slabs_.size());
  std::vector<slab> stay;
  stay.reserve(slabs_.size());
  std::vector<std::vector<batch>> rebuilt(pool_classes);
  for (std::size_t c = 0; c < pool_classes; ++c) {
    std::size_t blocks = 0;
    for (const batch& b : lists_[c]) blocks += b.count;
    rebuilt[c].reserve(blocks / pool_batch(c) + 1);
  }
  // Rebuild each class's lists from the blocks of slabs that stay (as
  // lists: the batches' arrays go).
  for (std::size_t c = 0; c < pool_classes; ++c) {
    std::vector<batch>& kept = rebuilt[c];
    batch cur{nullptr, 0};
    for (const batch& b : lists_[c]) {
      delete[] b.blocks;
      for (free_block* f = b.head; f != nullptr;) {
        free_block* next = f->next;
        slab* s = slab_of(f);
        if (s == nullptr || !all_free(*s)) {
          f->next = cur.head;
          cur.head = f;
          if (++cur.count == pool_batch(c)) {
            kept.push_back(cur);
            cur = {nullptr, 0};
          }
        }
        f = next;
      }
    }
    if (cur.count != 0) kept.push_back(cur);
    lists_[c] = std::move(kept);
  }
  std::size_t released = 0, block_bytes = 0;
  for (auto& s : slabs_) {
    if (all_free(s)) {
      (void)discard_pages(s.mem, pool_slab_bytes);
      free_spaces_.push_back(s.mem);
      released += pool_slab_bytes;
      block_bytes += std::size_t{pool_slab_blocks(s.cls)} * pool_class_size(s.cls);
    } else {
      stay.push_back(s);
    }
  }
  slabs_ = std::move(stay);
  unmap_free_regions();
  free_bytes_.store(free_bytes_.load(std::memory_order_relaxed) - block_bytes, std::memory_order_relaxed);
  slab_bytes_.store(slab_bytes_.load(std::memory_order_relaxed) - released, std::memory_order_relaxed);
  return released;
}

OTPP_FUNC void central_pool::unmap_free_regions() {
  std::sort(free_spaces_.begin(), free_spaces_.end());
  auto region_of = [](const char* p) {
    return reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{huge_page_bytes} - 1));
  };
  // Sorted, a region's free spaces are adjacent: all of them free is a run
  // of pool_slabs_per_region.
  std::size_t out = 0;
  for (std::size_t i = 0; i < free_spaces_.size();) {
    char* region = region_of(free_spaces_[i]);
    std::size_t j = i;
    while (j < free_spaces_.size() && region_of(free_spaces_[j]) == region) ++j;
    if (j - i == pool_slabs_per_region) {
      unmap_huge_region(region, huge_page_bytes);
    } else {
      for (; i < j; ++i) free_spaces_[out++] = free_spaces_[i];
    }
    i = j;
  }
  free_spaces_.resize(out);
}

OTPP_FUNC central_pool::batch central_pool::carve(std::size_t c) {
  const std::size_t size = pool_class_size(c);
  const std::uint32_t n = pool_slab_blocks(c);
  const std::uint32_t per_batch = pool_batch(c);
  const std::uint32_t batches = (n + per_batch - 1) / per_batch;
  std::vector<batch> rest;
  rest.reserve(batches - 1);  // a throw here changes nothing
  char* mem = nullptr;
  {
    std::lock_guard lock{mutex_};
    slabs_.reserve(slabs_.size() + 1);
    if (free_spaces_.empty()) {
      free_spaces_.reserve(pool_slabs_per_region);
      char* region = static_cast<char*>(map_huge_region(huge_page_bytes));
      // Handed out from the low end, so a small program touches one region front to back.
      for (std::size_t i = pool_slabs_per_region; i-- > 0;) free_spaces_.push_back(region + i * pool_slab_bytes);
    }
    mem = free_spaces_.back();
    free_spaces_.pop_back();
    slabs_.push_back(slab{mem, static_cast<std::uint32_t>(c)});
    slab_bytes_.store(slab_bytes_.load(std::memory_order_relaxed) + pool_slab_bytes, std::memory_order_relaxed);
  }
  // The blocks are threaded outside the lock: first touch of the pages is the slow part.
  auto block = [&](std::uint32_t i) { return reinterpret_cast<free_block*>(mem + i * size); };
  batch first{nullptr, 0};
  free_block* first_tail = nullptr;
  for (std::uint32_t k = 0; k < batches; ++k) {
    const std::uint32_t lo = k * per_batch, hi = std::min(n, lo + per_batch);
    for (std::uint32_t i = lo; i + 1 < hi; ++i) block(i)->next = block(i + 1);
    block(hi - 1)->next = nullptr;
    if (k == 0) {
      first = {block(lo), hi - lo};
      first_tail = block(hi - 1);
    } else {
      rest.push_back({block(lo), hi - lo});
    }
  }
  if (!rest.empty()) {
    std::lock_guard lock{mutex_};
    std::size_t bytes = 0;
    for (const batch& b : rest) {
      try {
        lists_[c].push_back(b);
        bytes += std::size_t{b.count} * size;
      } catch (...) {
        // No room in the list: the caller's batch takes these blocks too.
        first_tail->next = b.head;
        first_tail = block(static_cast<std::uint32_t>((reinterpret_cast<char*>(b.head) - mem) / size) + b.count - 1);
        first.count += b.count;
      }
    }
    free_bytes_.store(free_bytes_.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
  }
  return first;
}

}  // namespace otpp::detail
