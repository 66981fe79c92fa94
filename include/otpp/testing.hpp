#pragma once
// Helpers for testing code built on otpp.
//
// virtual_clock: time that moves only when the test says so, for timers and
// gen_server timeouts that never sleep and never flake.
//
//   auto clock = std::make_shared<otpp::testing::virtual_clock>();
//   otpp::runtime rt{{.workers = 2, .clock = clock}};
//   auto s = rt.start<session>().value();     // its init calls set_timeout(30s)
//   clock->advance(30s);                       // the timeout message is queued
//   CHECK(otpp::call(s, session::expired{}));  // a call flushes it through
//
// start_supervised: a process for the length of a scope (ExUnit's
// start_supervised), under a supervisor of its own that restarts it as its
// spec says and stops it (and whatever it started and linked) at scope exit.
//
//   auto c = otpp::testing::start_supervised<counter>(10).value();
//   otpp::call(c.get(), counter::increment{});
//
// Waiting for a death: otpp::exit_watch / otpp::await_exit (process.hpp)
// give the exit reason; await_child below waits for a supervisor to bring a
// child back.
//
// telemetry_capture: copies the events it is attached to, for assertions.
//
//   otpp::testing::telemetry_capture cap{cache_fetch};
//   ...
//   REQUIRE(cap.wait_for(1));
//   CHECK(cap.events()[0].metadata.at("hit") == otpp::testing::captured_value{true});

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "child_spec.hpp"
#include "clock.hpp"
#include "detail/runtime_core.hpp"
#include "exit_reason.hpp"
#include "gen_server.hpp"
#include "process.hpp"
#include "runtime.hpp"
#include "supervisor.hpp"
#include "telemetry.hpp"

namespace otpp::testing {

/// A clock for runtime_config::clock that stands still until advance().
/// Timers and gen_server timeouts of the runtimes using it follow it; call
/// and stop timeouts keep following real time.
class virtual_clock final : public clock_source {
 public:
  using duration = std::chrono::steady_clock::duration;      ///< As steady_clock's.
  using time_point = std::chrono::steady_clock::time_point;  ///< As steady_clock's.

  /// Starts at the steady clock's epoch and stands still.
  virtual_clock() noexcept = default;

  /// The virtual now.
  [[nodiscard]] time_point now() const noexcept override { return time_point{duration{now_.load(std::memory_order_acquire)}}; }

  /// Moves time forward by `d` (negative counts as zero) and returns once
  /// every timer due by the new time has delivered its message and the
  /// runtimes on this clock have handled everything that followed: nothing
  /// is running or queued, and no timer set meanwhile is due. (A process
  /// that keeps itself busy, or a chain of zero-delay timers, is cut off
  /// after `settle_limit`.)
  void advance(duration d) {
    std::lock_guard lock{mutex_};
    now_.fetch_add(std::max(d, duration::zero()).count(), std::memory_order_acq_rel);
    const auto deadline = std::chrono::steady_clock::now() + settle_limit;
    for (;;) {
      bool delivered = false;
      for (clock_listener* s : services_) delivered = s->catch_up() || delivered;
      bool quiet = true;
      for (clock_listener* s : services_) quiet = s->await_quiescence(settle_limit) && quiet;
      if ((!delivered && quiet) || std::chrono::steady_clock::now() >= deadline) return;
    }
  }

  /// Lets everything due at the current time happen, without moving it.
  void settle() { advance(duration::zero()); }

  /// How long advance() waits, in real time, for the runtimes to go quiet.
  static constexpr std::chrono::seconds settle_limit{10};

  /// A timer service starts following this clock.
  void attach(clock_listener* s) override {
    std::lock_guard lock{mutex_};
    services_.push_back(s);
  }
  /// A timer service stops following this clock.
  void detach(clock_listener* s) noexcept override {
    std::lock_guard lock{mutex_};
    std::erase(services_, s);
  }

 private:
  // An arbitrary start, far from zero so that deadlines stay positive.
  std::atomic<duration::rep> now_{std::chrono::duration_cast<duration>(std::chrono::hours(1)).count()};
  std::mutex mutex_;
  std::vector<clock_listener*> services_;
};

/// A process started by start_supervised, stopped when this goes out of
/// scope. It runs under a supervisor of its own (one_for_one, restarts
/// without limit), so a crash brings it back as its spec says; get()
/// always answers the current one.
template <class Impl>
class supervised {
 public:
  /// Takes charge of `sup`, whose child `id` it stands for.
  supervised(server<otpp::supervisor> sup, std::string id) : sup_{std::move(sup)}, id_{std::move(id)} {}
  /// Takes over what `o` stood for.
  supervised(supervised&& o) noexcept : sup_{std::exchange(o.sup_, {})}, id_{std::move(o.id_)} {}
  /// Stops what this stood for, then takes over what `o` stood for.
  supervised& operator=(supervised&& o) noexcept {
    if (this != &o) {
      stop();
      sup_ = std::exchange(o.sup_, {});
      id_ = std::move(o.id_);
    }
    return *this;
  }
  supervised(const supervised&) = delete;
  supervised& operator=(const supervised&) = delete;
  ~supervised() { stop(); }

  /// The process running now; empty while it is being restarted or after stop().
  [[nodiscard]] server<Impl> get() const {
    if (!sup_) return {};
    auto kids = which_children(sup_);
    if (!kids) return {};
    for (auto& c : *kids)
      if (c.id == id_) return detail::server_access::make<Impl>(c.process);
    return {};
  }
  /// get(): a handle stands for its process.
  operator server<Impl>() const { return get(); }  // NOLINT: a handle stands for its process

