#pragma once
// The timer service of a runtime: one thread that owns a timing wheel and
// turns due timers into messages.
//
// Why one owning thread fed by per-worker inboxes (Netty's HashedWheelTimer
// shape) rather than a wheel per worker: a timer is cancelled from whatever
// thread holds its ref, and a per-worker wheel would need a lock or a
// hand-back protocol for every foreign cancel, while processes migrate
// between workers anyway. Here scheduling is one pool allocation and one
// atomic exchange on the inbox of the caller's own worker slot (threads
// outside the runtime share one more), so no lock and no cache line is shared
// by all scheduling threads. Cancelling is one CAS on the timer itself (which
// decides fire-or-cancel exactly once) plus a push on the slot's cancel
// stack, from which the owner unlinks it. The owner sleeps until the next
// slot is due, so far-off timers cost no CPU; while it sleeps, cancelled
// timers wait at most `reclaim_interval` to have their memory returned.
// Timers whose destination died are swept out of the wheel (O(timers)) once
// enough processes have exited since the last sweep (a sixteenth of the
// timers): their memory comes back within a reclaim_interval or so, not at
// their deadline, at an amortised cost of a few checks per exit.
//
// Resolution is one tick (1 ms): a timer fires at the first tick boundary at
// or after its deadline, never early. A timer is `firing` while its message
// is being enqueued, and cancel waits that out: when cancel or read reports
// a timer fired, its message is already in the destination's mailbox. Timers due in the same pass fire in
// deadline order, ties in the order they reached the service.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "mpsc_queue.hpp"
#include "parking.hpp"
#include "platform.hpp"
#include "process_base.hpp"
#include "timer_wheel.hpp"

namespace otpp::detail {

class timer_service;
class runtime_core;

/// Whether no process of `rt` is running or queued (defined with the runtime).
inline bool runtime_quiescent(const runtime_core* rt) noexcept;
/// How many processes of the runtime have exited so far (defined with it).
inline std::uint64_t runtime_exits(const runtime_core* rt) noexcept;

/// Where timers take their time from. The runtime uses steady_clock unless
/// its config names another source (otpp/testing.hpp's virtual_clock).
class clock_source {
 public:
  clock_source() = default;
  clock_source(const clock_source&) = delete;
  clock_source& operator=(const clock_source&) = delete;
  virtual ~clock_source() = default;
  [[nodiscard]] virtual steady::time_point now() const noexcept = 0;
  /// Timer services driven by this clock register here, so that moving the
  /// clock can make them catch up.
  virtual void attach(timer_service*) {}
  virtual void detach(timer_service*) noexcept {}
};

/// One scheduled timer. Shared by the service (one reference from schedule
/// until it leaves the wheel for good) and by the timer_ref handles.
struct timer_node : mpsc_node, wheel_entry {
  // pending → done (fired, or stopped because its destination died)
  // pending → cancelled; an interval goes pending → firing → pending.
  static constexpr std::uint32_t pending = 0, firing = 1, done = 2, cancelled = 3;

  /// Delivers one message; `last` lets a one-shot move its payload out.
  /// Returns false if the destination is gone for good.
  using deliver_fn = bool (*)(timer_node*, bool last) noexcept;
  using destroy_fn = void (*)(timer_node*) noexcept;

  std::atomic<std::uint32_t> state{pending};
  std::atomic<std::uint32_t> refs{2};  // the service's and the first handle's
  std::atomic<std::int64_t> deadline{0};  // ns since the clock's epoch
  std::int64_t period = 0;  // ns between deliveries; 0 for a one-shot
  std::uint64_t seq = 0;    // arrival order at the service (owner thread)
  timer_node* cancel_next = nullptr;
  timer_service* service = nullptr;
  process_base* dest = nullptr;   // a reference; null when sent to a name
  process_base* owner = nullptr;  // a reference; an interval to a name stops with it
  deliver_fn deliver = nullptr;
  destroy_fn destroy = nullptr;

  void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      if (dest) dest->release();
      if (owner) owner->release();
      destroy(this);
    }
  }
  /// Not fired (for good) nor cancelled: only then is `service` alive for sure.
  [[nodiscard]] bool live() const noexcept {
    const std::uint32_t s = state.load(std::memory_order_acquire);
    return s == pending || s == firing;
  }
  /// The destination (or the owner of a named interval) has exited.
  [[nodiscard]] bool orphaned() const noexcept {
    return (dest != nullptr && !dest->alive()) || (owner != nullptr && !owner->alive());
  }
};

