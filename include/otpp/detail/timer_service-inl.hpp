#pragma once
// timer_service's out-of-line code: the timer thread, the wheel's owner
// (see timer_service.hpp for the design; config.hpp for how this is built).

#include <algorithm>
#include <thread>

#include "timer_service.hpp"

namespace otpp::detail {

OTPP_FUNC timer_service::timer_service(std::shared_ptr<otpp::clock_source> clock, unsigned slots, const runtime_core* rt)
    : clock_{std::move(clock)}, rt_{rt}, inboxes_(slots + 1), heads_(slots + 1) {
  for (std::size_t i = 0; i < inboxes_.size(); ++i) heads_[i] = inboxes_[i].queue.consumer_head();
  origin_ = now_ns();
  stamp_origin_ = origin_;
  if (clock_) clock_->attach(this);
}

OTPP_FUNC timer_service::~timer_service() {
  stop();
  if (clock_) clock_->detach(this);
  clear();
}

OTPP_FUNC void timer_service::clear() noexcept {
  for (auto& in : inboxes_)
    while (in.users.load(std::memory_order_seq_cst) != 0) cpu_relax();
  auto drop = [](timer_node* t) {
    t->move(pending, cancelled);
    t->release();
  };
  drain_inboxes(drop);
  drain_cancels([](timer_node* t) { t->release(); });
  wheel_.clear([&](wheel_entry* e) { drop(static_cast<timer_node*>(e)); });
  for (const due_entry& d : due_) drop(d.t);
  due_.clear();
}

template <class WakeIf>
bool timer_service::hand_over(timer_node* t, unsigned inbox_index, WakeIf&& wake_if) noexcept {
  inbox_user user{inboxes_[inbox_index], inbox_index == outsider_inbox()};
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
  inboxes_[inbox_index].queue.push(t);  // seq_cst: ordered before the load below
  std::int64_t w = next_wake_.load(std::memory_order_seq_cst);
  while (wake_if(w)) {
    // The thread sleeps past what this timer needs: wake it (once; `awake`
    // stops the other schedulers from waking it again).
    if (next_wake_.compare_exchange_weak(w, awake, std::memory_order_seq_cst)) {
      wake();
      break;
    }
  }
  return true;
}

OTPP_FUNC bool timer_service::schedule(timer_node* t, unsigned inbox_index) noexcept {
  const std::int64_t due = tick_of(t->deadline.load(std::memory_order_relaxed));
  return hand_over(t, inbox_index, [due](std::int64_t w) { return due < w; });
}

OTPP_FUNC bool timer_service::schedule_after(timer_node* t, std::int64_t delay, unsigned inbox_index) noexcept {
  if (clock_ || delay >= 256 * coarse_tick_ns() || next_wake_.load(std::memory_order_relaxed) != awake) {
    t->deadline.store(due_after_ns(delay), std::memory_order_relaxed);
    return schedule(t, inbox_index);
  }
  t->deadline.store(-1 - delay, std::memory_order_relaxed);
  t->seq = static_cast<std::uint32_t>(coarse_now_ns() / 1000);
  // Seen in a pass above, the thread may have gone to sleep since: then
  // wake it, so that the start it reads stays close to the call.
  return hand_over(t, inbox_index, [](std::int64_t w) { return w != awake; });
}

OTPP_FUNC void timer_service::admit_arrivals(std::int64_t now_tick) noexcept {
  for (std::size_t i = 0; i < inboxes_.size(); ++i) {
    auto& q = inboxes_[i].queue;
    for (;;) {
      std::size_t k = 0;
      bool unstamped = false;
      while (k < arrival_batch) {
        mpsc_node* n = q.pop(heads_[i]);
        if (n == nullptr) break;
        auto* t = static_cast<timer_node*>(n);
        arrivals_[k++] = t;
        unstamped |= !clock_ && t->deadline.load(std::memory_order_relaxed) < 0;
      }
      if (k == 0) break;
      // Read after every timer of the batch was pushed: no start is early.
      const std::int64_t start = unstamped ? now_ns() : 0;
      for (std::size_t j = 0; j < k; ++j) {
        timer_node* t = arrivals_[j];
        if (const std::int64_t d = t->deadline.load(std::memory_order_relaxed); unstamped && d < 0) {
          // The cap: the coarse clock at the call (µs, kept modulo 2^32,
          // whole for any lag under 71 minutes) plus four ticks and a µs.
          const auto lag_us = static_cast<std::uint32_t>(static_cast<std::uint32_t>(start / 1000) - t->seq);
          const std::int64_t cap = start - std::int64_t{lag_us} * 1000 + 4 * coarse_tick_ns() + 1000;
          t->deadline.store(std::min(start, cap) + (-1 - d), std::memory_order_relaxed);
        }
        admit(t, now_tick);
      }
      if (k < arrival_batch) break;
    }
  }
}

OTPP_FUNC std::optional<std::chrono::nanoseconds> timer_service::cancel(timer_node* t, unsigned inbox_index) noexcept {
  const bool orphan = t->orphaned();
  for (;;) {
    std::uint8_t s = t->state.load(std::memory_order_acquire);
    if ((s & timer_node::phase) == firing) {  // delivering right now: wait until the message is in the mailbox
      cpu_relax();
      continue;
    }
    if ((s & timer_node::phase) != pending) return std::nullopt;
    const auto to = static_cast<std::uint8_t>((s & taken) | cancelled);
    if (!t->state.compare_exchange_weak(s, to, std::memory_order_acq_rel)) continue;
    // Ours. Not yet taken by the service: it drops the timer as it takes it.
    // Taken: the owner thread unlinks and frees it; after stop(), clear() does.
    if ((s & taken) != 0) {
      inbox_user user{inboxes_[inbox_index], inbox_index == outsider_inbox()};
      if (stopping_.load(std::memory_order_seq_cst)) return std::nullopt;
      t->add_ref();
      auto& top = inboxes_[inbox_index].cancels;
      timer_node* head = top.load(std::memory_order_relaxed);
      do {
        t->next_.store(head, std::memory_order_relaxed);  // the inbox link, free since the service took it
      } while (!top.compare_exchange_weak(head, t, std::memory_order_release, std::memory_order_relaxed));
    }
    if (orphan) return std::nullopt;  // its destination died: it was as good as cancelled
    return remaining(t);
  }
}

OTPP_FUNC std::optional<std::chrono::nanoseconds> timer_service::read(const timer_node* t) const noexcept {
  const std::uint8_t s = t->state.load(std::memory_order_acquire) & timer_node::phase;
  // A one-shot that is firing has sent (or is sending) its message: its
  // receiver may be handling it already, and must not read it as live.
  if (s == firing && !t->interval) return std::nullopt;
  if ((s != pending && s != firing) || t->orphaned()) return std::nullopt;
  return remaining(t);
}

OTPP_FUNC bool timer_service::catch_up() noexcept {
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

OTPP_FUNC bool timer_service::await_quiescence(std::chrono::milliseconds limit) const noexcept {
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

OTPP_FUNC void timer_service::stop() noexcept {
  stopping_.store(true, std::memory_order_seq_cst);
  std::lock_guard lock{start_mutex_};
  if (thread_.joinable()) {
    wake();
    thread_.join();
  }
}

OTPP_FUNC void timer_service::ensure_thread() {
  if (started_.load(std::memory_order_acquire)) return;
  std::lock_guard lock{start_mutex_};
  if (started_.load(std::memory_order_relaxed) || stopping_.load(std::memory_order_acquire)) return;
  thread_ = std::thread([this] { run(); });
  started_.store(true, std::memory_order_release);
}

OTPP_FUNC void timer_service::run() noexcept {
  std::uint32_t synced = 0;  // catch_up asks nothing before the thread exists
  for (;;) {
    next_wake_.store(awake, std::memory_order_seq_cst);
    const std::uint32_t sync = sync_requested_.load(std::memory_order_acquire);
    const std::int64_t now = now_ns();
    const std::int64_t now_tick = passed_tick(now);
    if (!clock_) tick_stamps(now);
    admit_arrivals(now_tick);
    drain_cancels([&](timer_node* t) {
      if (t->in_wheel()) {
        wheel_.remove(t);
        t->release();  // the wheel's reference
      }
      t->release();  // the cancel stack's
    });
    wheel_.advance(
        static_cast<std::uint64_t>(now_tick),
        [&](const wheel_entry* e) { return static_cast<std::uint64_t>(due_tick(static_cast<const timer_node*>(e))); },
        [&](wheel_entry* e) { add_due(static_cast<timer_node*>(e)); });
    fire_due(now_tick);
    sweep_orphans();
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
    if (!stamp_on_ && stamp_used_.load(std::memory_order_relaxed)) continue;  // a call asked for stamps during the pass
    if (!next && !stamp_on_) {
      park(wake_word_, epoch);
      continue;
    }
    auto until = steady::now() + reclaim_interval;
    if (next) until = std::min(until, steady::time_point{std::chrono::nanoseconds{origin_ + next_tick * tick_ns}});
    if (stamp_on_) until = std::min(until, steady::time_point{std::chrono::nanoseconds{stamp_start_ + stamp_period}});
    park(wake_word_, epoch, until);
  }
}

OTPP_FUNC void timer_service::tick_stamps(std::int64_t now) noexcept {
  if (!stamp_on_) {
    if (!stamp_used_.load(std::memory_order_acquire)) return;
    stamp_used_.store(false, std::memory_order_relaxed);
    stamp_idle_ = 0;
    publish_stamp(now, true);
    return;
  }
  if (now - stamp_start_ < stamp_period) return;
  stamp_idle_ = stamp_used_.exchange(false, std::memory_order_relaxed) ? 0 : stamp_idle_ + 1;
  publish_stamp(now, stamp_idle_ < stamp_idle_periods);
}

OTPP_FUNC void timer_service::publish_stamp(std::int64_t now, bool live) noexcept {
  const std::uint64_t old = stamp_word_.load(std::memory_order_relaxed);
  const auto start_us = static_cast<std::uint64_t>(now - origin_) / 1000;
  live = live && start_us < (std::uint64_t{1} << (63 - stamp_start_shift));  // 2^46 µs: two years of one runtime
  const std::uint64_t w = (start_us << stamp_start_shift) | (live ? stamp_live : 0) | (++stamp_seq_ & stamp_tag_mask);
  // seq_cst: the new stamp is seen by all before the end below is read, so
  // no call read the old one after its recorded end.
  stamp_word_.store(w, std::memory_order_seq_cst);
  stamp_start_ = now;
  stamp_on_ = live;
  if (old == 0) return;
  const auto end_us = (static_cast<std::uint64_t>(now_ns() - origin_) + 999) / 1000;
  const std::uint64_t tag = old & stamp_tag_mask;
  stamp_ends_[tag & (stamp_records - 1)].store((end_us << stamp_tag_bits) | tag, std::memory_order_release);
}

OTPP_FUNC void timer_service::sweep_orphans() noexcept {
  const std::uint64_t exits = runtime_exits(rt_) - swept_at_exits_;
  if (exits == 0) return;
  // Paced by real time whatever clock the timers follow: this is about memory.
  const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch()).count();
  const std::int64_t ago = now - last_sweep_;
  const std::int64_t interval = std::chrono::duration_cast<std::chrono::nanoseconds>(reclaim_interval).count();
  // A sweep walks every timer: it waits for many exits (a sixteenth of the
  // timers) to keep its cost amortised, but never more than a few intervals
  // for the last few, so orphans do not linger until more processes exit.
  const bool many = exits >= std::max<std::uint64_t>(64, wheel_.size() / 16);
  if (!(many && ago >= interval) && ago < 4 * interval) return;
  swept_at_exits_ += exits;
  last_sweep_ = now;
  wheel_.sweep([](wheel_entry* e) { return static_cast<timer_node*>(e)->orphaned(); },
               [](wheel_entry* e) {
                 auto* t = static_cast<timer_node*>(e);
                 t->move(pending, done);  // else a cancel got there first
                 t->release();  // the wheel's reference; a cancel's, if any, is the cancel stack's
               });
}

OTPP_FUNC void timer_service::admit(timer_node* t, std::int64_t now_tick) noexcept {
  t->seq = static_cast<std::uint32_t>(next_seq_++);
  // From here a cancel links it through `next_` onto a cancel stack; one
  // that came first left it to be dropped here.
  if ((t->state.fetch_or(taken, std::memory_order_acq_rel) & timer_node::phase) != pending) {
    t->release();
    return;
  }
  const std::int64_t due = due_tick(t);
  if (due <= now_tick || static_cast<std::uint64_t>(due) <= wheel_.now()) {
    add_due(t);
  } else {
    wheel_.insert(t, static_cast<std::uint64_t>(due));
  }
}

OTPP_FUNC void timer_service::add_due(timer_node* t) noexcept {
  try {
    // The node keeps the low 32 bits of its arrival number: whole again
    // for any timer that arrived within the last 2^32 (an older one may
    // misplace a tie, never the order's consistency).
    const std::uint64_t seq = next_seq_ - static_cast<std::uint32_t>(static_cast<std::uint32_t>(next_seq_) - t->seq);
    due_.push_back({t->deadline.load(std::memory_order_relaxed), seq, t});
  } catch (...) {
    // No memory to list it: it fires in this pass all the same, after the
    // listed ones (out of deadline order, never lost).
    t->wnext = due_overflow_;
    due_overflow_ = t;
  }
}

OTPP_FUNC void timer_service::fire_due(std::int64_t now_tick) noexcept {
  if (!due_.empty()) {
    auto earlier = [](const due_entry& a, const due_entry& b) {
      return a.deadline != b.deadline ? a.deadline < b.deadline : a.seq < b.seq;
    };
    if (!std::is_sorted(due_.begin(), due_.end(), earlier)) std::sort(due_.begin(), due_.end(), earlier);
    for (const due_entry& d : due_) fire_one(d.t, now_tick);
    due_.clear();
  }
  while (timer_node* t = due_overflow_) {
    due_overflow_ = static_cast<timer_node*>(t->wnext);
    t->wnext = nullptr;
    fire_one(t, now_tick);
  }
}

OTPP_FUNC void timer_service::fire_one(timer_node* t, std::int64_t now_tick) noexcept {
  if (t->interval) {
    fire_interval(t, now_tick);
    return;
  }
  // `firing` until the message is in the mailbox: a cancel that loses
  // the race returns only once the message can be seen there.
  const bool orphan = t->orphaned();  // a dead destination cancels its timers
  if (t->move(pending, firing)) {
    if (!orphan && t->deliver(true) == timer_delivery::no_memory) {
      retry_next_tick(t, now_tick);  // the wheel's reference goes with it
      return;
    }
    t->set_phase(done, std::memory_order_release);
    if (!orphan) delivered_.fetch_add(1, std::memory_order_release);
  }
  t->release();
}

OTPP_FUNC void timer_service::fire_interval(timer_node* t, std::int64_t now_tick) noexcept {
  for (;;) {
    if (t->orphaned() || !t->move(pending, firing)) {
      t->move(pending, done);
      t->release();
      return;
    }
    const timer_delivery outcome = t->deliver(false);
    if (outcome == timer_delivery::no_memory) {
      retry_next_tick(t, now_tick);
      return;
    }
    const bool alive = outcome == timer_delivery::delivered;
    delivered_.fetch_add(1, std::memory_order_release);
    const std::int64_t next = t->deadline.load(std::memory_order_relaxed) + t->period();
    t->deadline.store(next, std::memory_order_relaxed);
    t->set_phase(alive ? pending : done, std::memory_order_release);
    if (!alive) {
      t->release();
      return;
    }
    const std::int64_t due = tick_of(next);
    if (due > now_tick) {
      wheel_.insert(t, static_cast<std::uint64_t>(due));
      return;
    }
  }
}

// No memory for the message: the timer waits in the wheel for the next tick
// and tries again; a cancel can still take it meanwhile (then nothing was
// delivered, as cancel says). Its deadline moves with it, since the wheel
// asks for the tick again as it cascades. A message is late, never lost.
OTPP_FUNC void timer_service::retry_next_tick(timer_node* t, std::int64_t now_tick) noexcept {
  t->deadline.store(origin_ + (now_tick + 1) * tick_ns, std::memory_order_relaxed);
  t->set_phase(pending, std::memory_order_release);
  wheel_.insert(t, static_cast<std::uint64_t>(now_tick + 1));
}

}  // namespace otpp::detail
