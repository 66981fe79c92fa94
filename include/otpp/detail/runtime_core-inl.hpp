#pragma once
// runtime_core's out-of-line code: thread start and shutdown, the worker
// loop, stealing and parking, the process table, and process exit. Included
// by the public headers in header-only mode, compiled once into
// otpp::otpp_compiled otherwise (see config.hpp).

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <utility>

#include "../log.hpp"
#include "../mailbox.hpp"
#include "../pid.hpp"
#include "../telemetry.hpp"
#include "asymmetric_fence.hpp"
#include "coarse_clock.hpp"
#include "cpu_binding.hpp"
#include "idle_poll.hpp"
#include "links.hpp"
#include "name_table.hpp"
#include "runtime_core.hpp"
#include "timer_service.hpp"

namespace otpp::detail {

// -- a process's turn: the hot paths the worker loop and inline calls share ----

// A queued process carries a reference (its "ticket"): a worker that has just
// let it go idle still reads its mailbox tail, and by then another thread may
// have stopped it and dropped every other reference.
OTPP_FUNC void process_base::schedule_owned() noexcept { rt_->schedule(this); }

OTPP_FUNC void process_base::last_reference_gone() noexcept {
  if (local_ & has_cold) delete cold_;
  runtime_core* const rt = rt_;
  deallocate_self();
  release_core_ref(rt);
}

OTPP_FUNC void process_base::release_inline() noexcept {
  if (local_ & exit_pending) {
    finish_exit();
    return;
  }
  if (local_ & has_continue) {
    schedule_owned();
    return;
  }
  if (local_ & settle_flags) {
    settle_idle();
    if (local_ & exit_pending) {
      finish_exit();
      return;
    }
  }
  if (go_idle()) return;
  switch (run_turn(16)) {
    case turn_result::yielded: schedule_owned(); break;
    case turn_result::dead: release(); break;  // its own reference, left to us
    case turn_result::idle: break;
  }
}

OTPP_FUNC void process_base::drain(const exit_reason& why) noexcept {
  for (;;) {
    auto* n = static_cast<message_node*>(signals_.pop(sig_head_));
    if (n == nullptr) n = static_cast<message_node*>(mailbox_.pop(head_));
    if (n) {
      n->fn(*this, n, msg_op::discard, &why);
      continue;
    }
    if (mailbox_.empty(head_) && signals_.empty(sig_head_)) return;
    cpu_relax();  // a push is half done: its node will be linked in a moment
  }
}

OTPP_FUNC void process_base::drain_dead() noexcept {
  static const exit_reason noproc = exit_reason::noproc();
  for (;;) {
    drain(noproc);
    if (go_idle()) return;
  }
}

// -- bounded mailboxes (otpp/mailbox.hpp) -----------------------------------------

OTPP_FUNC void process_base::set_bound(const bounded_mailbox_t& o) {
  auto b = std::make_unique<mailbox_bound>();
  b->capacity = static_cast<std::int64_t>(o.capacity);
  b->policy = o.policy;
  b->block_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(o.block_timeout).count();
  cold().bound = std::move(b);
  local_ |= bounded_box | (o.policy == overflow::drop_oldest ? evicts_oldest : 0);
  id_ |= bounded_flag;
}

OTPP_FUNC offer_result process_base::offer_bounded(message_node* n, bool call) noexcept {
  if (state_.load(std::memory_order_acquire) & dead) {
    static const exit_reason noproc = exit_reason::noproc();
    n->fn(*this, n, msg_op::discard, &noproc);
    return offer_result::dead;
  }
  mailbox_bound& b = *cold_->bound;
  const std::int64_t q = b.queued.load(std::memory_order_relaxed);
  if (q >= b.capacity) {
    bool admit = false;
    if (b.policy == overflow::drop_oldest && !call) {
      admit = q < 2 * b.capacity;  // the owner drops the oldest as it takes them
    } else if (b.policy == overflow::block && tls().current == nullptr && tls().slot == nullptr) {
      admit = wait_for_room(b);  // a plain thread: it may wait
    }
    if (!admit) {
      report_drop(b, q, call);
      static const exit_reason full = exit_reason::mailbox_full();
      n->fn(*this, n, msg_op::discard, &full);
      return offer_result::full;
    }
  }
  b.queued.fetch_add(1, std::memory_order_relaxed);
  push_message(n);
  return offer_result::queued;
}

OTPP_FUNC bool process_base::wait_for_room(mailbox_bound& b) noexcept {
  const auto deadline = steady::now() + std::chrono::nanoseconds(b.block_ns);
  for (;;) {
    // Dekker with bound_taken: we count ourselves in before looking again,
    // it takes a message off before looking for us.
    b.blocked.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t epoch = b.room.load(std::memory_order_seq_cst);
    const bool room = b.queued.load(std::memory_order_seq_cst) < b.capacity;
    if (!room && alive() && steady::now() < deadline) park(b.room, epoch, deadline);
    b.blocked.fetch_sub(1, std::memory_order_relaxed);
    if (room) return true;
    if (!alive() || steady::now() >= deadline) return b.queued.load(std::memory_order_relaxed) < b.capacity;
  }
}

OTPP_FUNC void process_base::bound_taken() noexcept {
  mailbox_bound& b = *cold_->bound;
  const std::int64_t left = b.queued.fetch_sub(1, std::memory_order_seq_cst) - 1;
  // Blocked senders are woken once a quarter of the room is back, not per
  // message: each wake is a system call.
  if (b.blocked.load(std::memory_order_seq_cst) != 0 && left <= b.capacity - std::max<std::int64_t>(1, b.capacity / 4)) {
    b.room.fetch_add(1, std::memory_order_seq_cst);
    unpark_all(b.room);
  }
}

// overflow::drop_oldest, decided as the owner takes each message: when more
// than `capacity` wait behind the one taken, it and the others beyond the
// newest `capacity` are dropped, and then those `capacity` are handled
// before it looks again. Looking at every message instead would starve the
// handler under a flood: senders refill the mailbox faster than the owner
// can drop, so it would drop forever and handle nothing.
OTPP_FUNC bool process_base::evict_if_over(bool call) noexcept {
  mailbox_bound& b = *cold_->bound;
  const std::int64_t behind = b.queued.load(std::memory_order_relaxed);  // this one already taken off
  if (b.drop_run > 0) {
    --b.drop_run;
  } else if (b.keep_run > 0) {
    --b.keep_run;
    return false;
  } else if (behind >= b.capacity) {
    b.drop_run = behind - b.capacity;
    b.keep_run = b.capacity;
  } else {
    return false;
  }
  report_drop(b, behind, call);
  return true;
}

OTPP_FUNC void process_base::report_drop(mailbox_bound& b, std::int64_t queued, bool call) noexcept {
  b.dropped.fetch_add(1, std::memory_order_relaxed);
  if (!mailbox_events::dropped.active()) [[likely]]
    return;
  try {
    telemetry::execute(mailbox_events::dropped, {{"count", 1}, {"queue_length", queued}, {"capacity", b.capacity}},
                       {{"pid", pid_access::make(this)}, {"policy", overflow_name(b.policy)}, {"call", call}});
  } catch (...) {
    // A metadata value that could not be built (out of memory): the drop is still counted.
  }
}

OTPP_FUNC void process_base::run_continuation() noexcept {
  message_node* n = cold_->continuation;
  cold_->continuation = nullptr;
  local_ &= ~has_continue;
  n->fn(*this, n, msg_op::invoke, nullptr);
}

OTPP_FUNC bool process_base::run_signals() noexcept {
  bool any = false;
  while (auto* n = static_cast<message_node*>(signals_.pop(sig_head_))) {
    n->fn(*this, n, msg_op::invoke, nullptr);
    any = true;
  }
  return any;
}

OTPP_FUNC turn_result process_base::run_turn(unsigned budget) noexcept {
  current_scope scope{this};
  // An earlier turn's mark: what that turn woke has been run or taken since.
  local_ &= ~woke_lifo;
  unsigned spins = 0;
  bool lingered = false;
  for (;;) {
    // Signals first: an exit signal takes effect before any queued message.
    // The check reads the signal stub on the consumer's own cache line.
    if (sig_head_->next_.load(std::memory_order_acquire) != nullptr || sig_head_ != signals_.consumer_head())
      run_signals();
    message_node* n;
    if (local_ & turn_slow) [[unlikely]] {
      if (local_ & exit_pending) {
        finish_exit(true);
        return turn_result::dead;
      }
      if ((local_ & (has_continue | awaiting)) == has_continue) {
        run_continuation();
        continue;
      }
      n = next_held_back();
    } else {
      n = static_cast<message_node*>(mailbox_.pop(head_, is_resume));
    }
    if (n == nullptr) {
      if (!mailbox_.empty(head_) || !signals_.empty(sig_head_)) {
        // A producer is between its exchange and its link. Give it a moment,
        // then let others run rather than spin on a preempted thread.
        if (++spins < 128) {
          cpu_relax();
          continue;
        }
        return turn_result::yielded;
      }
      // A busy sender is usually a few hundred nanoseconds behind: when this
      // worker has nothing else to do, wait that long for it rather than go
      // idle and make the sender pay for rescheduling us (the difference
      // between a consumer that keeps up and one that thrashes).
      // Not while a node's traffic flows: the worker's idle poll is then
      // what the next message (and what this turn wrote) waits for.
      if (!lingered && !(local_ & (awaiting | suspended)) && worker_has_nothing_else(rt_) &&
          !idle_pollers::hot()) {
        lingered = true;
        // Poll sparsely: each poll pulls the line the sender is about to
        // write; letting it run ahead a little turns lockstep into batches.
        for (unsigned i = 0; i < 8 && mailbox_.empty(head_); ++i) {
          for (unsigned k = 0; k < 48; ++k) cpu_relax();
        }
        if (!mailbox_.empty(head_)) continue;
      }
      if (local_ & (awaiting | suspended)) {
        // Held messages are still queued as far as queue_length goes, and
        // idle timeouts wait for the handler to finish (or for sys::resume).
      } else {
        if (local_ & settle_flags) {
          settle_idle();
          if (local_ & exit_pending) continue;  // on_hibernate threw
        }
        resync_queue_length();
      }
      if (go_idle()) return turn_result::idle;
      continue;  // a resume was posted, or a message came in
    }
    if (is_resume(n)) [[unlikely]] {
      // A wait is over (one post per wait, so this is the current one's).
      if (local_ & awaiting) resume_handler(cold_->waits->resume.leaf);
      continue;
    }
    if ((local_ & (idle_flags | hibernated)) && n->fn != &idle_timer_node::handle) note_message();
    // Room first, then the queue length: an observer that reads the mailbox
    // empty must find room in it too.
    if (local_ & bounded_box) [[unlikely]]
      bound_taken();
    note_handled();  // taken: out of the queue length before its handler runs
    if (local_ & woke_lifo) [[unlikely]] {
      local_ &= ~woke_lifo;
      rt_->share_lifo();
    }
    n->fn(*this, n, msg_op::invoke, nullptr);
    lingered = false;
    if (budget > 1) {
      --budget;
    } else if (!(local_ & (exit_pending | has_continue))) {
      return turn_result::yielded;
    }
  }
}

OTPP_FUNC runtime_core::runtime_core(runtime_config cfg) : cfg_{cfg} {
  unsigned n = cfg_.workers ? cfg_.workers : std::max(1u, std::thread::hardware_concurrency());
  cfg_.workers = n;
  if (cfg_.batch == 0) cfg_.batch = 1;
  for (unsigned i = 0; i < n; ++i) slots_.push_back(std::make_unique<worker_slot>(i));
  if (fibers_supported) fiber_stack_ = cfg_.stack_size;
  spare_fiber_cap_ = std::max<std::size_t>(16, 2 * std::size_t{n});
  lifo_steals_ = n > 1 && membarrier_ready();
  std::vector<int> cpus = worker_cpus_checked(cfg_.worker_cpus);
  if (cpus.empty() && cfg_.bind_workers) {
    cpus = allowed_cpus();
    if (cpus.size() < 2) cpus.clear();  // one CPU (or none known): nothing to choose between
  }
  {
    std::lock_guard lock{spare_mutex_};
    for (unsigned i = 0; i < n; ++i) start_thread(slots_[i].get(), cpus.empty() ? -1 : cpus[i % cpus.size()]);
  }
  // On a given clock (a test's virtual_clock) the timer service exists from
  // the start, so that the clock knows this runtime: advance() and settle()
  // wait for its processes even before anything has set a timer.
  if (cfg_.clock) (void)start_timers();
}

OTPP_FUNC std::size_t runtime_core::timer_count() const noexcept {
  const timer_service* t = timers_if_started();
  return t ? t->pending_count() : 0;
}

OTPP_FUNC unsigned timer_inbox(const timer_service& s) noexcept {
  const thread_ctx& t = tls();
  return t.slot != nullptr && t.rt == s.runtime() ? t.slot->index : s.outsider_inbox();
}

OTPP_FUNC std::int64_t timer_now_ns(runtime_core& rt) { return rt.timers().now_ns(); }
OTPP_FUNC std::int64_t timer_due_after_ns(runtime_core& rt, std::int64_t delay_ns) {
  return rt.timers().due_after_ns(delay_ns);
}
OTPP_FUNC wait_due call_due_after(runtime_core& rt, std::int64_t delay_ns) { return rt.timers().call_due(delay_ns); }

OTPP_FUNC runtime_core::~runtime_core() {
  delete timers_.load(std::memory_order_acquire);
  for (auto& s : slots_)
    if (fiber* f = std::exchange(s->spare_fiber, nullptr)) destroy_fiber(f);
  while (fiber* f = spare_fibers_) {
    spare_fibers_ = f->link;
    destroy_fiber(f);
  }
}

OTPP_FUNC bool runtime_core::stop_for_shutdown(process_base* p, steady::duration left) {
  auto r = stop_process(p, exit_reason::shutdown(), left);
  return r || r.error().kind() != exit_kind::timeout;
}

OTPP_FUNC timer_service& runtime_core::start_timers() {
  std::lock_guard lock{spare_mutex_};
  if (timer_service* t = timers_.load(std::memory_order_relaxed)) return *t;
  auto* t = new timer_service{cfg_.clock, cfg_.workers, this};
  timers_.store(t, std::memory_order_seq_cst);
  // Asked for after shutdown began (shutdown may have looked before the
  // store): a stopped service, which never starts a thread.
  if (closed_.load(std::memory_order_seq_cst)) t->stop();
  return *t;
}

OTPP_FUNC void runtime_core::register_process(process_base* p) {
  p->assign_id(next_process_id.fetch_add(1, std::memory_order_relaxed));
  auto& sh = shards_[p->id() % shard_count];
  std::lock_guard lock{sh.mutex};
  p->live_next_ = sh.head;
  if (sh.head) sh.head->live_prev_ = p;
  sh.head = p;
  ++sh.count;
}

OTPP_FUNC void runtime_core::unregister_process(process_base* p) noexcept {
  auto& sh = shards_[p->id() % shard_count];
  std::lock_guard lock{sh.mutex};
  if (p->live_prev_) {
    p->live_prev_->live_next_ = p->live_next_;
  } else {
    sh.head = p->live_next_;
  }
  if (p->live_next_) p->live_next_->live_prev_ = p->live_prev_;
  p->live_prev_ = p->live_next_ = nullptr;
  --sh.count;
  sh.exits.store(sh.exits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

OTPP_FUNC std::uint64_t runtime_core::exits() const noexcept {
  std::uint64_t n = 0;
  for (auto& sh : shards_) n += sh.exits.load(std::memory_order_relaxed);
  return n;
}

OTPP_FUNC std::vector<process_base*> runtime_core::live_processes() {
  std::vector<process_base*> out;
  try {
    for (auto& sh : shards_) {
      std::lock_guard lock{sh.mutex};
      for (process_base* p = sh.head; p; p = p->live_next_) {
        out.push_back(p);
        p->add_ref();
      }
    }
  } catch (...) {
    for (process_base* p : out) p->release();  // no memory for the list: nothing taken
    throw;
  }
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->id() < b->id(); });
  return out;
}

OTPP_FUNC std::vector<scheduler_sample> runtime_core::scheduler_samples() const {
  std::vector<scheduler_sample> out;
  out.reserve(slots_.size());
  const std::int64_t now = steady::now().time_since_epoch().count();
  for (const auto& s : slots_) {
    scheduler_sample x;
    x.messages = s->messages.load(std::memory_order_relaxed);
    x.idle_ns = s->idle_ns.load(std::memory_order_relaxed);
    if (const std::int64_t since = s->idle_since.load(std::memory_order_relaxed); since != 0 && now > since)
      x.idle_ns += now - since;
    x.run_queue = static_cast<std::size_t>(s->deque.size_hint());
    out.push_back(x);
  }
  return out;
}

OTPP_FUNC std::size_t runtime_core::live_count() noexcept {
  std::size_t n = 0;
  for (auto& sh : shards_) {
    std::lock_guard lock{sh.mutex};
    n += sh.count;
  }
  return n;
}

OTPP_FUNC void runtime_core::hand_off_slot() {
  worker_slot* s = tls().slot;
  if (s == nullptr || tls().rt != this) return;
  std::lock_guard lock{spare_mutex_};
  if (!idle_spares_.empty()) {
    thread_record* t = idle_spares_.back();
    idle_spares_.pop_back();
    t->assigned = s;
    tls().slot = nullptr;
    t->word.store(1, std::memory_order_release);
    unpark_one(t->word);
    return;
  }
  if (threads_.size() < cfg_.max_threads && !terminating_.load(std::memory_order_relaxed)) {
    tls().slot = nullptr;
    start_thread(s);
    return;
  }
  // Over the thread budget: keep the slot and block with it (the pool may
  // stall until the call returns or times out, as a cycle would in Erlang).
}

OTPP_FUNC void runtime_core::release_for_wait(process_base* callee) {
  const thread_ctx& t = tls();
  worker_slot* s = t.slot;
  if (s == nullptr || t.rt != this || s->lifo_peek() != callee || callee == nullptr) return;
  const bool on_fiber = t.fib != nullptr && t.fib != t.native;
  if (slots_.size() > 1 || on_fiber) {
    if (!s->take_lifo_if(callee)) return;  // another worker took it
    share(*s, callee);
    notify();
    if (spinners_.load(std::memory_order_seq_cst) + sleepers_.load(std::memory_order_seq_cst) > 0) return;
  }
  // On a fiber the waiter parks instead: the worker itself runs the callee next.
  if (on_fiber) return;
  hand_off_slot();
}

OTPP_FUNC bool runtime_core::shutdown() {
  closed_.store(true, std::memory_order_seq_cst);
  std::lock_guard serial{shutdown_mutex_};
  if (shut_down_) return !leaked_;
  const auto deadline = steady::now() + cfg_.shutdown_timeout;
  const bool own_thread = tls().rt == this;
  if (own_thread && tls().current != nullptr) {
    detail::log_rt(log_level::error, "otpp: runtime shutdown from inside one of its processes ({}); it is left running",
                   pid_text{tls().current->id()}.view());
  }
  stop_processes(deadline);
  if (timer_service* t = timers_if_started()) t->stop();
  const bool joined = join_threads(deadline, own_thread);
  stop_watchdog(deadline);
  // With every worker gone, the timers that never fired are dropped now:
  // they hold their destinations, which hold this core.
  if (joined) {
    if (timer_service* t = timers_if_started()) t->clear();
  }
  leaked_ = !joined;
  shut_down_ = true;
  return joined;
}

OTPP_FUNC std::size_t runtime_core::thread_count() {
  std::lock_guard lock{spare_mutex_};
  return threads_.size();
}

OTPP_FUNC void runtime_core::start_thread(worker_slot* s, int cpu) {
  auto rec = std::make_unique<thread_record>();
  thread_record* r = rec.get();
  threads_.push_back(std::move(rec));
  add_ref();  // each thread holds the core: one abandoned by shutdown frees it when it ends
  try {
    r->thread = std::thread([this, r, s, cpu] { thread_main(r, s, cpu); });
  } catch (...) {
    threads_.pop_back();
    refs_.fetch_sub(1, std::memory_order_relaxed);  // the runtime's own reference is still held
    throw;
  }
}

OTPP_FUNC void runtime_core::stop_processes(steady::time_point deadline) {
  std::vector<std::uint64_t> abandoned;
  std::size_t not_waited = 0;
  auto is_abandoned = [&](process_base* p) {
    return std::find(abandoned.begin(), abandoned.end(), p->id()) != abandoned.end();
  };
  auto stop = [&](process_base* p) {
    const auto left = std::max(deadline - steady::now(), steady::duration::zero());
    if (stop_for_shutdown(p, left)) return;
    if (left == steady::duration::zero()) {
      ++not_waited;
    } else {
      detail::log_rt(log_level::error,
                     "otpp: process {} ({}) did not stop within the runtime's shutdown timeout ({} ms); abandoned",
                     pid_text{p->id()}.view(), p->type_name(), cfg_.shutdown_timeout.count());
    }
    try {
      abandoned.push_back(p->id());
    } catch (...) {
    }
  };
  struct summary {
    std::size_t& n;
    long long ms;
    ~summary() {
      if (n != 0)
        detail::log_rt(log_level::error,
                       "otpp: runtime shutdown timeout ({} ms) passed; {} more processes were asked to stop and not waited for",
                       ms, n);
    }
  } report{not_waited, static_cast<long long>(cfg_.shutdown_timeout.count())};
  for (int round = 0; round < 4; ++round) {
    std::vector<process_base*> procs;
    try {
      procs = live_processes();
    } catch (...) {
      // No memory for the list: one at a time, in no particular order.
      while (process_base* p = any_live_process(abandoned)) {
        stop(p);
        p->release();
      }
      return;
    }
    bool stopped_any = false;
    for (auto it = procs.rbegin(); it != procs.rend(); ++it) {
      if (!is_abandoned(*it)) {
        stop(*it);
        stopped_any = true;
      }
      (*it)->release();
    }
    if (!stopped_any) return;
  }
}

OTPP_FUNC process_base* runtime_core::any_live_process(const std::vector<std::uint64_t>& skip) noexcept {
  for (auto& sh : shards_) {
    std::lock_guard lock{sh.mutex};
    for (process_base* p = sh.head; p; p = p->live_next_) {
      if (std::find(skip.begin(), skip.end(), p->id()) != skip.end()) continue;
      p->add_ref();
      return p;
    }
  }
  return nullptr;
}

OTPP_FUNC bool runtime_core::join_threads(steady::time_point deadline, bool own_thread) noexcept {
  {
    std::lock_guard lock{spare_mutex_};
    terminating_.store(true, std::memory_order_seq_cst);  // no thread starts after this
    for (thread_record* t : idle_spares_) {
      t->assigned = nullptr;
      t->word.store(1, std::memory_order_release);
      unpark_one(t->word);
    }
    idle_spares_.clear();
  }
  wake_all();
  const auto me = std::this_thread::get_id();
  bool stuck = false;
  for (auto& t : threads_) {  // stable now: no thread starts once terminating_ is set
    if (own_thread && t->thread.get_id() == me) continue;
    while (t->finished.load(std::memory_order_acquire) == 0 && steady::now() < deadline) {
      wake_all();
      park(t->finished, 0, std::min(deadline, steady::now() + std::chrono::milliseconds(5)));
    }
    if (t->finished.load(std::memory_order_acquire) == 0) stuck = true;
  }
  std::lock_guard lock{spare_mutex_};
  for (auto& t : threads_) {
    if (!t->thread.joinable()) continue;
    if (t->finished.load(std::memory_order_acquire) != 0 && t->thread.get_id() != me) {
      t->thread.join();
    } else {
      t->thread.detach();
    }
  }
  if (stuck) {
    detail::log_rt(log_level::error, "otpp: runtime shutdown left threads stuck in handlers; they keep the runtime's memory until they return");
  }
  return !stuck && !own_thread;
}

OTPP_FUNC void runtime_core::thread_main(thread_record* me, worker_slot* initial, int cpu) noexcept {
  // Refused (a CPU taken away meanwhile): the worker runs unbound.
  if (cpu >= 0) (void)bind_this_thread(cpu);
  tls().rt = this;
  tls().slot = initial;
  tls().record = me;
  fiber own;  // this thread's stack, switched back to when the thread ends
  if (fibers_on()) {
    init_native_fiber(own);
    tls().fib = &own;
    tls().native = &own;
    if (fiber* f = take_fiber()) {
      switch_to(f, {});  // returns when the thread is to end
    } else {
      schedule_loop();  // no fiber to be had: this thread's blocked calls hand off
    }
  } else {
    schedule_loop();
  }
  tls() = {};
  me->finished.store(1, std::memory_order_release);
  unpark_one(me->finished);
  release();  // last: the core may go with it, once shutdown has given up on this thread
}

OTPP_FUNC void runtime_core::schedule_loop() noexcept {
  bool check_timed = true;
  for (unsigned tick = 0;; ++tick) {
    thread_ctx& t = tls();  // the loop may resume on another thread
    if (t.slot == nullptr) {
      if (t.record == nullptr) {  // the watchdog's: its rescue is done
        switch_to(t.native, {fiber_action::retire, t.fib});
        continue;
      }
      t.slot = wait_for_slot(static_cast<thread_record*>(t.record));
      if (t.slot == nullptr) return;
    }
    if (t.fib != nullptr) {
      if (fiber* f = t.slot->next_fiber_peek() != nullptr ? t.slot->swap_next_fiber(nullptr) : nullptr) {
        fiber* cur = t.fib;
        switch_to(f, {cur == t.native ? fiber_action::none : fiber_action::retire, cur});
        continue;
      }
      if (check_timed || (tick & 15) == 0) {
        check_timed = false;
        if (fiber_due()) (void)expire_fibers();
      }
      if (ready_count_.load(std::memory_order_acquire) != 0) {
        if (fiber* f = pop_ready()) {
          fiber* cur = t.fib;
          // The fiber we leave is idle: spare, unless it is the thread's own stack.
          switch_to(f, {cur == t.native ? fiber_action::none : fiber_action::retire, cur});
          continue;
        }
      }
    }
    worker_slot& s = *t.slot;
    if (process_base* p = find_work(s)) {
      run(p, s);
      continue;
    }
    drop_kept(s);
    if (may_leave()) return;
    idle(s);
    check_timed = true;
  }
}

// -- fibers ------------------------------------------------------------------------

OTPP_FUNC void runtime_core::fiber_main(void* core) noexcept {
  enter_fiber();
  auto* rt = static_cast<runtime_core*>(core);
  rt->after_switch();
  rt->schedule_loop();
  thread_ctx& t = tls();
  rt->switch_to(t.native, {fiber_action::exit, t.fib});  // never returns
  std::abort();
}

OTPP_FUNC fiber* runtime_core::take_fiber() noexcept {
  // Each park takes a stack and each resume gives one back: a worker keeps
  // one for itself, so that a call that parks and resumes on one worker
  // takes the shared pool's lock in neither.
  if (const thread_ctx& t = tls(); t.rt == this && t.slot != nullptr) {
    if (fiber* f = std::exchange(t.slot->spare_fiber, nullptr)) return f;
  }
  {
    std::lock_guard lock{fiber_mutex_};
    if (fiber* f = spare_fibers_) {
      spare_fibers_ = f->link;
      f->link = nullptr;
      --spare_fiber_count_;
      spares_.store(spare_fiber_count_, std::memory_order_relaxed);
      return f;
    }
  }
  // No spare left: fibers are piling up. Note the peak (how many spares to
  // keep) and the burst (when to trim them) here, where stacks are made: a
  // clock read or a shared count at every park cost more than the park's
  // lock section (64 callers blocked on one server).
  const std::size_t parked_now = parked_count() + 1;
  if (parked_now > parked_peak_.load(std::memory_order_relaxed)) parked_peak_.store(parked_now, std::memory_order_relaxed);
  if (parked_now > spare_fiber_cap_ && !burst_seen_.load(std::memory_order_relaxed))
    burst_seen_.store(true, std::memory_order_relaxed);
  fiber* f = create_fiber(fiber_stack_, &fiber_main, this);
  if (f != nullptr) f->rt = this;
  return f;
}

[[gnu::noinline]] OTPP_FUNC void runtime_core::switch_to(fiber* to, fiber_action a) noexcept {
  thread_ctx& t = tls();
  fiber* from = t.fib;
  from->current = t.current;
  from->inline_depth = t.inline_depth;
  from->start_depth = t.start_depth;
  swap_eh_globals(*from, *to);
  t.current = to->current;
  t.inline_depth = to->inline_depth;
  t.start_depth = to->start_depth;
  t.fib = to;
  t.pending = a;
  jump_fiber(*from, *to, a.kind == fiber_action::exit);
  after_switch();
}

OTPP_FUNC void runtime_core::after_switch() noexcept {
  thread_ctx& t = tls();
  const fiber_action a = std::exchange(t.pending, fiber_action{});
  switch (a.kind) {
    case fiber_action::park_fiber:
      finish_park(a.f);
      break;
    case fiber_action::retire:
      retire_fiber(a.f);
      break;
    case fiber_action::exit:
      destroy_fiber(a.f);
      break;
    case fiber_action::none:
      break;
  }
}

OTPP_FUNC bool runtime_core::park_until(reply_slot_base* slot, steady::time_point deadline) noexcept {
  thread_ctx& t = tls();
  fiber* me = t.fib;
  if (me == nullptr || me == t.native || t.rt != this) return false;
  fiber* next = take_fiber();
  if (next == nullptr) return false;
  me->slot = slot;
  me->deadline = deadline;
  me->parked_on = t.slot;
  count_fiber(t, false);
  switch_to(next, {fiber_action::park_fiber, me});
  me->slot = nullptr;
  count_fiber(tls(), true);  // perhaps another thread's
  return true;
}

OTPP_FUNC void runtime_core::count_fiber(thread_ctx& t, bool resume) noexcept {
  if (t.slot != nullptr && t.rt == this) {
    std::atomic<std::uint64_t>& n = resume ? t.slot->fiber_resumes : t.slot->fiber_parks;
    n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  } else {
    (resume ? resumes_elsewhere_ : parks_elsewhere_).fetch_add(1, std::memory_order_seq_cst);
  }
}

OTPP_FUNC std::size_t runtime_core::parked_count() const noexcept {
  std::uint64_t resumes = resumes_elsewhere_.load(std::memory_order_seq_cst);
  for (const auto& s : slots_) resumes += s->fiber_resumes.load(std::memory_order_acquire);
  std::uint64_t parks = parks_elsewhere_.load(std::memory_order_seq_cst);
  for (const auto& s : slots_) parks += s->fiber_parks.load(std::memory_order_acquire);
  return parks > resumes ? static_cast<std::size_t>(parks - resumes) : 0;
}

// Run by the fiber that took over, once the parked one is off its stack:
// until then a wake-up must not queue it (another worker could switch into
// a stack still in use).
OTPP_FUNC void runtime_core::finish_park(fiber* f) noexcept {
  f->waker.wake = &wake_fiber;
  if (f->deadline == steady::time_point::max()) {
    f->state.store(fiber::parked, std::memory_order_release);
    if (!f->slot->await(&f->waker)) make_ready(f);  // resolved already
    return;
  }
  bool resolved = false;
  {
    // Under the lock, so that a wake-up racing with the insertion finds the
    // fiber on the timed list when it takes the lock to move it.
    std::lock_guard lock{fiber_mutex_};
    f->state.store(fiber::parked, std::memory_order_release);
    if (f->slot->await(&f->waker)) {
      f->prev = nullptr;
      f->next = timed_;
      if (timed_ != nullptr) timed_->prev = f;
      timed_ = f;
      f->timed = true;
      timed_count_.store(timed_count_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      const std::int64_t d = f->deadline.time_since_epoch().count();
      if (d < timed_min_ns_.load(std::memory_order_relaxed)) timed_min_ns_.store(d, std::memory_order_relaxed);
    } else {
      resolved = true;
    }
  }
  if (resolved) {
    make_ready(f);
    return;
  }
  // Pairs with the watchdog's sleep check: either it sees this fiber
  // counted, or we see it asleep and wake it. Its side of the fence is the
  // system call, made when it would sleep with no deadline to keep; ours,
  // at every timed park, a compiler barrier (a locked add here was a
  // twentieth of a blocking call between processes).
  light_fence();
  if (!watch_started_.load(std::memory_order_acquire)) {
    start_watchdog();
  } else if (watch_asleep_.load(std::memory_order_seq_cst)) {
    watch_asleep_.store(false, std::memory_order_relaxed);
    watch_word_.fetch_add(1, std::memory_order_seq_cst);
    unpark_one(watch_word_);
  }
}

OTPP_FUNC void runtime_core::wake_fiber(slot_waker* w) noexcept {
  fiber* f = static_cast<fiber::waker_t*>(w)->self;
  f->rt->make_ready(f);
}

OTPP_FUNC void runtime_core::make_ready(fiber* f) noexcept {
  std::uint32_t expected = fiber::parked;
  if (!f->state.compare_exchange_strong(expected, fiber::ready, std::memory_order_acq_rel)) return;
  // Woken on the worker it parked on (its callee ran here after it parked):
  // resumed here, next, rather than by whichever worker looks first, which
  // moved every call of a process-to-process pair between the two cores
  // (otpp_bench call_process 750 -> 265 ns with the early park in
  // await_resolution). A fiber that parked elsewhere goes to the shared
  // queue, so that callers spread over the workers stay spread.
  thread_ctx& t = tls();
  const bool here = t.rt == this && t.slot != nullptr && t.fib != nullptr && t.slot->next_fiber_peek() == nullptr && f->parked_on == t.slot;
  {
    std::lock_guard lock{fiber_mutex_};
    if (here) {
      unlink_timed_locked(f);
      (void)t.slot->swap_next_fiber(f);  // empty: only its owner fills it
    } else {
      queue_ready_locked(f);
    }
  }
  if (!here) notify();
}

OTPP_FUNC void runtime_core::queue_ready_locked(fiber* f) noexcept {
  unlink_timed_locked(f);
  f->link = nullptr;
  if (ready_tail_ != nullptr) {
    ready_tail_->link = f;
  } else {
    ready_head_ = f;
  }
  ready_tail_ = f;
  // Changed only under fiber_mutex_, so a load and a store, not a locked
  // add (two of them per parked call; notify()'s fence publishes it).
  ready_count_.store(ready_count_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

OTPP_FUNC void runtime_core::unlink_timed_locked(fiber* f) noexcept {
  if (f->timed) {
    if (f->prev != nullptr) {
      f->prev->next = f->next;
    } else {
      timed_ = f->next;
    }
    if (f->next != nullptr) f->next->prev = f->prev;
    f->timed = false;
    timed_count_.store(timed_count_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);  // under the lock
  }
}

OTPP_FUNC fiber* runtime_core::pop_ready() noexcept {
  std::lock_guard lock{fiber_mutex_};
  fiber* f = ready_head_;
  if (f == nullptr) return nullptr;
  ready_head_ = f->link;
  if (ready_head_ == nullptr) ready_tail_ = nullptr;
  f->link = nullptr;
  ready_count_.store(ready_count_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);  // under the lock
  f->state.store(fiber::running, std::memory_order_relaxed);
  return f;
}

OTPP_FUNC void runtime_core::retire_fiber(fiber* f) noexcept {
  if (const thread_ctx& t = tls(); t.rt == this && t.slot != nullptr && t.slot->spare_fiber == nullptr) {
    f->link = nullptr;
    t.slot->spare_fiber = f;
    return;
  }
  {
    std::lock_guard lock{fiber_mutex_};
    // As many spares as fibers were recently parked at once (a chain of
    // blocked calls comes back), up to a bound; idle() trims the rest.
    if (spare_fiber_count_ < std::max(spare_fiber_cap_, std::min<std::size_t>(parked_peak_, 4096))) {
      f->link = spare_fibers_;
      spare_fibers_ = f;
      ++spare_fiber_count_;
      spares_.store(spare_fiber_count_, std::memory_order_relaxed);
      return;
    }
  }
  destroy_fiber(f);
}

OTPP_FUNC void runtime_core::trim_fibers() noexcept {
  // Only a second after the last burst of parked fibers (the next may need
  // them), and a few at a time (unmapping a stack is a system call, under
  // ASan a large shadow update: an idle worker must stay quick to wake).
  constexpr std::int64_t quiet_ns = 1'000'000'000;
  constexpr std::size_t per_trim = 32;
  if (spares_.load(std::memory_order_relaxed) <= spare_fiber_cap_ || parked_count() != 0) return;
  const std::int64_t now = steady::now().time_since_epoch().count();
  if (burst_seen_.load(std::memory_order_relaxed)) {
    burst_seen_.store(false, std::memory_order_relaxed);
    last_burst_ns_.store(now, std::memory_order_relaxed);
    return;
  }
  if (now - last_burst_ns_.load(std::memory_order_relaxed) < quiet_ns) return;
  fiber* extra = nullptr;
  {
    std::lock_guard lock{fiber_mutex_};
    parked_peak_.store(0, std::memory_order_relaxed);
    for (std::size_t n = 0; n < per_trim && spare_fiber_count_ > spare_fiber_cap_; ++n) {
      fiber* f = spare_fibers_;
      spare_fibers_ = f->link;
      --spare_fiber_count_;
      spares_.store(spare_fiber_count_, std::memory_order_relaxed);
      f->link = extra;
      extra = f;
    }
  }
  while (extra != nullptr) {
    fiber* f = extra;
    extra = f->link;
    destroy_fiber(f);
  }
}

OTPP_FUNC bool runtime_core::expire_fibers() noexcept {
  const std::int64_t now = steady::now().time_since_epoch().count();
  bool any = false;
  {
    std::lock_guard lock{fiber_mutex_};
    std::int64_t min = no_deadline;
    for (fiber* f = timed_; f != nullptr;) {
      fiber* const next = f->next;
      const std::int64_t d = f->deadline.time_since_epoch().count();
      std::uint32_t expected = fiber::parked;
      if (d > now) {
        min = std::min(min, d);
      } else if (f->state.compare_exchange_strong(expected, fiber::ready, std::memory_order_acq_rel)) {
        queue_ready_locked(f);
        any = true;
      }
      // else: its wake-up won and waits for this lock to move it.
      f = next;
    }
    timed_min_ns_.store(min, std::memory_order_relaxed);
  }
  if (any) notify();
  return any;
}

OTPP_FUNC worker_slot* runtime_core::wait_for_slot(thread_record* me) {
  std::unique_lock lock{spare_mutex_};
  if (terminating_.load(std::memory_order_acquire)) return nullptr;
  me->assigned = nullptr;
  me->word.store(0, std::memory_order_relaxed);
  idle_spares_.push_back(me);
  lock.unlock();
  while (me->word.load(std::memory_order_acquire) == 0) park(me->word, 0);
  lock.lock();
  return me->assigned;
}

// Credits the messages a turn took to the worker that finished it.
inline void count_messages(worker_slot* s, std::uint32_t before, std::uint32_t after) noexcept {
  if (s == nullptr) return;
  s->messages.store(s->messages.load(std::memory_order_relaxed) + (after - before), std::memory_order_relaxed);
}

// A process stolen from another worker that runs only a short turn here
// gained little from the move and paid for it: its memory crossed cores, and
// what it wakes (a server it calls, the task stream it reports to) is on the
// other side too. Such steals make the thief hold off, doubling from 1 us up
// to 1 ms: work must then wait that long in another deque before this worker
// takes it. A steal whose turn runs long (5 us and more) makes it eager
// again. Any process counts, a new one (a task) included: counting only
// processes bounced back and forth, otpp_bench measured (6 interleaved runs,
// medians) task_async_stream_rate 2.46 M items/s against 4.02 M now (one
// worker alone: ~6 M), and call_concurrent_64_async 9.1 M calls/s against
// 9.7 M; ets_lookup_64procs (long turns) 72.9 against 69.9 M/s, within its
// spread. On two cores the chatter between processes that talk
// costs more in cache traffic than the second core gives.
OTPP_FUNC void runtime_core::run(process_base* p, worker_slot& s) noexcept {
  if (s.stolen != p) [[likely]] {
    run_turns(p);
    return;
  }
  s.stolen = nullptr;
  const std::int64_t t0 = steady::now().time_since_epoch().count();
  run_turns(p);  // p may be gone now
  if (tls().slot != &s) return;  // its fiber went on on another thread: s is another's now
  constexpr std::int64_t worth = 5'000, least = 1'000, most = 1'000'000;
  const std::int64_t took = steady::now().time_since_epoch().count() - t0;
  s.steal_hold = took < worth ? std::min(most, std::max(least, 2 * s.steal_hold)) : 0;
}

OTPP_FUNC void runtime_core::run_turns(process_base* p) noexcept {
  for (;;) {
    const std::uint32_t before = p->progress();
    if (const turn_result r = p->run_turn(cfg_.batch); r != turn_result::yielded) {
      worker_slot* s = tls().slot;  // the turn may have resumed on another thread
      count_messages(s, before, p->progress());  // our ticket keeps the memory, dead or not
      // A process that went idle is often the next one woken from here (the
      // caller a server replies to, the server a caller calls again): its
      // ticket stays with this worker, so that waking it takes no locked
      // add, nor this release; the slot keeps one, dropped when the next
      // comes or the worker runs out of work.
      if (r == turn_result::idle && s != nullptr) std::swap(s->kept, p);
      if (p != nullptr) p->release_ticket(r);
      return;
    }
    worker_slot* s = tls().slot;  // the turn may have resumed on another thread
    count_messages(s, before, p->progress());
    // Nobody else waiting: keep going without a trip through the queues.
    if (s != nullptr && s->lifo_peek() == nullptr && s->deque.empty() &&
        injection_size_.load(std::memory_order_relaxed) == 0)
      continue;
    // Fairness: a process that used its whole batch goes to the back of the
    // global queue, behind everyone already waiting.
    push_injection(p);
    notify();
    return;
  }
}

OTPP_FUNC process_base* runtime_core::find_work(worker_slot& s) noexcept {
  if (++s.tick % 61 == 0) {
    if (process_base* p = pop_injection()) return p;
  }
  if (process_base* p = s.take_lifo()) {
    if (s.lifo_streak++ < 32) return p;
    // A ping-pong pair must not starve the rest of the queue: past the
    // streak, run something else first if there is anything else.
    s.lifo_streak = 0;
    process_base* other = s.deque.pop();
    if (other == nullptr) other = pop_injection();
    if (other == nullptr) return p;
    share(s, p);
    notify();
    return other;
  }
  s.lifo_streak = 0;
  if (process_base* p = s.deque.pop()) return p;
  if (process_base* p = pop_injection()) return p;
  return steal(s);
}

OTPP_FUNC process_base* runtime_core::steal(worker_slot& s) noexcept {
  const std::size_t n = slots_.size();
  if (n < 2) return nullptr;
  s.rng ^= s.rng << 13;
  s.rng ^= s.rng >> 7;
  s.rng ^= s.rng << 17;
  const std::size_t start = s.rng % n;
  for (std::size_t i = 0; i < n; ++i) {
    worker_slot& v = *slots_[(start + i) % n];
    if (&v == &s || v.deque.empty()) continue;
    if (!hold_over(s)) return nullptr;
    if (process_base* p = v.deque.steal()) {
      s.steal_seen = 0;
      s.stolen = p;
      return p;
    }
  }
  s.steal_seen = 0;  // nothing to take: the wait starts again when there is
  return nullptr;
}

OTPP_FUNC bool runtime_core::has_own_work(const worker_slot& s) const noexcept {
  if (s.lifo_peek() != nullptr || s.next_fiber_peek() != nullptr || !s.deque.empty()) return true;
  return injection_size_.load(std::memory_order_relaxed) != 0 || ready_count_.load(std::memory_order_relaxed) != 0;
}

OTPP_FUNC bool runtime_core::others_have_work(const worker_slot& s) const noexcept {
  for (auto& v : slots_)
    if (v.get() != &s && !v->deque.empty()) return true;
  return false;
}

OTPP_FUNC bool runtime_core::hold_over(worker_slot& s) noexcept {
  if (s.steal_hold == 0) return true;
  const std::int64_t now = steady::now().time_since_epoch().count();
  if (s.steal_seen == 0) s.steal_seen = now;  // the wait starts when work is first seen
  return now - s.steal_seen >= s.steal_hold;
}

OTPP_FUNC bool runtime_core::has_work(const worker_slot& s) const noexcept {
  return has_own_work(s) || others_have_work(s);
}

OTPP_FUNC bool runtime_core::has_work_to_take(worker_slot& s, bool read_clock) noexcept {
  if (has_own_work(s)) return true;
  // Held off from stealing, the others' queues are looked at only when the
  // hold can be over: each look pulls the line their owner pushes to.
  if (s.steal_hold != 0 && !read_clock) return false;
  if (!others_have_work(s)) return false;
  return s.steal_hold == 0 || hold_over(s);
}

OTPP_FUNC std::int64_t runtime_core::queued_hint() const noexcept {
  auto n = static_cast<std::int64_t>(injection_size_.load(std::memory_order_relaxed));
  for (auto& v : slots_) n += v->deque.size_hint();
  return n;
}

OTPP_FUNC void runtime_core::idle(worker_slot& s) noexcept {
  // Time with nothing to run, for the utilisation observers derive: read
  // only here, where the worker has nothing better to do.
  const std::int64_t since = steady::now().time_since_epoch().count();
  s.idle_since.store(since, std::memory_order_relaxed);
  struct account {
    worker_slot& s;
    std::int64_t since;
    ~account() {
      s.idle_since.store(0, std::memory_order_relaxed);
      const std::int64_t spent = steady::now().time_since_epoch().count() - since;
      s.idle_ns.store(s.idle_ns.load(std::memory_order_relaxed) + spent, std::memory_order_relaxed);
    }
  } accounted{s, since};
  for (;;) {
    spinners_.fetch_add(1, std::memory_order_seq_cst);
    const auto until = steady::now() + cfg_.spin;
    poll_result polled = poll_result::quiet;
    for (unsigned i = 0;; ++i) {
      // Work held off from stealing keeps us here, not in a loop through
      // find_work that would count us out and in as a spinner each time
      // (two locked operations on the line every notify() reads).
      if (has_work_to_take(s, (i & 63) == 63) || may_leave() || ((i & 63) == 63 && fiber_due())) {
        // The last spinner leaving with work wakes a sleeper to spin in its
        // place (Go's rule): a push that saw us spinning woke nobody, and
        // there may be more queued than this thread will take. A thread
        // woken from its park spins first, so the rule chains: one more
        // thread per queued process, until one is left for the last.
        if (spinners_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
            sleepers_.load(std::memory_order_seq_cst) > 0 && queued_hint() > 1) {
          epoch_.fetch_add(1, std::memory_order_seq_cst);
          unpark_one(epoch_);
        }
        return;
      }
      // A node's connections are polled here, first thing when the worker
      // runs out of work (what its processes wrote goes out now, in one
      // system call per connection) and then every so often: frames read
      // here queue their processes on this worker, with no thread to wake.
      // While traffic flows the worker keeps polling instead of parking,
      // and polls four times as often.
      if ((i & (polled == poll_result::quiet ? 63 : 15)) == 0 && idle_pollers::any()) {
        polled = idle_pollers::poll();
        if (polled == poll_result::handled) continue;
      }
      cpu_relax();
      if ((i & 63) == 63) {
        if (polled == poll_result::quiet && steady::now() >= until) break;
        std::this_thread::yield();
      }
    }
    spinners_.fetch_sub(1, std::memory_order_seq_cst);
    // Once a spin, not every round of it: each look reads lines the others
    // write on every turn. What it takes is in our deque, seen below.
    if (lifo_steals_) (void)relieve_stalled(s, steady::now().time_since_epoch().count());
    if (idle_pollers::any()) idle_pollers::parking();
    // About to sleep: a moment to hand memory from a past spike back.
    pool_trim();
    pool_release_if_idle_and_large();
    trim_fibers();
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const std::uint32_t epoch = epoch_.load(std::memory_order_seq_cst);
    const bool sleep = !has_work(s) && !may_leave() && !fiber_due();
    if (sleep) park_idle(s, epoch);
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    if (!sleep) return;
  }
}

// A handler that wakes a process and then keeps its worker (a computation,
// a wait on something that process is to do) holds it in a LIFO slot no
// other worker takes from, while they idle. Turns are not preempted, so an
// idle worker watches instead: a worker whose messages count has not moved
// for stall_ns, with something waiting in its slot, is relieved of it
// (relieve_stalled). One parked worker at a time keeps watching: it wakes
// every millisecond while another worker runs, backing off to 128 ms while
// none does. A watcher that leaves to work hands the watch to a worker
// still parked, which takes it over without spinning. The others wake
// once a second. (A wake costs some 35 us of CPU on a virtualised host:
// otpp_bench idle_cpu was 0.03% of a core without the watch, 0.13% with
// every parked worker waking each 64 ms, 0.09% as it is.)
OTPP_FUNC void runtime_core::park_idle(worker_slot& s, std::uint32_t epoch) noexcept {
  // A parked fiber's deadline is this worker's to notice, if nobody else's.
  if (!lifo_steals_) {
    park(epoch_, epoch, next_fiber_deadline());
    return;
  }
  constexpr std::int64_t brisk = 1'000'000, slowest = 128'000'000, spare = 1'000'000'000;  // ns
  bool watching = false;
  std::int64_t period = brisk;
  for (;;) {
    if (!watching) watching = !watcher_.load(std::memory_order_relaxed) && !watcher_.exchange(true, std::memory_order_acq_rel);
    const std::uint32_t handoffs = watch_handoffs_.load(std::memory_order_acquire);
    const steady::time_point wake = steady::now() + std::chrono::nanoseconds{watching ? period : spare};
    park(epoch_, epoch, std::min(next_fiber_deadline(), wake));
    if (epoch_.load(std::memory_order_seq_cst) != epoch) {
      // Woken. Only to take the watch over? Then park again, unless work
      // came meanwhile (counted as a sleeper all along, as notify expects).
      if (watching || watch_handoffs_.load(std::memory_order_acquire) == handoffs) break;
      std::atomic_thread_fence(std::memory_order_seq_cst);
      epoch = epoch_.load(std::memory_order_seq_cst);
      if (has_work(s) || may_leave() || fiber_due()) break;
      continue;
    }
    const std::int64_t now = steady::now().time_since_epoch().count();
    if ((watching && relieve_stalled(s, now)) || has_work(s) || may_leave() || fiber_due()) break;
    period = others_running(s) ? brisk : std::min(2 * period, slowest);
  }
  if (!watching) return;
  watcher_.store(false, std::memory_order_release);
  if (sleepers_.load(std::memory_order_seq_cst) > 1) {  // besides this worker
    watch_handoffs_.fetch_add(1, std::memory_order_release);
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    unpark_one(epoch_);
  }
}

OTPP_FUNC bool runtime_core::others_running(const worker_slot& s) const noexcept {
  for (auto& v : slots_)
    if (v.get() != &s && v->idle_since.load(std::memory_order_relaxed) == 0) return true;
  return false;
}

OTPP_FUNC bool runtime_core::relieve_stalled(worker_slot& s, std::int64_t now) noexcept {
  // Long enough that a handler which wakes a process and returns soon
  // after is left alone (taking costs a system call and moves the process
  // to another core); short beside the milliseconds a watcher sleeps.
  constexpr std::int64_t stall_ns = 200'000;
  bool took = false;
  for (auto& slot : slots_) {
    worker_slot& v = *slot;
    if (&v == &s) continue;
    const bool waiting = v.lifo_peek() != nullptr || v.next_fiber_peek() != nullptr;
    if (!waiting || v.idle_since.load(std::memory_order_relaxed) != 0) {
      if (v.watch_since.load(std::memory_order_relaxed) != 0) v.watch_since.store(0, std::memory_order_relaxed);
      continue;
    }
    const std::uint64_t messages = v.messages.load(std::memory_order_relaxed);
    const std::int64_t since = v.watch_since.load(std::memory_order_relaxed);
    if (since == 0 || v.watch_messages.load(std::memory_order_relaxed) != messages) {
      v.watch_messages.store(messages, std::memory_order_relaxed);
      v.watch_since.store(now, std::memory_order_relaxed);
      continue;
    }
    if (now - since < stall_ns) continue;
    v.watch_since.store(0, std::memory_order_relaxed);
    const worker_slot::taken t = v.take_from_owner();
    if (t.process != nullptr) {
      share(s, t.process);  // with its ticket
      took = true;
    }
    if (t.fib != nullptr) {
      {
        std::lock_guard lock{fiber_mutex_};
        queue_ready_locked(t.fib);
      }
      took = true;
    }
  }
  return took;
}

OTPP_FUNC void runtime_core::wake_all() noexcept {
  epoch_.fetch_add(1, std::memory_order_seq_cst);
  unpark_all(epoch_);
}

[[gnu::noinline]] OTPP_FUNC void runtime_core::push_injection(process_base* p) noexcept {
  {
    std::lock_guard lock{injection_mutex_};
    if (injection_.push(p)) [[likely]] {
      injection_size_.fetch_add(1, std::memory_order_release);
      return;
    }
  }
  strand(p);
}

OTPP_FUNC process_base* runtime_core::pop_injection() noexcept {
  if (injection_size_.load(std::memory_order_acquire) == 0) return nullptr;
  return take_injected();
}

[[gnu::noinline]] OTPP_FUNC process_base* runtime_core::take_injected() noexcept {
  {
    std::lock_guard lock{injection_mutex_};
    if (process_base* p = injection_.pop()) {
      injection_size_.fetch_sub(1, std::memory_order_relaxed);
      return p;
    }
  }
  if (stranded_.load(std::memory_order_acquire) != 0) [[unlikely]]
    return adopt_stranded();
  return nullptr;
}

// Counted first, marked after: a worker that finds the mark has seen the
// counts go up, and takes them down without passing zero. Until the mark
// shows, the counts keep workers looking.
OTPP_FUNC void runtime_core::strand(process_base* p) noexcept {
  stranded_.fetch_add(1, std::memory_order_relaxed);
  injection_size_.fetch_add(1, std::memory_order_release);
  p->mark_stranded();
}

// A process in the run queues is always in the process table: it is
// registered before anything can schedule it, and leaves the table only
// when it dies, holding its run right for good. One sweep takes the first
// stranded process found to run, and moves the next ones into the global
// queue while it has room (memory may be back by now): one sweep per
// queueful, not one per process.
OTPP_FUNC process_base* runtime_core::adopt_stranded() noexcept {
  process_base* first = nullptr;
  for (auto& sh : shards_) {
    std::lock_guard lock{sh.mutex};
    for (process_base* p = sh.head; p != nullptr; p = p->live_next_) {
      if (!p->take_stranded()) continue;
      stranded_.fetch_sub(1, std::memory_order_relaxed);
      injection_size_.fetch_sub(1, std::memory_order_relaxed);
      if (first == nullptr) {
        first = p;
        continue;
      }
      bool queued;
      {
        std::lock_guard q{injection_mutex_};
        queued = injection_.push(p);
        if (queued) injection_size_.fetch_add(1, std::memory_order_release);
      }
      if (!queued) {
        strand(p);
        return first;
      }
    }
  }
  return first;
}

// -- the deadline watchdog ------------------------------------------------------------
//
// Workers resume a parked fiber at its deadline when one of them is idle (or
// between turns). When every worker is inside a handler that runs on (a
// callee blocked on a lock, a long computation), nobody would, and the
// call's timeout would fire only when a handler returns: the promise of a
// finite timeout is that it fires on time whatever the handlers do. So one
// thread per runtime, started with the first parked deadline, sleeps until
// the earliest deadline (re-checked every 10 ms while any is parked, since
// an earlier one can arrive without waking it), and resumes itself, on its
// own thread, a fiber still unclaimed 2 ms past its deadline. It runs only
// that process's turn, then goes back to watching. It is not a worker: it
// owns no queues and shows in no thread count.

OTPP_FUNC void runtime_core::start_watchdog() noexcept {
  std::lock_guard lock{spare_mutex_};
  if (watch_started_.load(std::memory_order_relaxed) || terminating_.load(std::memory_order_relaxed)) return;
  add_ref();
  try {
    watchdog_ = std::thread([this] { watchdog_main(); });
  } catch (...) {
    refs_.fetch_sub(1, std::memory_order_relaxed);
    return;  // no thread: deadlines are kept by the workers alone
  }
  watch_started_.store(true, std::memory_order_release);
}

OTPP_FUNC fiber* runtime_core::pop_overdue(std::int64_t before, std::int64_t& next) noexcept {
  std::lock_guard lock{fiber_mutex_};
  fiber* prev = nullptr;
  for (fiber* f = ready_head_; f != nullptr; prev = f, f = f->link) {
    if (f->deadline == steady::time_point::max()) continue;
    const std::int64_t d = f->deadline.time_since_epoch().count();
    if (d > before) {
      next = std::min(next, d);
      continue;
    }
    if (prev != nullptr) {
      prev->link = f->link;
    } else {
      ready_head_ = f->link;
    }
    if (ready_tail_ == f) ready_tail_ = prev;
    f->link = nullptr;
    ready_count_.store(ready_count_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);  // under the lock
    f->state.store(fiber::running, std::memory_order_relaxed);
    return f;
  }
  return nullptr;
}

OTPP_FUNC void runtime_core::watchdog_main() noexcept {
  constexpr std::int64_t grace = 2'000'000;   // ns past a deadline before we step in
  constexpr std::int64_t recheck = 10'000'000;
  tls().rt = this;
  fiber own;
  init_native_fiber(own);
  tls().fib = &own;
  tls().native = &own;
  while (!watch_stop_.load(std::memory_order_acquire)) {
    if (fiber_due()) (void)expire_fibers();
    std::int64_t next = no_deadline;
    const std::int64_t now = steady::now().time_since_epoch().count();
    if (fiber* f = pop_overdue(now - grace, next)) {
      switch_to(f, {});  // back here when its turn is over or it parks again
      continue;
    }
    const std::uint32_t word = watch_word_.load(std::memory_order_seq_cst);
    steady::time_point until = steady::time_point::max();
    if (timed_count_.load(std::memory_order_seq_cst) != 0 || ready_count_.load(std::memory_order_seq_cst) != 0) {
      next = std::min(next, timed_min_ns_.load(std::memory_order_relaxed));
      const std::int64_t at = next == no_deadline ? now + recheck : std::min(next + grace, now + recheck);
      until = steady::time_point{steady::duration{at}};
    } else {
      watch_asleep_.store(true, std::memory_order_seq_cst);
      // Pairs with finish_park: a deadline parked after this is seen below, or wakes us.
      heavy_fence();
      if (timed_count_.load(std::memory_order_seq_cst) != 0) {
        watch_asleep_.store(false, std::memory_order_relaxed);
        continue;
      }
    }
    if (!watch_stop_.load(std::memory_order_acquire)) park(watch_word_, word, until);
    watch_asleep_.store(false, std::memory_order_relaxed);
  }
  tls() = {};
  watch_finished_.store(1, std::memory_order_release);
  unpark_one(watch_finished_);
  release();
}

OTPP_FUNC void runtime_core::stop_watchdog(steady::time_point deadline) noexcept {
  if (!watch_started_.load(std::memory_order_acquire)) return;
  watch_stop_.store(true, std::memory_order_seq_cst);
  watch_word_.fetch_add(1, std::memory_order_seq_cst);
  unpark_all(watch_word_);
  while (watch_finished_.load(std::memory_order_acquire) == 0 && steady::now() < deadline) {
    park(watch_finished_, 0, std::min(deadline, steady::now() + std::chrono::milliseconds(5)));
  }
  std::lock_guard lock{spare_mutex_};
  if (!watchdog_.joinable()) return;
  if (watch_finished_.load(std::memory_order_acquire) != 0 && watchdog_.get_id() != std::this_thread::get_id()) {
    watchdog_.join();
  } else {
    watchdog_.detach();  // stuck in a rescued handler: it holds the core until it returns
  }
}

// -- the idle timer: set_timeout, hibernate, hibernate_after ---------------------

/// An idle timer's node: delivers an idle_timer_node of its generation.
struct idle_timer final : timer_node {
  explicit idle_timer(std::uint64_t g) : gen{g} { kind = timer_kind_of<idle_timer>(); }
  std::uint64_t gen;
  static timer_delivery do_deliver(timer_node* t, bool) noexcept {
    auto* self = static_cast<idle_timer*>(t);
    try {
      return self->dest->enqueue(make_node<idle_timer_node>(self->gen)) ? timer_delivery::delivered : timer_delivery::gone;
    } catch (...) {
      return timer_delivery::no_memory;
    }
  }
  static void do_destroy(timer_node* t) noexcept { free_node(static_cast<idle_timer*>(t)); }
  static constexpr timer_ops table{&do_deliver, &do_destroy};
};


OTPP_FUNC void process_base::settle_idle() noexcept {
  if (local_ & dry_asked) {
    local_ &= ~dry_asked;
    run_mailbox_dry();
    if (!(local_ & idle_flags) || (local_ & exit_pending)) return;
  }
  const std::int64_t since = (local_ & idle_since_set) ? cold_->idle_since : rt_->timers().now_ns();
  local_ &= ~idle_since_set;
  if (local_ & timeout_asked) {
    local_ &= ~timeout_asked;
    arm_idle(since + cold_->timeout_requested, false);
    return;
  }
  if (local_ & hibernate_asked) {
    local_ &= ~hibernate_asked;
    if (mailbox_waiting()) return;  // a message is waiting: go on at once
    hibernate_now();
    return;
  }
  if ((local_ & (auto_hibernate | idle_armed | hibernated)) == auto_hibernate) {
    arm_idle(since + cold_->hibernate_after, true);
  }
}

// Arms the idle timer for `due`, keeping the live one if it fires no later
// (it re-arms itself then): re-arming on every message costs no timer churn.
OTPP_FUNC void process_base::arm_idle(std::int64_t due, bool hibernation) noexcept {
  process_cold& c = *cold_;
  local_ = (local_ & ~armed_hibernate) | idle_armed | (hibernation ? armed_hibernate : 0);
  c.idle_due = due;
  if (c.idle_timer != nullptr && c.idle_timer_due <= due) return;
  timer_service& svc = rt_->timers();
  if (c.idle_timer != nullptr) {
    (void)svc.cancel(c.idle_timer, timer_inbox(svc));  // if it already fired, its message is stale
    c.idle_timer->release();
    c.idle_timer = nullptr;
  }
  const std::uint64_t gen = ++c.idle_gen;
  try {
    if (due <= svc.now_ns()) {
      // Due now (a zero timeout): a message behind whatever is queued.
      enqueue(make_node<idle_timer_node>(gen));
      return;
    }
    auto* t = make_node<idle_timer>(gen);
    add_ref();
    t->dest = this;
    t->deadline.store(due, std::memory_order_relaxed);
    c.idle_timer = t;
    c.idle_timer_due = due;
    svc.schedule(t, timer_inbox(svc));
  } catch (...) {
    local_ &= ~idle_armed;  // out of memory: no timeout rather than a crash
  }
}

OTPP_FUNC void process_base::idle_timer_due(std::uint64_t gen) noexcept {
  process_cold& c = *cold_;
  if (gen != c.idle_gen) return;  // superseded
  if (c.idle_timer != nullptr) {
    c.idle_timer->release();
    c.idle_timer = nullptr;
  }
  if (!(local_ & idle_armed)) return;
  if (rt_->timers().now_ns() < c.idle_due) {
    arm_idle(c.idle_due, (local_ & armed_hibernate) != 0);  // re-armed later meanwhile
    return;
  }
  local_ &= ~idle_armed;
  if (local_ & armed_hibernate) {
    hibernate_now();
    return;
  }
  dispatch_timeout();
}

OTPP_FUNC void process_base::hibernate_now() noexcept {
  local_ |= hibernated;
  publish_hibernating(true);
  run_on_hibernate();
  if (process_cold* c = cold_if_any()) {
    c->links.shrink();  // the fewest buckets for what is left
    if (c->mon) {
      c->mon->monitors.rehash(0);
      c->mon->watching.rehash(0);
    }
    c->deferred.shrink();
    c->stop_waiters.shrink_to_fit();
    c->held_replies.shrink_to_fit();
  }
  pool_trim();
}

// -- handlers that wait ------------------------------------------------------------

/// The deadline timer's message: a signal, so it acts while a handler waits.
struct deadline_signal final : message_node {
  explicit deadline_signal(std::uint64_t g) noexcept : gen{g} { fn = &handle; }
  std::uint64_t gen;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<deadline_signal*>(n);
    const std::uint64_t gen = self->gen;
    free_node(self);
    if (op == msg_op::invoke) p.deadlines_due(gen);
  }
};

/// The timer behind a process's wait deadlines. Its signal is made when it
/// is armed: firing allocates nothing, so a deadline is never lost.
struct deadline_timer final : timer_node {
  explicit deadline_timer(deadline_signal* s) : signal{s} { kind = timer_kind_of<deadline_timer>(); }
  deadline_signal* signal;
  static timer_delivery do_deliver(timer_node* t, bool) noexcept {
    auto* self = static_cast<deadline_timer*>(t);
    self->dest->enqueue_signal(std::exchange(self->signal, nullptr));
    return timer_delivery::delivered;
  }
  static void do_destroy(timer_node* t) noexcept {
    auto* self = static_cast<deadline_timer*>(t);
    if (self->signal) free_node(self->signal);
    free_node(self);
  }
  static constexpr timer_ops table{&do_deliver, &do_destroy};
};

OTPP_FUNC void process_base::arm_deadline_timer(std::int64_t due) {
  process_waits& ws = *cold_->waits;
  timer_service& svc = rt_->timers();
  const std::uint64_t gen = ws.deadline_gen + 1;
  auto* s = make_node<deadline_signal>(gen);
  deadline_timer* t;
  try {
    t = make_node<deadline_timer>(s);
  } catch (...) {
    free_node(s);
    throw;
  }
  if (ws.deadline_timer != nullptr) {
    (void)svc.cancel(ws.deadline_timer, timer_inbox(svc));  // if it already fired, its signal is stale
    ws.deadline_timer->release();
  }
  ws.deadline_gen = gen;
  add_ref();  // the timer's, on its destination
  t->dest = this;
  t->deadline.store(due, std::memory_order_relaxed);
  ws.deadline_timer = t;  // the handle's reference; the service holds the other
  ws.deadline_timer_due = due;
  svc.schedule(t, timer_inbox(svc));
}

// An entry takes no reference on its slot: the call that added it removes
// it before letting go of the slot (its await_resume, or its destructor when
// the frame goes), on this process's thread. A reference here was two
// atomic operations per call on the cache line the callee writes its reply
// to: ~40% of a sequential co_awaited call (otpp_bench call_process_async_ns).
//
// The first wait's entry is kept in the process's record beside the waker
// that wait has just set, so that adding and removing it touch no memory of
// their own: with 64 client processes migrating between workers, the
// vector's buffer was a cache miss on each (~10% of call_concurrent_64_async).
// The vector keeps room for that entry too, so deadlines_due merges it
// without allocating.
//
// Taken field by field, not as an await_deadline: a caller's struct built
// just before and copied whole here stalled the copy's wide load on the
// narrow stores that made it (store forwarding, seen in perf annotate of
// a co_awaited call).
OTPP_FUNC void process_base::add_deadline_slow(wait_due due, reply_slot_base* slot, slot_waker* waker) {
  process_waits& ws = *cold_->waits;
  const bool first = !ws.first_deadline_used;
  if (first) {
    if (ws.deadlines.capacity() == ws.deadlines.size()) ws.deadlines.reserve(ws.deadlines.size() + 4);
    ws.first_deadline.due = due.ns;
    ws.first_deadline.slot = slot;
    ws.first_deadline.waker = waker;
    ws.first_deadline.stamp = due.stamp;
    ws.first_deadline_used = true;
  } else {
    if (ws.deadlines.capacity() < ws.deadlines.size() + 2) ws.deadlines.reserve(ws.deadlines.size() * 2 + 2);
    ws.deadlines.push_back({due.ns, slot, waker, due.stamp});  // within the capacity just made
  }
  if (ws.deadline_timer != nullptr && ws.deadline_timer_due <= due.ns) {
    return;  // it fires in time, then re-arms for what is left
  }
  try {
    arm_deadline_timer(due.ns);
  } catch (...) {
    if (first) {
      ws.first_deadline_used = false;
    } else {
      ws.deadlines.pop_back();
    }
    throw;
  }
}

OTPP_FUNC bool process_base::remove_deadline_slow(const reply_slot_base* slot, const slot_waker* waker) noexcept {
  process_waits& ws = *cold_->waits;
  // A call's entry by its slot; a sleep's (no slot) by its waker.
  auto is_it = [&](const await_deadline& d) { return slot ? d.slot == slot : (d.slot == nullptr && d.waker == waker); };
  if (ws.first_deadline_used && is_it(ws.first_deadline)) {
    ws.first_deadline_used = false;
    return true;
  }
  for (std::size_t i = 0; i < ws.deadlines.size(); ++i) {
    await_deadline& d = ws.deadlines[i];
    if (!is_it(d)) continue;
    d = ws.deadlines.back();
    ws.deadlines.pop_back();
    return true;
  }
  return false;
}

OTPP_FUNC void process_base::deadlines_due(std::uint64_t gen) noexcept {
  process_waits& ws = *cold_->waits;
  if (gen != ws.deadline_gen) return;  // superseded by an earlier deadline
  if (ws.deadline_timer != nullptr) {
    ws.deadline_timer->release();
    ws.deadline_timer = nullptr;
  }
  if (ws.first_deadline_used) {
    ws.deadlines.push_back(ws.first_deadline);  // into the room add_deadline kept: no allocation
    ws.first_deadline_used = false;
  }
  timer_service& svc = rt_->timers();
  const std::int64_t now = svc.now_ns();
  // A call's stamped due is a lower bound: once its stamp has ended, the
  // end bounds when the call was sent. A stamp still current past that
  // bound means the timer thread has stalled for the whole timeout; then
  // now bounds the send instead (late, never early).
  for (await_deadline& d : ws.deadlines) {
    if (d.stamp == 0) continue;
    const std::int64_t timeout = d.due - svc.stamp_start_ns(d.stamp);
    if (const std::int64_t end = svc.stamp_end_ns(d.stamp, now); end >= 0) {
      d.due = end + timeout;
    } else if (d.due <= now) {
      d.due = now + timeout;
    } else {
      continue;
    }
    d.stamp = 0;
  }
  // The waits that are over go to the back, latest first, and end from the
  // back: earliest deadline first (reentrant waits resume in that order).
  const auto over = std::partition(ws.deadlines.begin(), ws.deadlines.end(),
                                   [now](const await_deadline& d) { return d.due > now; });
  std::sort(over, ws.deadlines.end(), [](const await_deadline& a, const await_deadline& b) { return a.due > b.due; });
  const std::size_t pending = static_cast<std::size_t>(over - ws.deadlines.begin());
  while (ws.deadlines.size() > pending) {
    const await_deadline d = ws.deadlines.back();
    ws.deadlines.pop_back();
    // A call: whoever ends the wait wakes the handler (the reply may have
    // just won). A sleep: its time has come.
    if (d.slot == nullptr || d.slot->abandon()) d.waker->wake(d.waker);
  }
  if (ws.deadlines.empty()) return;
  std::int64_t next = ws.deadlines.front().due;
  for (const await_deadline& d : ws.deadlines) next = std::min(next, d.due);
  try {
    arm_deadline_timer(next);
  } catch (...) {
    log_rt(log_level::error, "otpp: process {} ({}): no memory to re-arm the deadline of a wait; it now ends only "
           "with its answer", pid_text{id()}.view(), type_name());
  }
}

// The process exits: its waits are gone with their frames; stop the timer
// (it holds a reference to us) and drop what is left.
OTPP_FUNC void process_base::drop_deadlines(process_waits& ws) noexcept {
  if (ws.deadline_timer != nullptr) {
    timer_service& svc = rt_->timers();
    (void)svc.cancel(ws.deadline_timer, timer_inbox(svc));
    ws.deadline_timer->release();
    ws.deadline_timer = nullptr;
  }
  ws.first_deadline_used = false;
  ws.deadlines.clear();
}

OTPP_FUNC void process_base::run_handler(const awaiting_handler& h) noexcept { drive(h, h.top); }

OTPP_FUNC void process_base::resume_handler(std::coroutine_handle<> leaf) noexcept {
  process_waits& ws = *cold_->waits;
  const awaiting_handler h = std::exchange(ws.awaiting, awaiting_handler{});
  local_ &= ~awaiting;
  drive(h, leaf);
}

// Runs handler `h` from `leaf` until it finishes or suspends again, then
// finishes it, or keeps it where its wait says: a reentrant wait's record
// (the process runs on), or the process's one awaiting handler (the other
// messages are held back). Inlined by force into its two callers: GCC at
// -O3 called it from the turn loop (callgrind: 12 instructions more per
// gen_statem call, 4 per gen_server call). `inline` in the compiled build
// too (not OTPP_FUNC): only this file's functions call it.
[[gnu::always_inline]] inline void process_base::drive(awaiting_handler h, std::coroutine_handle<> leaf) noexcept {
  process_waits& ws = *cold_->waits;
  ws.running = &h;
  if ((local_ & reentrant_handlers) || h.reentrant_scopes) local_ |= reentrant_next;
  leaf.resume();
  local_ &= ~reentrant_next;
  ws.running = nullptr;
  if (h.top.done()) {
    cancel_reentrant_wait();  // the last wait was over at once
    h.finish(*this, h);
    return;
  }
  if (reentrant_wait* w = std::exchange(ws.suspending, nullptr)) {
    w->handler = h;
    w->prev = nullptr;
    w->next = ws.reentrant_head;
    if (w->next) w->next->prev = w;
    ws.reentrant_head = w;
    return;
  }
  ws.awaiting = h;
  local_ |= awaiting;
}

OTPP_FUNC void process_base::enter_reentrant() noexcept {
  ++cold_->waits->running->reentrant_scopes;
  local_ |= reentrant_next;
}

OTPP_FUNC void process_base::leave_reentrant() noexcept {
  if (--cold_->waits->running->reentrant_scopes == 0 && !(local_ & reentrant_handlers)) local_ &= ~reentrant_next;
}

OTPP_FUNC slot_waker* process_base::reentrant_waker(std::coroutine_handle<> leaf) {
  process_waits& ws = *cold_->waits;
  reentrant_wait* w = ws.reentrant_spare;
  if (w) {
    ws.reentrant_spare = w->next;
  } else {
    w = new reentrant_wait;
  }
  // The record of an earlier wait that was over at once goes back first:
  // the last record set up belongs to the wait that suspends.
  if (ws.suspending) cancel_reentrant_wait();
  w->target = this;
  w->leaf = leaf;
  w->next = nullptr;
  ws.suspending = w;
  return w;
}

OTPP_FUNC void process_base::cancel_reentrant_wait() noexcept {
  process_waits& ws = *cold_->waits;
  if (reentrant_wait* w = std::exchange(ws.suspending, nullptr)) {
    w->next = ws.reentrant_spare;
    ws.reentrant_spare = w;
  }
}

OTPP_FUNC void process_base::resume_reentrant(reentrant_wait* w) noexcept {
  process_waits& ws = *cold_->waits;
  // Off the list, into the spares: its wait is over, and the handler, if it
  // waits again, sets up a fresh record.
  if (w->prev) {
    w->prev->next = w->next;
  } else {
    ws.reentrant_head = w->next;
  }
  if (w->next) w->next->prev = w->prev;
  const awaiting_handler h = w->handler;
  const std::coroutine_handle<> leaf = w->leaf;
  w->handler = awaiting_handler{};
  w->prev = nullptr;
  w->next = ws.reentrant_spare;
  ws.reentrant_spare = w;
  drive(h, leaf);
}

// The next message to handle on a turn's slow path: while a handler awaits,
// the next system message (the others are held back); after, the held ones
// first, in order, then the mailbox.
OTPP_FUNC message_node* process_base::next_held_back() noexcept {
  if (local_ & (awaiting | suspended)) {
    while (auto* n = static_cast<message_node*>(mailbox_.pop(head_, is_resume))) {
      if (n->fn == &system_node::handle || is_resume(n)) return n;
      hold_back(n);
    }
    return nullptr;
  }
  if (local_ & has_held) {
    process_waits& ws = *cold_->waits;
    message_node* n = ws.held_head;
    ws.held_head = static_cast<message_node*>(n->next_.load(std::memory_order_relaxed));
    if (ws.held_head == nullptr) {
      ws.held_tail = nullptr;
      local_ &= ~has_held;
    }
    return n;
  }
  return static_cast<message_node*>(mailbox_.pop(head_, is_resume));
}

// A popped node's link is free: the queue no longer reaches it.
OTPP_FUNC void process_base::hold_back(message_node* n) noexcept {
  process_waits& ws = *cold_->waits;
  n->next_.store(nullptr, std::memory_order_relaxed);
  if (ws.held_tail) {
    ws.held_tail->next_.store(n, std::memory_order_relaxed);
  } else {
    ws.held_head = n;
  }
  ws.held_tail = n;
  local_ |= has_held;
}

// The process exits while a handler awaits: the frame goes (and with it
// every wait in it: late replies are dropped), and the call it was
// answering fails with the final reason, as the deferred ones do.
OTPP_FUNC void process_base::abandon_handler(process_cold& c, process_waits& ws) noexcept {
  awaiting_handler h = std::exchange(ws.awaiting, awaiting_handler{});
  local_ &= ~awaiting;
  abandon_one(c, h);
}

OTPP_FUNC void process_base::abandon_reentrant(process_cold& c, process_waits& ws) noexcept {
  while (reentrant_wait* w = ws.reentrant_head) {
    ws.reentrant_head = w->next;
    awaiting_handler h = std::exchange(w->handler, awaiting_handler{});
    // Its wake-up may be queued, or on its way: the record stays (the cold
    // state frees it), and the discarded node does nothing.
    w->prev = nullptr;
    w->next = ws.reentrant_spare;
    ws.reentrant_spare = w;
    abandon_one(c, h);
  }
}

OTPP_FUNC void process_base::abandon_one(process_cold& c, awaiting_handler& h) noexcept {
  h.top.destroy();
  if (h.slot) {
    try {
      c.deferred.push(h.slot);
    } catch (...) {
      h.slot->fail(exit_reason::out_of_memory());
      h.slot->release();
    }
  }
  if (h.caller) h.caller->release();
}

OTPP_FUNC void process_base::discard_held(process_waits& ws, const exit_reason& why) noexcept {
  while (message_node* n = ws.held_head) {
    ws.held_head = static_cast<message_node*>(n->next_.load(std::memory_order_relaxed));
    n->fn(*this, n, msg_op::discard, &why);
  }
  ws.held_tail = nullptr;
  local_ &= ~has_held;
}

OTPP_FUNC exit_reason process_base::finish_exit(bool keep_ref) noexcept {
  // exit_pending implies a cold part with the reason, or a flag for it.
  exit_reason reason = (local_ & exit_killed_bare) ? exit_reason::killed()
                       : (local_ & exit_oom_bare)  ? exit_reason::out_of_memory()
                                                   : std::move(cold_->exit);
  const bool with_terminate = (local_ & call_terminate) != 0;
  local_ &= ~(exit_pending | call_terminate | exit_killed_bare | exit_oom_bare);
  return exit_now(std::move(reason), with_terminate, keep_ref);
}

OTPP_FUNC exit_reason process_base::exit_now(exit_reason reason, bool with_terminate, bool keep_ref) noexcept {
  process_cold* c = (local_ & has_cold) ? cold_ : nullptr;
  process_waits* ws = c ? c->waits : nullptr;
  if (ws && (local_ & awaiting)) abandon_handler(*c, *ws);
  if (ws && ws->reentrant_head) abandon_reentrant(*c, *ws);
  if (ws) drop_deadlines(*ws);
  if (with_terminate) run_terminate(reason);
  if (c && c->idle_timer) {
    // The timer holds a reference to us: cancel it to break the cycle.
    timer_service& svc = rt_->timers();
    (void)svc.cancel(c->idle_timer, timer_inbox(svc));
    c->idle_timer->release();
    c->idle_timer = nullptr;
  }
  if (c) {
    for (message_node* n : c->held_replies) n->fn(*this, n, msg_op::invoke, nullptr);
    c->held_replies.clear();
  }
  if (!reason.is_sane()) {
    if (c && !c->crash_message.empty()) {
      detail::log_rt(log_level::error, "otpp: process {} ({}) terminating: {}; last message: {} ({})", pid_text{id()}.view(), type_name(),
          reason, c->crash_message, c->crash_kind);
    } else {
      detail::log_rt(log_level::error, "otpp: process {} ({}) terminating: {}", pid_text{id()}.view(), type_name(), reason);
    }
  }
  if (c && c->continuation) {
    message_node* n = c->continuation;
    c->continuation = nullptr;
    local_ &= ~has_continue;
    n->fn(*this, n, msg_op::discard, &reason);
  }
  if (local_ & constructed) destroy_state();
  local_ &= ~constructed;
  // The name goes first, so whoever learns of the death (a supervisor about
  // to restart the child under the same name) finds it free.
  if (c) {
    release_name(*this, *c);
    for (auto& h : c->exit_hooks) h->on_exit(*this);
    c->exit_hooks.clear();
  }
  state_.store(dead, std::memory_order_seq_cst);  // we still hold the run right: senders now discard
  if (ws) discard_held(*ws, reason);
  drain(reason);
  // Out of the process table before anyone hears of the death: a supervisor
  // (or a test) that saw the exit never counts the process as live.
  rt_->unregister_process(this);
  if (c) signal_exit(*this, *c, reason);
  if (c) {
    c->deferred.drain([&](reply_slot_base* d) {
      d->fail(reason);
      d->release();
    });
  }
  if (c) {
    for (auto& w : c->stop_waiters) {
      if (w.requested == reason) {
        w.slot->set_value();
      } else {
        w.slot->fail(reason);
      }
      w.slot->release();
    }
    c->stop_waiters.clear();
  }
  drain_dead();  // what came in meanwhile, and the run right goes
  if (!keep_ref) release();  // the "alive" reference; `this` may be gone now
  return reason;
}


/// The stop protocol message (Erlang's system terminate request).
// A system message: a stop reaches a process whose handler awaits.
struct stop_node final : system_node {
  stop_node(exit_reason r, reply_slot<void>* s) : system_node{&handle}, reason{std::move(r)}, slot{s} {}
  exit_reason reason;
  reply_slot<void>* slot;

  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason* why) noexcept {
    auto* self = static_cast<stop_node*>(n);
    if (op == msg_op::invoke) {
      try {
        p.add_stop_waiter(self->slot, self->reason);
        p.request_exit(std::move(self->reason), true);
      } catch (...) {
        self->slot->fail(exit_reason::out_of_memory());
        self->slot->release();
      }
    } else {
      self->slot->fail(*why);
      self->slot->release();
    }
    free_node(self);
  }
};


/// Waits until `slot` is resolved or the deadline passes, the way a worker
/// must, without giving the slot up (exit_watch may wait again). A reply from
/// the other core takes about a microsecond, so spin first (running the
/// callee here if it sits in our own LIFO slot). Then sleep in short slices:
/// a worker holding the callee may just be descheduled. Only a wait that
/// outlasts `handoff_after`, while other processes are queued behind us,
/// hands our slot to a spare thread: handing off at every contended call
/// would start a thread per caller and oversubscribe the cores.
OTPP_FUNC bool await_resolution(reply_slot_base* slot, steady::time_point deadline, process_base* callee,
                             bool callee_nonblocking, bool deadline_far) noexcept {
  constexpr auto spin_for = std::chrono::microseconds(20);
  constexpr auto handoff_after = std::chrono::microseconds(1000);
  // When the wait began, read only by the waits that spin or sleep: a clock
  // read costs ~20 ns here, a tenth of a call that parks at once.
  steady::time_point start{};
  // Only a wait without a deadline, or on a callee that promised never to
  // block, may run the callee here: a handler run on this stack holds the
  // waiter until it returns, whatever the deadline.
  const bool may_help = callee_nonblocking || deadline == steady::time_point::max();
  // On a fiber, a callee our call just woke sits in this worker's LIFO
  // slot: park at once, and the worker runs it next and resumes us after
  // (see make_ready), all on one core. Spinning instead, with the callee
  // handed to the other worker, made every call a round trip between cores.
  const thread_ctx& caller = tls();  // nothing below switches stacks before the park
  const bool queued_here = !may_help && callee != nullptr && caller.slot != nullptr && caller.rt == callee->rt() &&
                           caller.slot->lifo_peek() == callee && caller.fib != nullptr && caller.fib != caller.native;
  if (!may_help && !queued_here && callee != nullptr && caller.rt == callee->rt()) {
    try {
      callee->rt()->release_for_wait(callee);
    } catch (...) {
      // No spare thread to be had: the callee stays queued here, and the
      // wait below still ends at the deadline.
    }
  }
  auto help = [&]() noexcept {
    if (!may_help || callee == nullptr) return false;
    const thread_ctx& t = tls();
    worker_slot* s = t.slot;
    if (s == nullptr || t.rt != callee->rt() || !s->take_lifo_if(callee)) return false;
    // We took its ticket.
    const turn_result r = callee->run_turn(callee->rt()->config().batch);
    if (r == turn_result::yielded) callee->schedule_owned();
    callee->release_ticket(r);
    return true;
  };
  if (const thread_ctx& t = tls(); t.fib != nullptr && t.fib != t.native && t.rt != nullptr) {
    // On a fiber: spin for a reply from the other core while nothing else
    // wants this worker, then the fiber parks and the worker carries on.
    // It parks at once when the callee waits here (above) or the runtime
    // has one worker: no other core can answer, and the worker runs the
    // callee once parked (a call between two processes on one worker:
    // 2.7 us -> 0.3 us).
    runtime_core* const rt = t.rt;
    const bool alone = queued_here || (callee != nullptr && callee->rt() == rt && rt->config().workers == 1);
    if (!alone) start = steady::now();
    for (unsigned i = 0; !alone; ++i) {
      if (slot->resolved()) return true;
      cpu_relax();
      if ((i & 31) == 31) {
        if (help()) continue;
        const auto now = steady::now();
        if (now >= deadline) return slot->resolved();
        // A reply from a core that runs the callee comes in a microsecond
        // or two; one that takes longer is probably waiting on more (a chain).
        if (now - start >= (callee_nonblocking ? spin_for : std::chrono::microseconds(6))) break;
        // Others want this worker: park after a couple of microseconds (a
        // reply from a busy core often comes sooner than a park and resume).
        const worker_slot* s = tls().slot;
        // (A callee that promised never to block answers as soon as it runs:
        // spin longer for it.)
        if ((s == nullptr || rt->others_waiting(*s)) && now - start >= (callee_nonblocking ? spin_for : std::chrono::microseconds(2))) break;
        std::this_thread::yield();
      }
    }
    // A spin ends just after finding the deadline ahead. A wait that parks
    // at once looks at the clock only when its deadline may be near: a
    // zero timeout stays a timeout, and a deadline set a moment ago, a
    // millisecond or more ahead, has not passed unless this thread lost its
    // core (then the watchdog ends the park; a reply there first wins, as
    // in a receive).
    if (alone && !deadline_far && steady::now() >= deadline) return slot->resolved();
    if (rt->park_until(slot, deadline)) {
      // Resumed, perhaps on another thread: by the resolution, or by the deadline.
      if (slot->resolved()) return true;
      if (slot->unawait()) return false;
      return slot->resolved();
    }
  }
  if (start == steady::time_point{}) start = steady::now();
  for (unsigned i = 0;; ++i) {
    if (slot->resolved()) return true;
    cpu_relax();
    if ((i & 31) == 31) {
      if (help()) continue;
      // Yield often: callers, workers and spinners outnumber the cores on
      // small machines, and the thread we wait for may be the one we hold
      // the core from (16 us per call instead of 1 on two cores otherwise).
      std::this_thread::yield();
      auto now = steady::now();
      if (now >= deadline || now - start >= spin_for) break;
    }
  }
  runtime_core* rt = tls().rt;
  if (tls().slot != nullptr && rt != nullptr) {
    auto slice = std::chrono::microseconds(50);
    for (;;) {
      auto now = steady::now();
      if (now >= deadline || now - start >= handoff_after) break;
      if (slot->wait_for(std::min(deadline, now + slice))) return true;
      help();
      slice = std::min(slice * 2, std::chrono::microseconds(400));
    }
    if (!slot->resolved() && tls().slot != nullptr && rt->others_waiting(*tls().slot)) {
      try {
        rt->hand_off_slot();
      } catch (...) {
      }
    }
  }
  return slot->wait_for(deadline);
}


/// OTP's guard in gen:call and gen:stop: a negative timeout is a caller's
/// bug, refused before anything reaches the process.
OTPP_FUNC void check_timeout(steady::duration d, const char* operation) {
  if (d < steady::duration::zero()) {
    throw std::invalid_argument(fmt::format(
        "{}: negative timeout {} ms", operation,
        std::chrono::duration_cast<std::chrono::milliseconds>(d).count()));
  }
}

/// "5000 ms" or "infinity", for error messages.
OTPP_FUNC std::string describe_timeout(steady::duration d) {
  if (d == steady::duration::max()) return "infinity";
  return fmt::format("{} ms", std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}


/// otpp::stop for any process.
OTPP_FUNC std::uint32_t enqueue_and_await(process_base* p, message_node* node, reply_slot_base* slot,
                                          steady::duration timeout, bool target_nonblocking) noexcept {
  // A call may find a bounded mailbox full (it fails at once); stop and sys
  // requests never do.
  if (node->fn == &system_node::handle) {
    if (static_cast<system_node*>(node)->urgent) {
      p->enqueue_signal(node);
    } else {
      p->enqueue(node);
    }
  } else {
    (void)p->offer(node, true);
  }
  // A timeout of a second or more takes its deadline from the coarse clock
  // (never early, at most 16 ms late): the exact clock cost ~20 ns of a
  // ~170 ns call between processes.
  return await_reply(slot, coarse_deadline_after(timeout), p, target_nonblocking,
                     timeout >= std::chrono::milliseconds(1));
}

OTPP_FUNC result<void> stop_process(process_base* p, exit_reason reason, steady::duration timeout) {
  check_timeout(timeout, "otpp::stop");
  if (p == nullptr || !p->alive()) return exit_reason::noproc();
  if (p == tls().current) return exit_reason::calling_self();
  return request<void>(
      p, timeout, may_run_inline(timeout), false,
      [&]() -> result<void> {
        exit_reason final;
        {
          current_scope scope{p};
          p->add_ref();  // exit_now drops the alive reference
          final = p->exit_now(reason, true);
        }
        p->release();
        if (final == reason) return {};
        return final;
      },
      [&](reply_slot<void>* slot) { return make_node<stop_node>(std::move(reason), slot); });
}

}  // namespace otpp::detail
