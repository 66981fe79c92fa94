#pragma once
// Binding worker threads to CPUs (runtime_config::bind_workers). Linux only;
// elsewhere there is nothing to bind to and workers stay free.

#include <algorithm>
#include <stdexcept>
#include <string>
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

/// runtime_config::worker_cpus, checked against the CPUs the calling
/// thread may use: the list itself, or empty where binding is unknown
/// (elsewhere than Linux). Throws std::invalid_argument for a CPU outside
/// that set, naming it and the set.
inline std::vector<int> worker_cpus_checked(const std::vector<int>& wanted) {
  if (wanted.empty()) return {};
  const std::vector<int> allowed = allowed_cpus();
  if (allowed.empty()) return {};
  for (int c : wanted) {
    if (std::find(allowed.begin(), allowed.end(), c) != allowed.end()) continue;
    // Appended piece by piece: GCC 12 warns (-Wrestrict, wrongly) where a
    // literal + a temporary string is inlined.
    std::string message = "otpp::runtime: runtime_config::worker_cpus names CPU ";
    message += std::to_string(c);
    message += ", which this thread may not run on (allowed: ";
    for (std::size_t i = 0; i < allowed.size(); ++i) {
      if (i != 0) message += ',';
      message += std::to_string(allowed[i]);
    }
    message += ')';
    throw std::invalid_argument(message);
  }
  return wanted;
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
