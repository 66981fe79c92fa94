#pragma once
// Replaces the global allocator of the test program whose one source file
// includes this, so that a test can make allocations fail on demand: every
// request of 4 KiB or more while refuse_large is set, or every request
// once allocations_left more have succeeded (only_on: on one thread;
// never_on: on all but one; refuse_once: that one request only). Every unaligned form is
// replaced, so that sanitizers' own never pair with these.

// GCC cannot see that the replaced operator new below pairs with free.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

namespace otpp_test::failing_new {
inline std::atomic<bool> refuse_large{false};
inline std::atomic<long> allocations_left{-1};  // negative: no limit
inline std::atomic<long> refused{0};
// Set: allocations_left counts (and refuses) only this thread's requests.
inline std::atomic<std::thread::id> only_on{};
// Set: this thread's requests are never counted nor refused.
inline std::atomic<std::thread::id> never_on{};
// Set: only one request is refused, once allocations_left reaches 0.
inline std::atomic<bool> refuse_once{false};

inline void* allocate(std::size_t n) noexcept {
  bool refuse = n >= 4096 && refuse_large.load(std::memory_order_relaxed);
  const std::thread::id on = only_on.load(std::memory_order_relaxed);
  const std::thread::id me = std::this_thread::get_id();
  const bool counted = (on == std::thread::id{} || on == me) && never_on.load(std::memory_order_relaxed) != me;
  for (long left = allocations_left.load(std::memory_order_relaxed); counted && !refuse && left >= 0;) {
    if (left == 0) {
      refuse = true;
      if (refuse_once.load(std::memory_order_relaxed)) allocations_left.store(-1, std::memory_order_relaxed);
    } else if (allocations_left.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
      break;
    }
  }
  if (refuse) {
    refused.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  return std::malloc(n == 0 ? 1 : n);
}
inline void* allocate_or_throw(std::size_t n) {
  if (void* p = allocate(n)) return p;
  throw std::bad_alloc{};
}
}  // namespace otpp_test::failing_new

void* operator new(std::size_t n) { return otpp_test::failing_new::allocate_or_throw(n); }
void* operator new[](std::size_t n) { return otpp_test::failing_new::allocate_or_throw(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return otpp_test::failing_new::allocate(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return otpp_test::failing_new::allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
