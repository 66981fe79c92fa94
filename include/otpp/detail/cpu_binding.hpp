#pragma once
// Binding worker threads to CPUs (runtime_config::bind_workers). Linux only;
// elsewhere there is nothing to bind to and workers stay free.

#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace otpp::detail {

/// The CPUs the calling thread may run on, in order (those a thread it
/// starts inherits); empty where unknown.
inline std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
#endif
  return cpus;
}

/// Binds the calling thread to `cpu`; false if the system refused.
inline bool bind_this_thread(int cpu) noexcept {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
#else
  (void)cpu;
  return false;
#endif
}

}  // namespace otpp::detail
