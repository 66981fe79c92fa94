#pragma once
// A fence split unevenly between two sides of a store/load handshake
// (Dekker: each side stores, then loads what the other stored). The side
// that runs all the time pays a compiler barrier; the rare side pays a
// system call that makes every thread of the process pass a full barrier
// (Linux membarrier, private expedited). Where that call is not to be had
// (another OS, an old kernel, a sandbox that refuses it), both sides fall
// back to an ordinary full fence.

#include <atomic>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
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

/// The rare side: after its store, before its load.
inline void heavy_fence() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
  if (membarrier_ready()) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
  }
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace otpp::detail
