#pragma once
// node_pool's out-of-line code: the central pool's slab carving and release.

#include <algorithm>

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
      if (tc.head[c]) central.give(c, {tc.head[c], tc.count[c]});
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
    if (b.count > 1) central.give(c, {b.head->next, b.count - 1});
    return b.head;
  }
  if (!tc.guarded) {
    tc.guarded = true;
    // odr-use registers the flushing destructor for this thread
    [[maybe_unused]] auto* volatile g = &tls_cache_guard;
  }
  auto b = central_pool::instance().take(c);
  free_block* blk = b.head;
  tc.head[c] = blk->next;
  tc.count[c] = b.count - 1;
  return blk;
}

[[gnu::noinline]] OTPP_FUNC void pool_free_retired(std::size_t c, free_block* b) noexcept {
  central_pool::instance().give_one(c, b);
}

[[gnu::noinline]] OTPP_FUNC void pool_flush(std::size_t c) {
  auto& tc = tls_cache();
  const std::uint32_t n = pool_batch(c);
  free_block* head = tc.head[c];
  free_block* tail = head;
  for (std::uint32_t i = 1; i < n; ++i) tail = tail->next;
  tc.head[c] = tail->next;
  tc.count[c] -= n;
  tail->next = nullptr;
  central_pool::instance().give(c, {head, n});
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

OTPP_FUNC void central_pool::give(std::size_t c, batch b) {
  std::lock_guard lock{mutex_};
  lists_[c].push_back(b);
  free_bytes_.store(free_bytes_.load(std::memory_order_relaxed) + b.count * pool_class_size(c), std::memory_order_relaxed);
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

OTPP_FUNC void central_pool::give_one(std::size_t c, free_block* blk) {
  std::lock_guard lock{mutex_};
  free_bytes_.store(free_bytes_.load(std::memory_order_relaxed) + pool_class_size(c), std::memory_order_relaxed);
  auto& l = lists_[c];
  if (!l.empty() && l.back().count < pool_batch(c)) {
    blk->next = l.back().head;
    l.back().head = blk;
    ++l.back().count;
  } else {
    blk->next = nullptr;
    l.push_back({blk, 1});
  }
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
  std::size_t released = 0;
  bool any = false;
  for (auto& s : slabs_) any = any || s.free == pool_batch(s.cls);
  if (!any) return 0;
  // Rebuild each class's lists from the blocks of slabs that stay.
  for (std::size_t c = 0; c < pool_classes; ++c) {
    std::vector<batch> kept;
    batch cur{nullptr, 0};
    for (const batch& b : lists_[c]) {
      for (free_block* f = b.head; f != nullptr;) {
        free_block* next = f->next;
        slab* s = slab_of(f);
        if (s == nullptr || s->free != pool_batch(s->cls)) {
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
  std::vector<slab> stay;
  stay.reserve(slabs_.size());
  for (auto& s : slabs_) {
    if (s.free == pool_batch(s.cls)) {
      const std::size_t bytes = pool_class_size(s.cls) * pool_batch(s.cls);
      ::operator delete(s.mem, std::align_val_t{cache_line});
      released += bytes;
    } else {
      stay.push_back(s);
    }
  }
  slabs_ = std::move(stay);
  free_bytes_.store(free_bytes_.load(std::memory_order_relaxed) - released, std::memory_order_relaxed);
  slab_bytes_.store(slab_bytes_.load(std::memory_order_relaxed) - released, std::memory_order_relaxed);
  return released;
}

OTPP_FUNC central_pool::batch central_pool::carve(std::size_t c) {
  const std::size_t size = pool_class_size(c);
  const std::uint32_t n = pool_batch(c);
  // 64-byte aligned slabs: blocks of a class whose size is a multiple of 64
  // are then cache-line aligned (process objects rely on it, see process_base).
  auto* mem = static_cast<char*>(::operator new(size * n, std::align_val_t{cache_line}));
  try {
    std::lock_guard lock{mutex_};
    slabs_.push_back(slab{mem, static_cast<std::uint32_t>(c)});
    slab_bytes_.store(slab_bytes_.load(std::memory_order_relaxed) + size * n, std::memory_order_relaxed);
  } catch (...) {
    ::operator delete(mem, std::align_val_t{cache_line});
    throw;
  }
  free_block* head = nullptr;
  for (std::uint32_t i = n; i-- > 0;) {
    auto* b = reinterpret_cast<free_block*>(mem + i * size);
    b->next = head;
    head = b;
  }
  return {head, n};
}

}  // namespace otpp::detail
