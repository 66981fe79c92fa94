#pragma once
// A FIFO of pointers in a power-of-two ring, for a queue its owner keeps
// under a lock (the runtime's global run queue). It grows by doubling,
// and a push that finds it full with no memory to grow returns false
// rather than throw: the scheduler cannot recover from an exception where
// it queues a process, and has another way to queue one without memory
// (runtime_core::strand).

#include <cstddef>
#include <new>
#include <type_traits>

namespace otpp::detail {

template <class T>
class fifo_ring {
  static_assert(std::is_pointer_v<T>);

 public:
  /// `capacity`: a power of two. Throws std::bad_alloc.
  explicit fifo_ring(std::size_t capacity) : slots_{new T[capacity]}, mask_{capacity - 1} {}
  fifo_ring(const fifo_ring&) = delete;
  fifo_ring& operator=(const fifo_ring&) = delete;
  ~fifo_ring() { delete[] slots_; }

  /// False, and nothing queued, when full with no memory to grow.
  [[nodiscard]] bool push(T v) noexcept {
    if (tail_ - head_ > mask_ && !grow()) [[unlikely]]
      return false;
    slots_[tail_++ & mask_] = v;
    return true;
  }
  /// The oldest, or null when empty.
  [[nodiscard]] T pop() noexcept { return head_ == tail_ ? nullptr : slots_[head_++ & mask_]; }
  [[nodiscard]] bool empty() const noexcept { return head_ == tail_; }
  [[nodiscard]] std::size_t size() const noexcept { return tail_ - head_; }

 private:
  // Positions keep counting up across a growth: each one's slot is its low
  // bits under either mask.
  bool grow() noexcept {
    const std::size_t cap = (mask_ + 1) * 2;
    T* bigger = new (std::nothrow) T[cap];
    if (bigger == nullptr) return false;
    for (std::size_t i = head_; i != tail_; ++i) bigger[i & (cap - 1)] = slots_[i & mask_];
    delete[] slots_;
    slots_ = bigger;
    mask_ = cap - 1;
    return true;
  }

  T* slots_;
  std::size_t mask_;
  std::size_t head_ = 0;
  std::size_t tail_ = 0;
};

}  // namespace otpp::detail