  /// Its id under that supervisor (for await_child).
  [[nodiscard]] const std::string& id() const noexcept { return id_; }
  /// The supervisor holding it.
  [[nodiscard]] const server<otpp::supervisor>& supervisor() const noexcept { return sup_; }

  /// Stops it now by its shutdown policy (ExUnit's stop_supervised);
  /// idempotent.
  void stop() {
    if (!sup_) return;
    (void)try_stop(std::exchange(sup_, {}).pid(), exit_reason::shutdown());
  }

 private:
  server<otpp::supervisor> sup_;
  std::string id_;
};

}  // namespace otpp::testing

namespace otpp::detail {
template <class Impl>
result<testing::supervised<Impl>> start_supervised_in(runtime* rt, child_spec spec) {
  const supervisor_flags flags{.max_restarts = 1'000'000, .max_seconds = std::chrono::seconds(1)};
  auto sup = rt ? rt->start<otpp::supervisor>(std::vector<child_spec>{}, flags)
                : otpp::start<otpp::supervisor>(std::vector<child_spec>{}, flags);
  if (!sup) return sup.error();
  std::string id = spec.id;
  auto child = start_child(*sup, std::move(spec));
  if (!child || !*child) {
    (void)try_stop(sup->pid(), exit_reason::shutdown());
    if (!child) return child.error();
    return exit_reason::ignore();
  }
  return testing::supervised<Impl>{std::move(*sup), std::move(id)};
}
}  // namespace otpp::detail

namespace otpp::testing {

/// Starts child<Impl>(args...) under a supervisor of its own, in the calling
/// process's runtime (or the default one); stopped at scope exit. A start
/// error, or ignore, is the result's error.
template <class Impl, class... Args>
[[nodiscard]] result<supervised<Impl>> start_supervised(Args&&... args) {
  return detail::start_supervised_in<Impl>(nullptr, child<Impl>(std::forward<Args>(args)...));
}

/// The same in `rt`.
template <class Impl, class... Args>
[[nodiscard]] result<supervised<Impl>> start_supervised(runtime& rt, Args&&... args) {
  return detail::start_supervised_in<Impl>(&rt, child<Impl>(std::forward<Args>(args)...));
}

/// Waits until the supervisor's child `id` runs under a pid other than
/// `previous` and returns it; empty if that does not happen within
/// `timeout`. Polls with calls to the supervisor, so it never misses a
/// restart that happened before it was called.
inline pid await_child(const server<otpp::supervisor>& sup, std::string_view id, const pid& previous = {},
                       std::chrono::steady_clock::duration timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    auto kids = which_children(sup);
    if (!kids) return {};
    for (auto& c : *kids)
      if (c.id == id && c.process && c.process != previous) return c.process;
    std::this_thread::yield();
  } while (std::chrono::steady_clock::now() < deadline);
  return {};
}

/// A metadata value, copied.
using captured_value = std::variant<std::monostate, bool, std::int64_t, double, std::string, pid>;

/// One emission, copied.
struct captured_event {
  std::vector<std::string> name;                  ///< The event's name, part by part.
  std::map<std::string, double> measurements;     ///< Its measurements.
  std::map<std::string, captured_value> metadata;  ///< Its metadata, copied.
};

/// Attaches to `events` for its lifetime and keeps a copy of every
/// emission, from any thread.
class telemetry_capture {
 public:
  /// Starts capturing `events`.
  telemetry_capture(std::initializer_list<telemetry::event> events) : id_{next_id()} {
    (void)telemetry::attach_many(id_, events, [this](const telemetry::event& e, const telemetry::measurements& m,
                                                     const telemetry::metadata& md) { add(e, m, md); });
  }
  telemetry_capture(const telemetry_capture&) = delete;
  telemetry_capture& operator=(const telemetry_capture&) = delete;
  ~telemetry_capture() { (void)telemetry::detach(id_); }

  /// What was captured so far, in order.
  [[nodiscard]] std::vector<captured_event> events() const {
    std::lock_guard lock{mutex_};
    return events_;
  }
  /// How many emissions of `e` were captured.
  [[nodiscard]] std::size_t count(const telemetry::event& e) const {
    std::lock_guard lock{mutex_};
    return static_cast<std::size_t>(
        std::count_if(events_.begin(), events_.end(), [&](const captured_event& c) { return c.name == e.name(); }));
  }
  /// Waits until at least `n` events are captured; false after `timeout`.
  [[nodiscard]] bool wait_for(std::size_t n, std::chrono::steady_clock::duration timeout = std::chrono::seconds(5)) {
    std::unique_lock lock{mutex_};
    return cv_.wait_for(lock, timeout, [&] { return events_.size() >= n; });
  }
  /// Forgets what was captured.
  void clear() {
    std::lock_guard lock{mutex_};
    events_.clear();
  }

 private:
  static std::string next_id() {
    static std::atomic<std::uint64_t> n{0};
    return "otpp.testing.telemetry_capture." + std::to_string(n.fetch_add(1));
  }

  void add(const telemetry::event& e, const telemetry::measurements& m, const telemetry::metadata& md) {
    captured_event c;
    c.name = e.name();
    for (auto& x : m) c.measurements[std::string{x.key}] = x.value;
    for (auto& x : md) {
      c.metadata[std::string{x.key}] = std::visit(
          [](const auto& v) -> captured_value {
            if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string_view>) {
              return std::string{v};
            } else {
              return v;
            }
          },
          x.value.get());
    }
    {
      std::lock_guard lock{mutex_};
      events_.push_back(std::move(c));
    }
    cv_.notify_all();
  }

  std::string id_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<captured_event> events_;
};

}  // namespace otpp::testing