class timer_service {
  static constexpr std::uint32_t pending = timer_node::pending, firing = timer_node::firing, done = timer_node::done,
                                 cancelled = timer_node::cancelled;

 public:
  static constexpr std::chrono::milliseconds tick{1};
  static constexpr std::chrono::milliseconds reclaim_interval{250};

  timer_service(std::shared_ptr<clock_source> clock, unsigned slots, const runtime_core* rt)
      : clock_{std::move(clock)}, rt_{rt}, inboxes_(slots + 1), heads_(slots + 1) {
    for (std::size_t i = 0; i < inboxes_.size(); ++i) heads_[i] = inboxes_[i].queue.consumer_head();
    origin_ = now_ns();
    if (clock_) clock_->attach(this);
  }

  timer_service(const timer_service&) = delete;
  timer_service& operator=(const timer_service&) = delete;

  ~timer_service() {
    stop();
    if (clock_) clock_->detach(this);
    clear();
  }

  /// After stop(): frees every timer that never fired. Each is marked
  /// cancelled, so that a timer_ref outliving the runtime answers without
  /// touching the service. Waits out a schedule or cancel that began before
  /// stop() (they check stopping_ inside a per-inbox users count).
  void clear() noexcept {
    for (auto& in : inboxes_)
      while (in.users.load(std::memory_order_seq_cst) != 0) cpu_relax();
    auto drop = [](timer_node* t) {
      std::uint32_t s = pending;
      t->state.compare_exchange_strong(s, cancelled, std::memory_order_acq_rel);
      t->release();
    };
    drain_inboxes(drop);
    drain_cancels([](timer_node* t) { t->release(); });
    wheel_.clear([&](wheel_entry* e) { drop(static_cast<timer_node*>(e)); });
    for (const due_entry& d : due_) drop(d.t);
    due_.clear();
  }

  /// Timers scheduled and not yet fired, cancelled or swept (as of the
  /// service thread's last pass).
  [[nodiscard]] std::size_t pending_count() const noexcept { return pending_.load(std::memory_order_acquire); }

  [[nodiscard]] std::int64_t now_ns() const noexcept {
    const auto t = clock_ ? clock_->now() : steady::now();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }
  /// The runtime whose worker slots own inboxes 0..slots-1.
  [[nodiscard]] const runtime_core* runtime() const noexcept { return rt_; }
  /// The inbox shared by threads that are not this runtime's workers.
  [[nodiscard]] unsigned outsider_inbox() const noexcept { return static_cast<unsigned>(inboxes_.size() - 1); }

  /// Any thread. Hands `t` (deadline set, both references counted) to the
  /// service. `inbox` is the caller's worker slot, or slots for outsiders.
  /// Returns false (dropping the service's reference) after shutdown.
  bool schedule(timer_node* t, unsigned inbox) noexcept {
    inbox_user user{inboxes_[inbox]};
    if (stopping_.load(std::memory_order_seq_cst)) {
      t->state.store(done, std::memory_order_relaxed);
      t->release();
      return false;
    }
    try {
      ensure_thread();
    } catch (...) {
      t->state.store(done, std::memory_order_relaxed);  // no thread to be had: never fires
      t->release();
      return false;
    }
    t->service = this;
    inboxes_[inbox].queue.push(t);  // seq_cst: ordered before the load below
    const std::int64_t due = tick_of(t->deadline.load(std::memory_order_relaxed));
    std::int64_t w = next_wake_.load(std::memory_order_seq_cst);
    while (due < w) {
      // The thread sleeps past this timer's tick: wake it (once; `awake`
      // stops the other schedulers from waking it again).
      if (next_wake_.compare_exchange_weak(w, awake, std::memory_order_seq_cst)) {
        wake();
        break;
      }
    }
    return true;
  }

