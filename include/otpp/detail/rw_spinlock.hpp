#pragma once
// A reader-writer lock for short critical sections (a table shard's lookup
// or insert): readers share it without waiting for each other, a writer
// waits for the readers in it to leave and keeps new ones out.

#include <atomic>
#include <cstdint>
#include <thread>

#include "platform.hpp"

namespace otpp::detail {

class rw_spinlock {
 public:
  void lock_shared() noexcept {
    for (unsigned spins = 0;; ++spins) {
      // Optimistic: a reader that finds no writer is in with one RMW.
      if (!(word_.fetch_add(reader, std::memory_order_acquire) & writer)) return;
      word_.fetch_sub(reader, std::memory_order_relaxed);
      while (word_.load(std::memory_order_relaxed) & writer) backoff(spins);
    }
  }
  void unlock_shared() noexcept { word_.fetch_sub(reader, std::memory_order_release); }

  void lock() noexcept {
    for (unsigned spins = 0;; ++spins) {
      // Claim the writer bit first (new readers back off), then wait for
      // the readers already in to leave.
      std::uint32_t w = word_.load(std::memory_order_relaxed);
      if (!(w & writer) && word_.compare_exchange_weak(w, w | writer, std::memory_order_acquire)) break;
      backoff(spins);
    }
    for (unsigned spins = 0; word_.load(std::memory_order_acquire) != writer; ++spins) backoff(spins);
  }
  void unlock() noexcept { word_.fetch_and(~writer, std::memory_order_release); }

 private:
  static constexpr std::uint32_t writer = 1;
  static constexpr std::uint32_t reader = 2;
  static void backoff(unsigned spins) noexcept {
    // A holder that was preempted would keep a spinner busy for its whole
    // time slice: give the core away after a short spin.
    if (spins < 64) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  std::atomic<std::uint32_t> word_{0};
};

/// Holds a rw_spinlock shared for its scope.
class shared_spin_guard {
 public:
  explicit shared_spin_guard(rw_spinlock& l) noexcept : l_{l} { l_.lock_shared(); }
  ~shared_spin_guard() { l_.unlock_shared(); }
  shared_spin_guard(const shared_spin_guard&) = delete;
  shared_spin_guard& operator=(const shared_spin_guard&) = delete;

 private:
  rw_spinlock& l_;
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
