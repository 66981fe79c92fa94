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
// decides fire-or-cancel exactly once), plus, once the service has taken the
// timer from its inbox, a push on the slot's cancel stack, from which the
// owner unlinks it (before that, the owner drops it as it takes it). The
// owner sleeps until the next slot is due, so far-off timers cost no CPU;
// while it sleeps, cancelled timers wait at most `reclaim_interval` to have
// their memory returned.
// Timers whose destination died are swept out of the wheel (O(timers)) once
// enough processes have exited since the last sweep (a sixteenth of the
// timers), and at the latest four reclaim_intervals after any exit: their
// memory comes back within a second or so, not at their deadline, at an
// amortised cost of a few checks per exit.
//
// Resolution is one tick (1 ms): a timer fires at the first tick boundary at
// or after its deadline, never early. A timer is `firing` while its message
// is being enqueued, and cancel waits that out: when cancel or read reports
// a timer fired, its message is already in the destination's mailbox. Timers due in the same pass fire in
// deadline order, ties in the order they reached the service.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "../clock.hpp"
#include "coarse_clock.hpp"
#include "mpsc_queue.hpp"
#include "parking.hpp"
#include "platform.hpp"
#include "process_base.hpp"
#include "config.hpp"
#include "timer_wheel.hpp"

namespace otpp::detail {

class timer_service;
class runtime_core;

/// Whether no process of `rt` is running or queued (defined with the runtime).
bool runtime_quiescent(const runtime_core* rt) noexcept;
/// How many processes of the runtime have exited so far (defined with it).
std::uint64_t runtime_exits(const runtime_core* rt) noexcept;

struct timer_node;

/// How a delivery went: no_memory leaves the payload as it was, so that
/// the timer can try again at the next tick.
enum class timer_delivery : unsigned char { delivered, gone, no_memory };

/// What a kind of timer does: deliver one message (`last` lets a one-shot
/// move its payload out; gone if the destination is gone for good), free
/// the node, and name the service it was set on (for cancel_timer and
/// read_timer; the runtime's own timers, never handed out, have none).
struct timer_ops {
  timer_delivery (*deliver)(timer_node*, bool last) noexcept;
  void (*destroy)(timer_node*) noexcept;
  timer_service* (*service)(const timer_node*) noexcept = nullptr;
};

/// Timer kinds by number, so that a node keeps 4 bytes instead of a
/// pointer: one entry per kind of timer a program instantiates (message
/// type, destination kind, one-shot or interval), registered on first use.
inline constexpr std::uint32_t timer_kinds_max = 1u << 14;
inline const timer_ops* timer_kinds[timer_kinds_max];
inline std::atomic<std::uint32_t> timer_kind_count{0};

/// The number of `ops` (see timer_kind_of). Throws std::length_error past
/// timer_kinds_max kinds.
inline std::uint32_t register_timer_kind(const timer_ops* ops) {
  const std::uint32_t k = timer_kind_count.fetch_add(1, std::memory_order_relaxed);
  if (k >= timer_kinds_max)
    throw std::length_error("otpp: more than 16384 kinds of timer (message types) in one program");
  timer_kinds[k] = ops;  // published by the static's guard, before any node of the kind exists
  return k;
}

/// The number of timer kind `T` (its `static constexpr timer_ops table`),
/// registered on the first call.
template <class T>
std::uint32_t timer_kind_of() {
  static const std::uint32_t k = register_timer_kind(&T::table);
  return k;
}

/// One scheduled timer. Shared by the service (one reference from schedule
/// until it leaves the wheel for good) and by the timer_ref handles.
///
/// Kept to 56 bytes (a one-shot with a message of up to 8 bytes is a 64-byte
/// block): a burst of a million timers is a million fresh blocks, and on a
/// virtualised host their first touch costs more than setting them (see
/// otpp_bench timers_schedule_1m). So the kind is a 4-byte number, the
/// state one byte, the arrival number 32 bits, all in the wheel entry's
/// padding; a cancel links the node through its inbox link, free once the
/// service has taken it; an interval keeps its period in a derived part;
/// one pointer holds the process a timer depends on; the wheel works out the
/// tick from the deadline instead of keeping it; and the service is found
/// through that process (or, for a name, kept with the name).
struct timer_node : mpsc_node, wheel_entry {
  // The low bits: pending → done (fired, or stopped because its destination
  // died); pending → cancelled; an interval goes pending → firing → pending.
  // `taken` is set once, by the service as it takes the timer from its
  // inbox: from then on a cancel pushes it onto a cancel stack through its
  // inbox link (before, the service drops it as it takes it).
  static constexpr std::uint8_t pending = 0, firing = 1, done = 2, cancelled = 3, phase = 3, taken = 4;