  /// Any thread. Stops `t` if it has not fired: returns the time that was left.
  std::optional<std::chrono::nanoseconds> cancel(timer_node* t, unsigned inbox) noexcept {
    const bool orphan = t->orphaned();
    for (;;) {
      std::uint32_t s = t->state.load(std::memory_order_acquire);
      if (s == firing) {  // delivering right now: wait until the message is in the mailbox
        cpu_relax();
        continue;
      }
      if (s != pending) return std::nullopt;
      if (!t->state.compare_exchange_weak(s, cancelled, std::memory_order_acq_rel)) continue;
      // Ours: the owner thread will unlink and free it; after stop(), clear() does.
      inbox_user user{inboxes_[inbox]};
      if (stopping_.load(std::memory_order_seq_cst)) return std::nullopt;
      t->add_ref();
      auto& top = inboxes_[inbox].cancels;
      timer_node* head = top.load(std::memory_order_relaxed);
      do {
        t->cancel_next = head;
      } while (!top.compare_exchange_weak(head, t, std::memory_order_release, std::memory_order_relaxed));
      if (orphan) return std::nullopt;  // its destination died: it was as good as cancelled
      return remaining(t);
    }
  }

  /// Any thread. The time left before `t` fires (the next delivery of an
  /// interval), or nothing if it has fired, been cancelled, or lost its
  /// destination.
  std::optional<std::chrono::nanoseconds> read(const timer_node* t) const noexcept {
    const std::uint32_t s = t->state.load(std::memory_order_acquire);
    // A one-shot that is firing has sent (or is sending) its message: its
    // receiver may be handling it already, and must not read it as live.
    if (s == firing && t->period == 0) return std::nullopt;
    if ((s != pending && s != firing) || t->orphaned()) return std::nullopt;
    return remaining(t);
  }

  /// Virtual clock: returns once every timer due at the clock's current time
  /// has been delivered. Returns whether any was.
  bool catch_up() noexcept {
    if (!started_.load(std::memory_order_acquire)) return false;
    const std::uint64_t before = delivered_.load(std::memory_order_acquire);
    const std::uint32_t target = sync_requested_.fetch_add(1, std::memory_order_acq_rel) + 1;
    wake();
    for (;;) {
      const std::uint32_t seen = sync_done_.load(std::memory_order_acquire);
      if (static_cast<std::int32_t>(seen - target) >= 0 || stopping_.load(std::memory_order_acquire)) break;
      park(sync_done_, seen, steady::now() + std::chrono::milliseconds(10));
    }
    return delivered_.load(std::memory_order_acquire) != before;
  }

  /// Virtual clock: waits (up to `limit`) until the runtime has nothing
  /// running or queued. Returns false on timeout.
  bool await_quiescence(std::chrono::milliseconds limit) const noexcept {
    const auto deadline = steady::now() + limit;
    for (unsigned i = 0; !runtime_quiescent(rt_); ++i) {
      if (steady::now() >= deadline) return false;
      if (i < 64) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    return true;
  }

  /// Stops the thread; timers not yet fired never fire. Idempotent.
  void stop() noexcept {
    stopping_.store(true, std::memory_order_seq_cst);
    std::lock_guard lock{start_mutex_};
    if (thread_.joinable()) {
      wake();
      thread_.join();
    }
  }

 private:
  static constexpr std::int64_t awake = -1;
  static constexpr std::int64_t never = INT64_MAX;
  static constexpr std::int64_t tick_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tick).count();

  struct alignas(cache_line) inbox {
    mpsc_queue queue;
    std::atomic<timer_node*> cancels{nullptr};
    std::atomic<std::uint32_t> users{0};  // schedules and cancels in progress
  };

  // Counts a thread in while it may push onto an inbox (Dekker with clear():
  // the count is raised before stopping_ is read).
  class inbox_user {
   public:
    explicit inbox_user(inbox& i) noexcept : i_{i} { i_.users.fetch_add(1, std::memory_order_seq_cst); }
    ~inbox_user() { i_.users.fetch_sub(1, std::memory_order_release); }
    inbox_user(const inbox_user&) = delete;
    inbox_user& operator=(const inbox_user&) = delete;

   private:
    inbox& i_;
  };

  // A deadline's tick: the first boundary at or after it.
  [[nodiscard]] std::int64_t tick_of(std::int64_t deadline) const noexcept {
    const std::int64_t d = deadline - origin_;
    if (d <= 0) return 0;
    return (d + tick_ns - 1) / tick_ns;
  }
  // The tick that has fully passed at `now`.
  [[nodiscard]] std::int64_t passed_tick(std::int64_t now) const noexcept {
    const std::int64_t d = now - origin_;
    return d <= 0 ? 0 : d / tick_ns;
  }

  std::optional<std::chrono::nanoseconds> remaining(const timer_node* t) const noexcept {
    const std::int64_t left = t->deadline.load(std::memory_order_relaxed) - now_ns();
    return std::chrono::nanoseconds{left > 0 ? left : 0};
  }

