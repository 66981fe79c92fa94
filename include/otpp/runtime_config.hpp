#pragma once
// The settings of an otpp::runtime.

#include <chrono>
#include <memory>

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
  /// How long runtime shutdown waits, in total, for its processes to stop.
  std::chrono::milliseconds shutdown_timeout{5000};
  /// How long an idle worker spins before it parks.
  std::chrono::microseconds spin{50};
  /// The time timers and gen_server timeouts follow. Empty: the steady
  /// clock. Tests pass an otpp::testing::virtual_clock (otpp/testing.hpp).
  /// Call and stop timeouts always follow the steady clock.
  std::shared_ptr<clock_source> clock = nullptr;
};

}  // namespace otpp
