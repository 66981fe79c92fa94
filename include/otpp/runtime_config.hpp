#pragma once
// The settings of an otpp::runtime.

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include "clock.hpp"

namespace otpp {

/// Settings of a runtime. Zero workers means one per hardware thread.
struct runtime_config {
  /// Worker threads; 0: one per hardware thread.
  unsigned workers = 0;
  /// Messages a process handles per turn before others get the worker.
  unsigned batch = 64;
  /// Upper bound on threads, counting spares that stand in for threads
  /// blocked in calls. Beyond it a blocked call simply blocks its worker.
  unsigned max_threads = 512;
  /// Stack of each execution context (fiber) the workers run processes on.
  /// A process blocked in a call (or a stop, an await, an exit_watch) keeps
  /// its context and its worker switches to another, so blocked processes
  /// hold no thread: a chain of 1,000 blocking calls runs on the workers
  /// alone. Address space only: pages are committed as they are touched.
  /// 0, or a platform without fibers (anything but x86-64 Linux): processes
  /// run on the worker threads' stacks, and a worker blocked in a call hands
  /// its queues to a spare thread (see max_threads).
  std::size_t stack_size = std::size_t{8} << 20;
  /// How long runtime shutdown waits, in total, for its processes to stop.
  std::chrono::milliseconds shutdown_timeout{5000};
  /// How long an idle worker spins before it parks.
  std::chrono::microseconds spin{50};
  /// Binds worker i to the i-th of the CPUs its workers would run on
  /// unbound (those the thread making the runtime may use; round robin when
  /// there are more workers than CPUs), as the BEAM's `+sbt`. A worker
  /// woken for new work then runs on its own core at once: a kernel that
  /// places a woken thread on its waker's core (as some virtual machines'
  /// kernels do) leaves it waiting there while the waker runs on, and the
  /// other core idles (measured on such a host: 1.9 ms median before the
  /// woken thread ran, 44 us bound). The cost: a bound worker cannot move
  /// off a core that something else keeps busy (work stealing still moves
  /// its processes). On that host, bursts across 64 processes gained
  /// (otpp_bench cache_fetch_64_ets, 6 pairs: 109.7-123.0 -> 116.3-123.8
  /// M/s), and sequential calls, statem casts and rate limiter checks
  /// stayed within their run-to-run spread (4 alternated pairs); measure
  /// your own load before choosing. Spare threads, started for calls that
  /// block a worker (stack_size = 0), are not bound. Linux only; a no-op
  /// with a single allowed CPU, or where the system refuses.
  bool bind_workers = false;
  /// The CPUs to bind the workers to, in order: worker i runs on
  /// worker_cpus[i % size] (binding implied; bind_workers need not be
  /// set). For several runtimes on one machine, each on cores of its own
  /// (two nodes with bind_workers alone would both start at the first
  /// allowed CPU), as the BEAM's `+sct` with `+sbt`. Each must be a CPU the
  /// thread making the runtime may run on: the runtime's constructor throws
  /// std::invalid_argument naming the one that is not. Linux only; ignored
  /// elsewhere.
  std::vector<int> worker_cpus{};
  /// The time timers and gen_server timeouts follow. Empty: the steady
  /// clock. Tests pass an otpp::testing::virtual_clock (otpp/testing.hpp).
  /// Call and stop timeouts always follow the steady clock.
  std::shared_ptr<clock_source> clock = nullptr;
};

}  // namespace otpp