  void wake() noexcept {
    wake_word_.fetch_add(1, std::memory_order_seq_cst);
    unpark_one(wake_word_);
  }

  void ensure_thread() {
    if (started_.load(std::memory_order_acquire)) return;
    std::lock_guard lock{start_mutex_};
    if (started_.load(std::memory_order_relaxed) || stopping_.load(std::memory_order_acquire)) return;
    thread_ = std::thread([this] { run(); });
    started_.store(true, std::memory_order_release);
  }

  template <class F>
  void drain_inboxes(F&& f) noexcept {
    for (std::size_t i = 0; i < inboxes_.size(); ++i) {
      auto& q = inboxes_[i].queue;
      while (auto* n = q.pop(heads_[i])) f(static_cast<timer_node*>(n));
    }
  }

  template <class F>
  void drain_cancels(F&& f) noexcept {
    for (auto& in : inboxes_) {
      timer_node* t = in.cancels.exchange(nullptr, std::memory_order_acquire);
      while (t) {
        timer_node* next = t->cancel_next;
        f(t);
        t = next;
      }
    }
  }

  [[nodiscard]] bool inboxes_empty() const noexcept {
    for (std::size_t i = 0; i < inboxes_.size(); ++i)
      if (!inboxes_[i].queue.empty(heads_[i])) return false;
    return true;
  }

  void run() noexcept {
    std::uint32_t synced = 0;  // catch_up asks nothing before the thread exists
    for (;;) {
      next_wake_.store(awake, std::memory_order_seq_cst);
      const std::uint32_t sync = sync_requested_.load(std::memory_order_acquire);
      const std::int64_t now = now_ns();
      const std::int64_t now_tick = passed_tick(now);
      drain_inboxes([&](timer_node* t) { admit(t, now_tick); });
      drain_cancels([&](timer_node* t) {
        if (t->in_wheel()) {
          wheel_.remove(t);
          t->release();  // the wheel's reference
        }
        t->release();  // the cancel stack's
      });
      wheel_.advance(static_cast<std::uint64_t>(now_tick), [&](wheel_entry* e) { add_due(static_cast<timer_node*>(e)); });
      fire_due(now_tick);
      sweep_orphans(now);
      pending_.store(wheel_.size(), std::memory_order_release);
      if (sync != synced) {
        synced = sync;
        sync_done_.store(sync, std::memory_order_release);
        unpark_all(sync_done_);
      }
      if (stopping_.load(std::memory_order_acquire)) return;

      const auto next = wheel_.next_due();
      const std::int64_t next_tick = next ? static_cast<std::int64_t>(*next) : never;
      const std::uint32_t epoch = wake_word_.load(std::memory_order_seq_cst);
      next_wake_.store(next_tick, std::memory_order_seq_cst);
      // Re-check after publishing when we sleep till (Dekker with schedule()),
      // and stop() after reading the epoch: its wake may have come between
      // the check above and that read, and would be lost on a sleep without
      // a deadline.
      if (stopping_.load(std::memory_order_seq_cst)) return;
      if (!inboxes_empty() || sync_requested_.load(std::memory_order_seq_cst) != synced) continue;
      if (next_tick <= now_tick) continue;
      if (clock_) {
        park(wake_word_, epoch);  // virtual time moves only through catch_up
        continue;
      }
      if (!next) {
        park(wake_word_, epoch);
        continue;
      }
      const auto due_at = steady::time_point{std::chrono::nanoseconds{origin_ + next_tick * tick_ns}};
      park(wake_word_, epoch, std::min(due_at, steady::now() + reclaim_interval));
    }
  }

  // Out of the wheel with every timer whose destination has exited, when
  // enough processes have exited since the last sweep to pay for the walk.
  void sweep_orphans(std::int64_t now) noexcept {
    const std::uint64_t exits = runtime_exits(rt_);
    if (exits - swept_at_exits_ < std::max<std::uint64_t>(64, wheel_.size() / 16)) return;
    if (now - last_sweep_ < std::chrono::duration_cast<std::chrono::nanoseconds>(reclaim_interval).count()) return;
    swept_at_exits_ = exits;
    last_sweep_ = now;
    wheel_.sweep([](wheel_entry* e) { return static_cast<timer_node*>(e)->orphaned(); },
                 [](wheel_entry* e) {
                   auto* t = static_cast<timer_node*>(e);
                   std::uint32_t s = pending;
                   t->state.compare_exchange_strong(s, done, std::memory_order_acq_rel);  // else a cancel got there first
                   t->release();  // the wheel's reference; a cancel's, if any, is the cancel stack's
                 });
  }

