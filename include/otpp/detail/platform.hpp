#pragma once
// Small platform helpers shared by the lock-free machinery: spin hints,
// sanitizer detection and compile-time type names for logs.

#include <atomic>
#include <cstddef>
#include <string_view>
#include <thread>


namespace otpp::detail {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool address_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool address_sanitizer = true;
#else
inline constexpr bool address_sanitizer = false;
#endif
#else
inline constexpr bool address_sanitizer = false;
#endif

/// Tells the core we are spinning, so a sibling hyper-thread gets the pipeline.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();  // the builtin spares every TU <immintrin.h>
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

inline constexpr std::size_t cache_line = 64;

/// A lock for critical sections of a few dozen instructions that are hammered
/// by readers (a whereis loop): a std::mutex puts the loser to sleep on a
/// futex, and the wake-up (tens of µs here) costs far more than the wait.
/// Spins, then yields, never sleeps. Meets BasicLockable.
class spin_lock {
 public:
  void lock() noexcept {
    for (unsigned i = 0;; ++i) {
      if (!locked_.load(std::memory_order_relaxed) && !locked_.exchange(true, std::memory_order_acquire)) return;
      cpu_relax();
      if ((i & 63) == 63) std::this_thread::yield();  // the holder may have lost its core
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

// The compiler spells the template argument inside __PRETTY_FUNCTION__; we cut
// it out at compile time so logs can name message and server types without RTTI.
template <class T>
constexpr std::string_view type_name_of() noexcept {
#if defined(__clang__) || defined(__GNUC__)
  std::string_view p = __PRETTY_FUNCTION__;
  auto start = p.find("T = ");
  if (start == std::string_view::npos) return "?";
  start += 4;
  auto end = p.find_first_of(";]", start);
  return p.substr(start, end - start);
#else
  return "?";
#endif
}
// Computed once, at compile time: a call site reads a constant instead of
// parsing the function name at run time (and emitting a function per type).
template <class T>
inline constexpr std::string_view type_name_v = type_name_of<T>();
template <class T>
constexpr std::string_view type_name() noexcept {
  return type_name_v<T>;
}

/// One distinct address per type: cheaper than typeid and needs no RTTI.
template <class T>
struct type_tag {
  static constexpr char id = 0;
};
template <class T>
inline constexpr const void* type_id = &type_tag<T>::id;

}  // namespace otpp::detail
