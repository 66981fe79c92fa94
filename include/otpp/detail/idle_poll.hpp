// Work an idle worker does while it spins: a node reads its connections on
// a worker that is waiting anyway, as BEAM's schedulers check I/O, so that a
// frame goes from the socket to the process it is for without a hand-over
// between threads (each costs tens of microseconds where the receiving
// thread sleeps). Process-wide: a node is not tied to one runtime.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

namespace otpp::detail {

/// What a poll found: traffic within the poller's busy-poll window keeps an
/// idle worker spinning (and polling) rather than parking.
enum class poll_result : int { quiet = 0, hot = 1, handled = 2 };

struct idle_poller {
  /// Polls without blocking: what it found.
  poll_result (*poll)(void* self) noexcept;
  /// A worker stops spinning (it parks): whatever it polled goes back to
  /// the poller's own thread.
  void (*parking)(void* self) noexcept;
  void* self;
};

struct idle_poll_slot {
  std::atomic<const idle_poller*> poller{nullptr};
  std::atomic<bool> busy{false};  // a worker is inside the poller's functions
};

class idle_pollers {
 public:
  /// False if every slot is taken: that poller's own thread does all its I/O.
  static bool add(const idle_poller* p) noexcept {
    for (auto& s : slots_) {
      const idle_poller* none = nullptr;
      if (s.poller.compare_exchange_strong(none, p, std::memory_order_acq_rel)) {
        count_.fetch_add(1, std::memory_order_release);
        return true;
      }
    }
    return false;
  }

  /// Returns once no worker is inside `p`'s functions, nor can enter them.
  static void remove(const idle_poller* p) noexcept {
    for (auto& s : slots_) {
      if (s.poller.load(std::memory_order_acquire) != p) continue;
      s.poller.store(nullptr, std::memory_order_release);
      count_.fetch_sub(1, std::memory_order_release);
      // A worker reads the pointer only while it holds `busy`.
      while (s.busy.exchange(true, std::memory_order_acquire)) std::this_thread::yield();
      s.busy.store(false, std::memory_order_release);
    }
  }

  [[nodiscard]] static bool any() noexcept { return count_.load(std::memory_order_relaxed) != 0; }

  /// A poller saw traffic: until `until` (steady ns) a worker that runs out
  /// of work should reach its poll at once rather than linger for a sender.
  static void note_traffic(std::int64_t until) noexcept {
    if (hot_until_.load(std::memory_order_relaxed) < until) hot_until_.store(until, std::memory_order_relaxed);
  }
  /// Reads the clock only where a poller exists.
  [[nodiscard]] static bool hot() noexcept {
    return any() && std::chrono::steady_clock::now().time_since_epoch().count() < hot_until_.load(std::memory_order_relaxed);
  }

  /// One worker at a time per poller; the others go on spinning.
  static poll_result poll() noexcept {
    poll_result r = poll_result::quiet;
    for_each([&](const idle_poller& p) { r = std::max(r, p.poll(p.self)); });
    return r;
  }

  static void parking() noexcept {
    for_each([](const idle_poller& p) { p.parking(p.self); });
  }

 private:
  template <class F>
  static void for_each(F&& f) noexcept {
    for (auto& s : slots_) {
      if (s.poller.load(std::memory_order_relaxed) == nullptr) continue;
      if (s.busy.exchange(true, std::memory_order_acquire)) continue;
      if (const idle_poller* p = s.poller.load(std::memory_order_acquire)) f(*p);
      s.busy.store(false, std::memory_order_release);
    }
  }

  static constexpr std::size_t max_pollers = 8;
  inline static idle_poll_slot slots_[max_pollers];
  inline static std::atomic<unsigned> count_{0};
  inline static std::atomic<std::int64_t> hot_until_{0};
};

}  // namespace otpp::detail