  // A new timer: into the wheel, or straight to the due list.
  void admit(timer_node* t, std::int64_t now_tick) noexcept {
    t->seq = next_seq_++;
    if (t->state.load(std::memory_order_acquire) != pending) {  // cancelled before it arrived
      t->release();
      return;
    }
    const std::int64_t due = tick_of(t->deadline.load(std::memory_order_relaxed));
    t->when = static_cast<std::uint64_t>(due);
    if (due <= now_tick || static_cast<std::uint64_t>(due) <= wheel_.now()) {
      add_due(t);
    } else {
      wheel_.insert(t);
    }
  }

  // The sort key is copied out of the node while it is in cache: sorting
  // then touches no node.
  struct due_entry {
    std::int64_t deadline;
    std::uint64_t seq;
    timer_node* t;
  };

  void add_due(timer_node* t) {
    try {
      due_.push_back({t->deadline.load(std::memory_order_relaxed), t->seq, t});
    } catch (...) {
      t->release();  // out of memory in the timer thread: this timer is lost
    }
  }

  void fire_due(std::int64_t now_tick) noexcept {
    if (due_.empty()) return;
    auto earlier = [](const due_entry& a, const due_entry& b) {
      return a.deadline != b.deadline ? a.deadline < b.deadline : a.seq < b.seq;
    };
    if (!std::is_sorted(due_.begin(), due_.end(), earlier)) std::sort(due_.begin(), due_.end(), earlier);
    for (const due_entry& d : due_) {
      timer_node* t = d.t;
      if (t->period == 0) {
        // `firing` until the message is in the mailbox: a cancel that loses
        // the race returns only once the message can be seen there.
        const bool orphan = t->orphaned();  // a dead destination cancels its timers
        std::uint32_t s = pending;
        if (t->state.compare_exchange_strong(s, firing, std::memory_order_acq_rel)) {
          if (!orphan) t->deliver(t, true);
          t->state.store(done, std::memory_order_release);
          if (!orphan) delivered_.fetch_add(1, std::memory_order_release);
        }
        t->release();
        continue;
      }
      fire_interval(t, now_tick);
    }
    due_.clear();
  }

  // Fixed rate: the next deadline is the previous one plus the period, so a
  // late delivery does not shift the ones after it; missed periods are
  // delivered at once.
  void fire_interval(timer_node* t, std::int64_t now_tick) noexcept {
    for (;;) {
      std::uint32_t s = pending;
      if (t->orphaned() || !t->state.compare_exchange_strong(s, firing, std::memory_order_acq_rel)) {
        s = pending;
        t->state.compare_exchange_strong(s, done, std::memory_order_acq_rel);
        t->release();
        return;
      }
      const bool alive = t->deliver(t, false);
      delivered_.fetch_add(1, std::memory_order_release);
      const std::int64_t next = t->deadline.load(std::memory_order_relaxed) + t->period;
      t->deadline.store(next, std::memory_order_relaxed);
      t->state.store(alive ? pending : done, std::memory_order_release);
      if (!alive) {
        t->release();
        return;
      }
      const std::int64_t due = tick_of(next);
      if (due > now_tick) {
        t->when = static_cast<std::uint64_t>(due);
        wheel_.insert(t);
        return;
      }
    }
  }

  std::shared_ptr<clock_source> clock_;
  const runtime_core* rt_;
  std::int64_t origin_ = 0;
  std::vector<inbox> inboxes_;

  alignas(cache_line) std::atomic<std::int64_t> next_wake_{awake};
  std::atomic<std::uint32_t> wake_word_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> started_{false};

  alignas(cache_line) std::atomic<std::uint32_t> sync_requested_{0};
  std::atomic<std::uint32_t> sync_done_{0};
  std::atomic<std::uint64_t> delivered_{0};

  // Owner thread only.
  alignas(cache_line) std::vector<mpsc_node*> heads_;
  timer_wheel wheel_;
  std::vector<due_entry> due_;
  std::uint64_t next_seq_ = 0;
  std::uint64_t swept_at_exits_ = 0;
  std::int64_t last_sweep_ = 0;
  std::atomic<std::size_t> pending_{0};

  std::mutex start_mutex_;
  std::thread thread_;
};

}  // namespace otpp::detail