  bool interval = false;  // an interval_timer_node: it has a period
  std::atomic<std::uint8_t> state{pending};
  std::atomic<std::uint32_t> refs{2};  // the service's and the first handle's
  std::uint32_t seq = 0;                // arrival order at the service (owner thread), wrapping
  std::uint32_t kind = 0;               // its timer_ops, in timer_kinds
  // ns since the clock's epoch. Negative while the service has yet to read
  // the start itself (see timer_service::schedule_after): minus one minus
  // the delay, and `seq` holds the coarse clock at the call, in µs.
  std::atomic<std::int64_t> deadline{0};
  // A reference: the destination, or for an interval sent to a name the
  // process that set it (it stops with it); null for a one-shot to a name.
  process_base* dest = nullptr;

  [[nodiscard]] const timer_ops& ops() const noexcept { return *timer_kinds[kind]; }
  void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      if (dest) dest->release();
      ops().destroy(this);
    }
  }
  timer_delivery deliver(bool last) noexcept { return ops().deliver(this, last); }
  /// The service it was set on; only while live().
  [[nodiscard]] timer_service* service() const noexcept { return ops().service(this); }
  /// ns between deliveries; 0 for a one-shot.
  [[nodiscard]] std::int64_t period() const noexcept;
  /// Not fired (for good) nor cancelled: only then is service() alive for sure.
  [[nodiscard]] bool live() const noexcept {
    const std::uint8_t s = state.load(std::memory_order_acquire) & phase;
    return s == pending || s == firing;
  }
  /// Moves the phase `from` → `to`, keeping `taken`; false if it was not `from`.
  bool move(std::uint8_t from, std::uint8_t to) noexcept {
    std::uint8_t s = state.load(std::memory_order_relaxed);
    do {
      if ((s & phase) != from) return false;
    } while (!state.compare_exchange_weak(s, static_cast<std::uint8_t>((s & taken) | to), std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
    return true;
  }
  /// Sets the phase, keeping `taken`: only by the one who may (the firing thread).
  void set_phase(std::uint8_t to, std::memory_order order) noexcept {
    state.store(static_cast<std::uint8_t>((state.load(std::memory_order_relaxed) & taken) | to), order);
  }
  /// The destination (or the setter of an interval sent to a name) has exited.
  [[nodiscard]] bool orphaned() const noexcept { return dest != nullptr && !dest->alive(); }
};

static_assert(sizeof(void*) != 8 || sizeof(timer_node) <= 56, "timer_node grew: a million timers are a million of them");

/// A timer that repeats.
struct interval_timer_node : timer_node {
  interval_timer_node() noexcept { interval = true; }
  std::int64_t every = 0;  // ns between deliveries
};

inline std::int64_t timer_node::period() const noexcept {
  return interval ? static_cast<const interval_timer_node*>(this)->every : 0;
}

class timer_service final : public clock_listener {
  static constexpr std::uint8_t pending = timer_node::pending, firing = timer_node::firing, done = timer_node::done,
                                cancelled = timer_node::cancelled, taken = timer_node::taken;

 public:
  static constexpr std::chrono::milliseconds tick{1};
  static constexpr std::chrono::milliseconds reclaim_interval{250};

  timer_service(std::shared_ptr<otpp::clock_source> clock, unsigned slots, const runtime_core* rt);

  timer_service(const timer_service&) = delete;
  timer_service& operator=(const timer_service&) = delete;

  ~timer_service();

  /// After stop(): frees every timer that never fired. Each is marked
  /// cancelled, so that a timer_ref outliving the runtime answers without
  /// touching the service. Waits out a schedule or cancel that began before
  /// stop() (they check stopping_ inside a per-inbox users count).
  void clear() noexcept;

  /// Timers scheduled and not yet fired, cancelled or swept (as of the
  /// service thread's last pass).
  [[nodiscard]] std::size_t pending_count() const noexcept { return pending_.load(std::memory_order_acquire); }

  [[nodiscard]] std::int64_t now_ns() const noexcept {
    const auto t = clock_ ? clock_->now() : steady::now();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }
  /// now_ns() + delay for a deadline; on the real clock a long delay reads
  /// the coarse clock (see now_for_delay_ns): never early, a few ns a call.
  [[nodiscard]] std::int64_t due_after_ns(std::int64_t delay) const noexcept {
    if (clock_) return now_ns() + delay;
    return now_for_delay_ns(delay) + delay;
  }

  // -- stamps: when an awaited call was sent, without reading a clock ------------
  // A call's deadline is set on every call and reached by almost none, yet
  // reading even the coarse clock for it was ~5.5 of the ~79 ns of a
  // co_awaited call between processes (otpp_bench call_process_async_ns,
  // against a build with a constant deadline). While calls read it, this
  // thread publishes a stamp every `stamp_period` (its start, read before it
  // is published) and records when each one ended (read after the next was
  // published): a call that read a stamp was sent between the two. Its due
  // is the stamp's start plus the timeout until the stamp has ended, then
  // its end plus the timeout: never early, at most a period (plus this
  // thread's own lateness) late. Without readers for `stamp_idle_periods`
  // periods the thread stops publishing; calls meanwhile read the coarse
  // clock, and ask for stamps again.

  /// When an awaited call sent now with timeout `delay` (ns) falls due: on
  /// the real clock, for a timeout of a second or more and no more than
  /// half the span the stamps are kept for, the current stamp; else the
  /// clock (see due_after_ns).
  [[nodiscard]] wait_due call_due(std::int64_t delay) noexcept {
    const bool stampable = delay >= stamp_min_delay && delay <= stamp_max_delay;
    if (stampable) [[likely]] {
      // One cache line, written once a period: a virtual clock has no live stamp.
      const std::uint64_t w = stamp_word_.load(std::memory_order_relaxed);
      if ((w & stamp_live) != 0) [[likely]] {
        mark_stamp_read();
        return {stamp_start_ns(w) + delay, w};
      }
    }
    return call_due_by_clock(delay, stampable);
  }
  /// Where `stamp` began (ns on the steady clock's epoch): no call that read
  /// it was sent before.
  [[nodiscard]] std::int64_t stamp_start_ns(std::uint64_t stamp) const noexcept {
    return stamp_origin_ + static_cast<std::int64_t>(stamp >> stamp_start_shift) * 1000;
  }
  /// Where `stamp` ended: every call that read it was sent by then. -1
  /// while it is the current one; `now` once its record has been reused
  /// (it ended long ago) or is being written.
  [[nodiscard]] std::int64_t stamp_end_ns(std::uint64_t stamp, std::int64_t now) const noexcept {
    const std::uint64_t tag = stamp & stamp_tag_mask;
    const std::uint64_t e = stamp_ends_[tag & (stamp_records - 1)].load(std::memory_order_acquire);
    if ((e & stamp_tag_mask) == tag) return stamp_origin_ + static_cast<std::int64_t>(e >> stamp_tag_bits) * 1000;
    if ((stamp_word_.load(std::memory_order_acquire) & stamp_tag_mask) == tag) return -1;
    return now;
  }
  /// Whether calls find a stamp to read (for tests).
  [[nodiscard]] bool stamps_live() const noexcept {
    return (stamp_word_.load(std::memory_order_acquire) & stamp_live) != 0;
  }
  /// How often stamps are published while calls read them.
  static constexpr std::int64_t stamp_period = 4'000'000;
  /// The runtime whose worker slots own inboxes 0..slots-1.
  [[nodiscard]] const runtime_core* runtime() const noexcept { return rt_; }
  /// The inbox shared by threads that are not this runtime's workers.
  [[nodiscard]] unsigned outsider_inbox() const noexcept { return static_cast<unsigned>(inboxes_.size() - 1); }

  /// Any thread. Hands `t` (deadline set, both references counted) to the
  /// service. `inbox` is the caller's worker slot, or slots for outsiders.
  /// Returns false (dropping the service's reference) after shutdown.
  bool schedule(timer_node* t, unsigned inbox_index) noexcept;

  /// Any thread. As schedule, for a one-shot due `delay` ns from now, with
  /// the deadline worked out here. Reading the exact clock costs ~28 ns on a
  /// virtualised host, a third of setting a timer, so while the service's
  /// thread is in a pass (it takes the timer within microseconds) that
  /// thread reads the start itself, once for a batch of timers, after
  /// taking them: a start read after the call can only be late. The coarse
  /// clock at the call plus four ticks caps it, so it is never more than
  /// ~16 ms late even behind a long pass. A delay of 256 kernel ticks or
  /// more starts from that cap (as due_after_ns); otherwise, and on a
  /// virtual clock, the start is the exact clock at the call.
  bool schedule_after(timer_node* t, std::int64_t delay, unsigned inbox_index) noexcept;

  /// Any thread. Stops `t` if it has not fired: returns the time that was left.
  std::optional<std::chrono::nanoseconds> cancel(timer_node* t, unsigned inbox_index) noexcept;

  /// Any thread. The time left before `t` fires (the next delivery of an
  /// interval), or nothing if it has fired, been cancelled, or lost its
  /// destination.
  std::optional<std::chrono::nanoseconds> read(const timer_node* t) const noexcept;

  /// Virtual clock: returns once every timer due at the clock's current time
  /// has been delivered. Returns whether any was.
  bool catch_up() noexcept override;

  /// Virtual clock: waits (up to `limit`) until the runtime has nothing
  /// running or queued. Returns false on timeout.
  [[nodiscard]] bool await_quiescence(std::chrono::milliseconds limit) const noexcept override;

  /// Stops the thread; timers not yet fired never fire. Idempotent.
  void stop() noexcept;

 private:
  static constexpr std::int64_t awake = -1;
  static constexpr std::int64_t never = INT64_MAX;
  static constexpr std::int64_t tick_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tick).count();

  struct alignas(cache_line) inbox {
    mpsc_queue queue;
    std::atomic<timer_node*> cancels{nullptr};
    std::atomic<std::uint32_t> users{0};  // schedules and cancels in progress
  };

  // Counts an outside thread in while it may push onto the outsiders' inbox
  // (Dekker with clear(): the count is raised before stopping_ is read). A
  // worker slot's inbox needs no count, and its pushes no locked increment
  // and decrement: clear() runs only once every worker thread has been
  // joined (or from the runtime's destructor, after its last thread ended).
  class inbox_user {
   public:
    inbox_user(inbox& i, bool outsider) noexcept : i_{outsider ? &i : nullptr} {
      if (i_) i_->users.fetch_add(1, std::memory_order_seq_cst);
    }
    ~inbox_user() {
      if (i_) i_->users.fetch_sub(1, std::memory_order_release);
    }
    inbox_user(const inbox_user&) = delete;
    inbox_user& operator=(const inbox_user&) = delete;

   private:
    inbox* i_;
  };

  // A deadline's tick: the first boundary at or after it.
  [[nodiscard]] std::int64_t tick_of(std::int64_t deadline) const noexcept {
    const std::int64_t d = deadline - origin_;
    if (d <= 0) return 0;
    return (d + tick_ns - 1) / tick_ns;
  }
  // The tick `t` is due at: what it enters the wheel with, and what the
  // wheel asks for again as it cascades (the two must agree).
  [[nodiscard]] std::int64_t due_tick(const timer_node* t) const noexcept {
    return tick_of(t->deadline.load(std::memory_order_relaxed));
  }
  // The tick that has fully passed at `now`.
  [[nodiscard]] std::int64_t passed_tick(std::int64_t now) const noexcept {
    const std::int64_t d = now - origin_;
    return d <= 0 ? 0 : d / tick_ns;
  }

  std::optional<std::chrono::nanoseconds> remaining(const timer_node* t) const noexcept {
    const std::int64_t deadline = t->deadline.load(std::memory_order_relaxed);
    if (!clock_) {
      // Not yet taken by the service, microseconds after the call: the delay.
      if (deadline < 0) return std::chrono::nanoseconds{-1 - deadline};
      // A second or more left (256 kernel ticks): the coarse clock, at most
      // a tick behind, is exact enough (as for deadlines) at a seventh of
      // the exact clock's cost.
      const std::int64_t coarse_left = deadline - coarse_now_ns();
      if (coarse_left >= 256 * coarse_tick_ns()) return std::chrono::nanoseconds{coarse_left};
    }
    const std::int64_t left = deadline - now_ns();
    return std::chrono::nanoseconds{left > 0 ? left : 0};
  }

  void wake() noexcept {
    wake_word_.fetch_add(1, std::memory_order_seq_cst);
    unpark_one(wake_word_);
  }

  // A stamp: its start in µs since origin_ (rounded down), a bit saying
  // calls may use it, and the low 16 bits of its number (its tag). An
  // end record: the end in µs (rounded up) above the tag.
  static constexpr unsigned stamp_tag_bits = 16;
  static constexpr std::uint64_t stamp_tag_mask = (std::uint64_t{1} << stamp_tag_bits) - 1;
  static constexpr std::uint64_t stamp_live = std::uint64_t{1} << stamp_tag_bits;
  static constexpr unsigned stamp_start_shift = stamp_tag_bits + 1;
  // The ends of the last 4,096 stamps: at least 16 s, since a stamp lasts
  // at least a period. A call's due is checked when its timer fires, at
  // its start plus the timeout: within that span, for timeouts up to half.
  static constexpr std::size_t stamp_records = 4096;
  static constexpr std::int64_t stamp_max_delay = stamp_records / 2 * stamp_period;
  // At most a period late: under 0.4% of a timeout of a second or more.
  static constexpr std::int64_t stamp_min_delay = 256 * stamp_period;
  static constexpr unsigned stamp_idle_periods = 16;

  // Out of line, so that call_due inlines into every call: no live stamp.
  [[gnu::noinline]] wait_due call_due_by_clock(std::int64_t delay, bool stampable) noexcept {
    if (stampable && !clock_) mark_stamp_read();  // the thread starts publishing at its next pass
    return {due_after_ns(delay), 0};
  }
  // A store once a period at most: the line stays shared between readers.
  // Not live, it asks for stamps without waking the thread (a system call
  // on the call's path): it comes within reclaim_interval while timers are
  // set, and at once when the call's own deadline timer is the first.
  void mark_stamp_read() noexcept {
    if (!stamp_used_.load(std::memory_order_relaxed)) stamp_used_.store(true, std::memory_order_relaxed);
  }
  // Owner thread: publish the next stamp when one is due.
  void tick_stamps(std::int64_t now) noexcept;
  void publish_stamp(std::int64_t now, bool live) noexcept;

  void ensure_thread();

  // Hands `t` to the service's thread, then `wake_if(w)` decides from the
  // thread's planned wake (read after the push) whether to wake it.
  template <class WakeIf>
  bool hand_over(timer_node* t, unsigned inbox_index, WakeIf&& wake_if) noexcept;

  // Takes the new timers, in arrival order per inbox, into the wheel (or
  // the due list); those the service stamps get one clock reading per batch,
  // taken after the batch was popped.
  void admit_arrivals(std::int64_t now_tick) noexcept;

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
        auto* next = static_cast<timer_node*>(t->next_.load(std::memory_order_relaxed));
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

  void run() noexcept;

  // Out of the wheel with every timer whose destination has exited, when
  // enough processes have exited since the last sweep to pay for the walk,
  // or a few reclaim intervals after any exit.
  void sweep_orphans() noexcept;

  // A new timer: into the wheel, or straight to the due list.
  void admit(timer_node* t, std::int64_t now_tick) noexcept;

  // The sort key is copied out of the node while it is in cache: sorting
  // then touches no node.
  struct due_entry {
    std::int64_t deadline;
    std::uint64_t seq;
    timer_node* t;
  };

  void add_due(timer_node* t) noexcept;
  void fire_one(timer_node* t, std::int64_t now_tick) noexcept;

  void fire_due(std::int64_t now_tick) noexcept;

  // Fixed rate: the next deadline is the previous one plus the period, so a
  // late delivery does not shift the ones after it; missed periods are
  // delivered at once.
  void fire_interval(timer_node* t, std::int64_t now_tick) noexcept;
  void retry_next_tick(timer_node* t, std::int64_t now_tick) noexcept;

  std::shared_ptr<otpp::clock_source> clock_;
  const runtime_core* rt_;
  std::int64_t origin_ = 0;
  std::vector<inbox> inboxes_;

  alignas(cache_line) std::atomic<std::int64_t> next_wake_{awake};
  std::atomic<std::uint32_t> wake_word_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> started_{false};

  // Read by every awaited call, written once a period.
  alignas(cache_line) std::atomic<std::uint64_t> stamp_word_{0};
  std::atomic<bool> stamp_used_{false};
  std::int64_t stamp_origin_ = 0;  // origin_
  std::unique_ptr<std::atomic<std::uint64_t>[]> stamp_ends_{new std::atomic<std::uint64_t>[stamp_records]{}};

  alignas(cache_line) std::atomic<std::uint32_t> sync_requested_{0};
  std::atomic<std::uint32_t> sync_done_{0};
  std::atomic<std::uint64_t> delivered_{0};

  // Owner thread only.
  static constexpr std::size_t arrival_batch = 256;
  alignas(cache_line) std::vector<mpsc_node*> heads_;
  std::array<timer_node*, arrival_batch> arrivals_{};
  timer_wheel wheel_;
  std::vector<due_entry> due_;
  timer_node* due_overflow_ = nullptr;  // due, with no memory to list them in due_ (linked through wnext)
  std::uint64_t next_seq_ = 0;
  std::uint64_t swept_at_exits_ = 0;
  std::int64_t last_sweep_ = 0;  // ns on the steady clock, whatever clock the timers follow
  std::uint64_t stamp_seq_ = 0;
  std::int64_t stamp_start_ = 0;  // ns, of the current stamp
  bool stamp_on_ = false;         // publishing
  unsigned stamp_idle_ = 0;       // periods in a row no call read
  std::atomic<std::size_t> pending_{0};

  std::mutex start_mutex_;
  std::thread thread_;
};

}  // namespace otpp::detail

#if OTPP_HEADER_ONLY
#include "timer_service-inl.hpp"
#endif
