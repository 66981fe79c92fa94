#pragma once
// A fence split unevenly between two sides of a store/load handshake
// (Dekker: each side stores, then loads what the other stored). The side
// that runs all the time pays a compiler barrier; the rare side pays a
// system call that makes every thread of the process pass a full barrier
// (Linux membarrier, private expedited). Where that call is not to be had
// (another OS, an old kernel, a sandbox that refuses it), both sides fall
// back to an ordinary full fence.
//
// Once the process registered, the frequent sides keep only their compiler
// barrier for good, so the rare side may not settle for less than the
// system call: where the kernel refuses one (it allocates a CPU mask per
// call, and says ENOMEM when it cannot), heavy_fence waits and calls again,
// and ends the process with a message where the kernel refuses for a
// reason that retrying cannot mend.

#include <atomic>
#include <chrono>
#include <thread>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#endif

namespace otpp::detail {

/// Whether heavy_fence is the system call (decided once, for the process).
inline bool membarrier_ready() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
  static const bool ready = [] {
    const long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    return cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 &&
           syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  }();
  return ready;
#else
  return false;
#endif
}

/// The frequent side: after its store, before its load.
inline void light_fence() noexcept {
  if (membarrier_ready()) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

#if defined(__linux__) && defined(SYS_membarrier)
/// The system call, until the kernel makes it; out of line, as it is rare.
[[gnu::noinline, gnu::cold]] inline void membarrier_until_made() noexcept {
  bool registered_again = false;
  for (unsigned refusals = 1;; ++refusals) {
    int error = errno;
    if (error == EPERM && !registered_again) {
      // Not registered any more: register again, as membarrier_ready did.
      registered_again = true;
      if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0) {
        error = 0;
      } else {
        error = errno;
      }
    }
    if (error == ENOMEM || error == EAGAIN || error == EINTR) {
      // The kernel could not allocate its CPU mask: memory may come back.
      if (refusals < 16) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds{refusals < 26 ? 1 << (refusals - 16) : 1000});
      }
    } else if (error != 0) {
      std::fprintf(stderr,
                   "otpp: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed: %s (errno %d), in a process registered "
                   "for it; the barrier that timers and read_concurrency tables pair with cannot be made. Aborting.\n",
                   std::strerror(error), error);
      std::abort();
    }
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
  }
}
#endif

/// The rare side, for a caller that can give up instead of waiting for the
/// kernel: true if every thread of the process passed a full barrier, false
/// (nothing done) if the system call was refused or is not to be had.
[[nodiscard]] inline bool heavy_fence_or_refusal() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
  if (membarrier_ready()) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
  }
#endif
  return false;
}

/// The rare side: after its store, before its load. Returns once every
/// thread of the process passed a full barrier.
inline void heavy_fence() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
  if (membarrier_ready()) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) [[unlikely]]
      membarrier_until_made();
    return;
  }
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace otpp::detail
