#pragma once
// Overload events, like erlang:system_monitor: a mailbox that grows past a
// threshold (and shrinks back), a process that makes no progress for long.
//
//   otpp::system_monitor watch{rt, {.long_message_queue = 10'000, .long_handler = 100ms}};
//   otpp::telemetry::attach("alerts", otpp::monitor_events::long_message_queue, on_alert);
//
// A system_monitor samples the runtime's processes every `interval` from a
// thread of its own, reading only what each process publishes (its queue
// length, status and how many messages it has taken): processes pay nothing
// for it. Each pass is O(live processes), one registry shard locked at a
// time. Events are emitted on the monitor's thread:
// - monitor_events::long_message_queue, when a queue reaches
//   `long_message_queue` (on = true), and once it is back under
//   `long_message_queue_off` (on = false; default: half the threshold), as
//   Erlang's {long_message_queue, {Off, On}};
// - monitor_events::long_handler, once per stall, when a process with
//   messages waiting has been running or runnable for `long_handler` without
//   taking its next message: a handler that takes long, or a scheduler too
//   busy to run it (Erlang's long_schedule, seen from outside).
// Sampling sees what lasts at least an interval: a shorter spike may pass
// unseen, and a duration is known to within one interval.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime.hpp"
#include "telemetry.hpp"

namespace otpp {

/// What a system_monitor watches for (0 turns a check off).
struct system_monitor_options {
  std::chrono::milliseconds interval{100};          ///< Time between passes.
  std::size_t long_message_queue = 0;               ///< Queue length that raises the event.
  std::size_t long_message_queue_off = 0;           ///< Length under which it is cleared (0: half the threshold).
  std::chrono::milliseconds long_handler{0};        ///< Stall that raises long_handler.
};

/// The events a system_monitor emits.
namespace monitor_events {
/// A queue crossed the threshold (on) or came back under the lower one
/// (off). Measurements: queue_length. Metadata: pid, type, on.
inline const telemetry::event long_message_queue{"otpp", "process", "long_message_queue"};
/// A process with messages waiting took none for the threshold or longer.
/// Measurements: duration (ms, at least; known to within one interval),
/// queue_length. Metadata: pid, type.
inline const telemetry::event long_handler{"otpp", "process", "long_handler"};
}  // namespace monitor_events

/// Samples a runtime for overload from construction to destruction.
class system_monitor {
 public:
  /// Starts the sampling thread. Throws std::invalid_argument for a zero
  /// interval or an off threshold not under the on one.
  system_monitor(runtime& rt, system_monitor_options o) : core_{&detail::runtime_access::core(rt)}, opts_{o} {
    detail::add_core_ref(core_);  // the core outlives us, even if the runtime goes first
    struct unref {
      detail::runtime_core* c;
      bool armed = true;
      ~unref() {
        if (armed) detail::release_core_ref(c);
      }
    } guard{core_};
    if (opts_.interval <= std::chrono::milliseconds::zero())
      throw std::invalid_argument("otpp::system_monitor: the interval must be positive");
    if (opts_.long_message_queue_off == 0) opts_.long_message_queue_off = opts_.long_message_queue / 2;
    if (opts_.long_message_queue != 0 && opts_.long_message_queue_off >= opts_.long_message_queue)
      throw std::invalid_argument("otpp::system_monitor: long_message_queue_off must be under long_message_queue");
    thread_ = std::thread([this] { loop(); });
    guard.armed = false;
  }
  system_monitor(const system_monitor&) = delete;
  system_monitor& operator=(const system_monitor&) = delete;
  /// Stops sampling (waits for a pass in progress).
  ~system_monitor() {
    {
      std::lock_guard lock{m_};
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    detail::release_core_ref(core_);
  }

  /// Passes made so far (tests and dashboards: "has it looked yet?").
  [[nodiscard]] std::uint64_t passes() const noexcept { return passes_.load(std::memory_order_acquire); }

 private:
  struct seen {
    std::uint32_t progress = 0;
    std::chrono::steady_clock::time_point stalled_since{};
    bool stalled = false;   // runnable with messages and no progress since stalled_since
    bool reported = false;  // long_handler emitted for this stall
    bool long_queue = false;
    std::uint64_t pass = 0;
  };

  void loop() {
    std::unique_lock lock{m_};
    while (!cv_.wait_for(lock, opts_.interval, [&] { return stop_; })) {
      lock.unlock();
      try {
        pass();
      } catch (...) {
        // Out of memory for the bookkeeping: this pass is skipped.
      }
      passes_.fetch_add(1, std::memory_order_release);
      lock.lock();
    }
  }

  void pass() {
    const auto now = std::chrono::steady_clock::now();
    ++pass_;
    struct hit {
      pid who;
      std::string_view type;
      std::size_t queue;
      bool on;
      double stalled_ms;
    };
    std::vector<hit> queues, stalls;  // emitted after the walk, outside the registry's locks
    core_->for_each_live([&](detail::process_base& p) {
      const std::size_t q = p.queue_length();
      const std::uint32_t st = p.run_state();
      const bool runnable = (st & detail::process_identity::scheduled) != 0 && (st & detail::process_identity::dead) == 0;
      const bool interesting = q != 0 || tracked_.contains(p.id());
      if (!interesting) return;
      seen& s = tracked_[p.id()];
      s.pass = pass_;
      if (opts_.long_message_queue != 0) {
        if (!s.long_queue && q >= opts_.long_message_queue) {
          s.long_queue = true;
          queues.push_back({detail::pid_access::make(&p), p.type_name(), q, true, 0});
        } else if (s.long_queue && q < opts_.long_message_queue_off) {
          s.long_queue = false;
          queues.push_back({detail::pid_access::make(&p), p.type_name(), q, false, 0});
        }
      }
      if (opts_.long_handler.count() != 0) {
        const std::uint32_t progress = p.progress();
        if (runnable && q != 0 && s.stalled && progress == s.progress) {
          const auto stalled = now - s.stalled_since;
          if (!s.reported && stalled >= opts_.long_handler) {
            s.reported = true;
            stalls.push_back({detail::pid_access::make(&p), p.type_name(), q, true,
                              std::chrono::duration<double, std::milli>(stalled).count()});
          }
        } else {
          s.stalled = runnable && q != 0;
          s.stalled_since = now;
          s.reported = false;
        }
        s.progress = progress;
      }
    });
    // Forget processes gone or quiet (keeping those still flagged long).
    std::erase_if(tracked_, [&](const auto& kv) { return kv.second.pass != pass_; });
    for (const hit& h : queues)
      telemetry::execute(monitor_events::long_message_queue, {{"queue_length", h.queue}},
                         {{"pid", h.who}, {"type", h.type}, {"on", h.on}});
    for (const hit& h : stalls)
      telemetry::execute(monitor_events::long_handler, {{"duration", h.stalled_ms}, {"queue_length", h.queue}},
                         {{"pid", h.who}, {"type", h.type}});
  }

  detail::runtime_core* core_;
  system_monitor_options opts_;
  std::unordered_map<std::uint64_t, seen> tracked_;  // monitor thread only
  std::uint64_t pass_ = 0;
  std::atomic<std::uint64_t> passes_{0};
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace otpp
