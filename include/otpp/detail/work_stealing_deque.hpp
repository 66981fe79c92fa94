#pragma once
// Chase–Lev work-stealing deque of pointers, with the C11 memory orders of
// Lê, Pop, Cohen, Zappa Nardelli, "Correct and Efficient Work-Stealing for
// Weak Memory Models" (PPoPP 2013), Fig. 1.
//
// The owner pushes and pops at the bottom (LIFO, cache-warm); thieves take
// from the top (FIFO, oldest first). Contention happens only over the last
// element. The ring grows by doubling; old rings are kept until destruction
// because a thief may still be reading one (the paper's simple reclamation).
// A push that finds the ring full with no memory to grow returns false
// rather than throw: the scheduler queues the process elsewhere.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

namespace otpp::detail {

template <class T>
class work_stealing_deque {
  static_assert(std::is_pointer_v<T>);

  struct ring {
    // slots is null if no memory could be had for it.
    explicit ring(std::int64_t cap) noexcept
        : capacity{cap}, mask{cap - 1}, slots{new (std::nothrow) std::atomic<T>[static_cast<std::size_t>(cap)]} {}
    std::int64_t capacity;
    std::int64_t mask;
    std::unique_ptr<std::atomic<T>[]> slots;
    T get(std::int64_t i) const noexcept { return slots[static_cast<std::size_t>(i & mask)].load(std::memory_order_relaxed); }
    void put(std::int64_t i, T v) noexcept { slots[static_cast<std::size_t>(i & mask)].store(v, std::memory_order_relaxed); }
  };

 public:
  /// Throws std::bad_alloc.
  explicit work_stealing_deque(std::int64_t capacity = 256) {
    // Room for every ring it can ever have (one per doubling): a growth
    // never needs memory for the list.
    rings_.reserve(64);
    auto r = std::make_unique<ring>(capacity);
    if (r->slots == nullptr) throw std::bad_alloc{};
    ring_.store(r.get(), std::memory_order_relaxed);
    rings_.push_back(std::move(r));
  }
  work_stealing_deque(const work_stealing_deque&) = delete;
  work_stealing_deque& operator=(const work_stealing_deque&) = delete;

  /// Owner only. False, and nothing queued, when full with no memory to grow.
  [[nodiscard]] bool push(T v) noexcept {
    std::int64_t b = bottom_.load(std::memory_order_relaxed);
    std::int64_t t = top_.load(std::memory_order_acquire);
    ring* r = ring_.load(std::memory_order_relaxed);
    if (b - t > r->capacity - 1) {
      r = grow(r, t, b);
      if (r == nullptr) [[unlikely]]
        return false;
    }
    r->put(b, v);
    // release (a store, not the paper's fence, so TSan sees the edge): a thief
    // that reads the new bottom also sees the slot and the process behind it.
    bottom_.store(b + 1, std::memory_order_release);
    return true;
  }

  /// Owner only.
  [[nodiscard]] T pop() noexcept {
    std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    ring* r = ring_.load(std::memory_order_relaxed);
    bottom_.store(b, std::memory_order_relaxed);
    // seq_cst: the bottom decrement must be ordered before reading top, or a
    // thief and the owner could both take the last element.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::int64_t t = top_.load(std::memory_order_relaxed);
    if (t <= b) {
      T v = r->get(b);
      if (t == b) {
        // Last element: race the thieves for it with a CAS on top.
        if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) v = nullptr;
        bottom_.store(b + 1, std::memory_order_relaxed);
      }
      return v;
    }
    bottom_.store(b + 1, std::memory_order_relaxed);
    return nullptr;
  }

  /// Any thread.
  [[nodiscard]] T steal() noexcept {
    std::int64_t t = top_.load(std::memory_order_acquire);
    // seq_cst: pairs with the fence in pop (see above).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::int64_t b = bottom_.load(std::memory_order_acquire);
    if (t < b) {
      ring* r = ring_.load(std::memory_order_acquire);
      T v = r->get(t);
      if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) return nullptr;
      return v;
    }
    return nullptr;
  }

  /// A snapshot for heuristics (exact only for the owner).
  [[nodiscard]] std::int64_t size_hint() const noexcept {
    return std::max<std::int64_t>(0, bottom_.load(std::memory_order_relaxed) - top_.load(std::memory_order_relaxed));
  }

  [[nodiscard]] bool empty() const noexcept {
    std::int64_t t = top_.load(std::memory_order_relaxed);
    std::int64_t b = bottom_.load(std::memory_order_relaxed);
    return b <= t;
  }

 private:
  // The new ring, or null if there was no memory for it.
  ring* grow(ring* old, std::int64_t t, std::int64_t b) noexcept {
    if (rings_.size() == rings_.capacity()) return nullptr;
    std::unique_ptr<ring> bigger{new (std::nothrow) ring(old->capacity * 2)};
    if (bigger == nullptr || bigger->slots == nullptr) return nullptr;
    for (std::int64_t i = t; i < b; ++i) bigger->put(i, old->get(i));
    ring* r = bigger.get();
    rings_.push_back(std::move(bigger));
    ring_.store(r, std::memory_order_release);
    return r;
  }

  alignas(64) std::atomic<std::int64_t> top_{0};
  alignas(64) std::atomic<std::int64_t> bottom_{0};
  alignas(64) std::atomic<ring*> ring_{nullptr};
  std::vector<std::unique_ptr<ring>> rings_;  // owner only
};

}  // namespace otpp::detail
