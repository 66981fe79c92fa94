#pragma once
// Parking a thread on a 32-bit atomic word, with an optional deadline.
// std::atomic::wait has no timeout, and call timeouts need one, so on Linux we
// use the futex system call directly; elsewhere we fall back to
// std::atomic::wait with short sleeps for timed waits.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <ctime>
#endif

namespace otpp::detail {

using steady = std::chrono::steady_clock;

/// Blocks while `word == expected`, until woken or `deadline` passes.
/// Spurious returns are allowed; callers re-check their condition.
inline void park(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                 steady::time_point deadline = steady::time_point::max()) noexcept {
#if defined(__linux__)
  timespec ts{};
  timespec* tsp = nullptr;
  if (deadline != steady::time_point::max()) {
    auto left = deadline - steady::now();
    if (left <= steady::duration::zero()) return;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    tsp = &ts;
  }
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, tsp, nullptr, 0);
#else
  if (deadline == steady::time_point::max()) {
    word.wait(expected, std::memory_order_acquire);
  } else if (word.load(std::memory_order_acquire) == expected && steady::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
#endif
}

inline void unpark_one(std::atomic<std::uint32_t>& word) noexcept {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
#else
  word.notify_one();
#endif
}

inline void unpark_all(std::atomic<std::uint32_t>& word) noexcept {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
#else
  word.notify_all();
#endif
}

}  // namespace otpp::detail
