#pragma once
// The scheduler and process table behind otpp::runtime.
//
// Threads and slots: a slot is one worker's queues (a Chase–Lev deque plus a
// LIFO slot for the process just woken). N slots are served by N threads.
// When a thread is about to block in a call, it hands its slot to a spare
// thread (created on demand, parked when not needed) so the slot's processes
// keep running: a blocking call never starves the pool. The blocked thread,
// once its call returns and its process's turn ends, becomes a spare itself.
// (ForkJoinPool's managed blocking, specialised to a thread-per-slot model.)
//
// With fibers (see fiber.hpp), a blocked process does not block its thread
// at all: its stack is parked, and the worker switches to a spare fiber that
// carries on with the queues. Whoever resolves the wait (or an idle worker,
// at its deadline) queues the parked fiber, and any worker switches back
// into it; the thread-handoff above remains for platforms without fibers
// and for when no fiber can be mapped.
//
// Idle threads spin for a short while, then park on a futex word. A push
// wakes a parked thread only when no thread is spinning, so the common cost of
// a wake-up check is one fence and two loads, and an idle runtime uses no CPU.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../exit_reason.hpp"
#include "../log.hpp"
#include "../runtime_config.hpp"
#include "asymmetric_fence.hpp"
#include "fiber.hpp"
#include "fifo_ring.hpp"
#include "parking.hpp"
#include "platform.hpp"
#include "process_base.hpp"
#include "work_stealing_deque.hpp"

namespace otpp {

namespace detail {

class timer_service;

struct worker_slot {
  explicit worker_slot(unsigned i) : index{i}, rng{0x9e3779b97f4a7c15ull * (i + 1)} {}
  work_stealing_deque<process_base*> deque;

  // -- what this worker runs next: the LIFO slot and the fiber to resume --
  //
  // The owner reads and writes both with plain loads and stores. Another
  // worker takes from them only when the owner stalls inside one handler
  // (runtime_core::relieve_stalled), with a compare-and-swap, and the two
  // meet in a Dekker handshake split by asymmetric_fence.hpp. The taker
  // bids, makes every thread pass a full barrier (membarrier), then swaps
  // what it finds for nothing. The owner, after each store, looks for a
  // bid under a compiler barrier only: seeing none, it knows no taker can
  // have swapped what it just took (its store was visible before the
  // taker looked). Seeing one, it waits for the taker's outcome and learns
  // whether what it took went to the taker (settle). A taker that took
  // something leaves its bid up until the owner has seen it, so that the
  // record of what it took is never one the owner did not settle. A locked
  // instruction on each of the four accesses of a round trip between two
  // processes is what this spares.

  /// Owner: a look, which a taker may make stale (a hint only).
  [[nodiscard]] process_base* lifo_peek() const noexcept { return lifo_.load(std::memory_order_relaxed); }
  [[nodiscard]] fiber* next_fiber_peek() const noexcept { return next_fiber_.load(std::memory_order_relaxed); }

  /// Owner: puts `p` in the LIFO slot and returns what it held, unless a
  /// taker took that. Looks for a bid even when the slot was empty: a
  /// taker's bid stays up until the owner has seen it.
  process_base* put_lifo(process_base* p) noexcept {
    process_base* old = lifo_.load(std::memory_order_relaxed);
    lifo_.store(p, std::memory_order_release);  // a taker runs p: it must see p as we left it
    order_before_bid(lifo_);
    if (bid_.load(std::memory_order_relaxed) != no_bid) [[unlikely]]
      old = settle(old, nullptr).process;
    return old;
  }
  /// Owner: empties the LIFO slot and returns what it held, unless a taker
  /// took that.
  process_base* take_lifo() noexcept {
    process_base* p = lifo_.load(std::memory_order_relaxed);
    if (p == nullptr) return nullptr;
    lifo_.store(nullptr, std::memory_order_relaxed);
    order_before_bid(lifo_);
    if (bid_.load(std::memory_order_relaxed) != no_bid) [[unlikely]]
      p = settle(p, nullptr).process;
    return p;
  }
  /// Owner: empties the LIFO slot if it holds `p`; false if it did not (or
  /// a taker took it).
  [[nodiscard]] bool take_lifo_if(process_base* p) noexcept {
    // Only the owner fills the slot: if it holds p now, take_lifo finds p
    // or, if a taker was quicker, nothing.
    return lifo_peek() == p && take_lifo() != nullptr;
  }
  fiber* swap_next_fiber(fiber* f) noexcept {
    fiber* old = next_fiber_.load(std::memory_order_relaxed);
    next_fiber_.store(f, std::memory_order_release);
    order_before_bid(next_fiber_);
    if (bid_.load(std::memory_order_relaxed) != no_bid) [[unlikely]]
      old = settle(nullptr, old).fib;
    return old;
  }

  struct taken {
    process_base* process = nullptr;
    fiber* fib = nullptr;
  };
  /// Another worker's: takes what waits in both. Nothing if another taker
  /// is at it or the owner has not yet seen the last taking, or if the
  /// kernel refuses the barrier this time (the owner must not wait on a
  /// taker that waits on the kernel).
  [[nodiscard]] taken take_from_owner() noexcept {
    std::uint8_t expected = no_bid;
    if (!bid_.compare_exchange_strong(expected, bidding, std::memory_order_acquire)) return {};
    if (!heavy_fence_or_refusal()) {
      bid_.store(no_bid, std::memory_order_release);
      return {};
    }
    taken t;
    if (process_base* p = lifo_.load(std::memory_order_acquire);
        p != nullptr && lifo_.compare_exchange_strong(p, nullptr, std::memory_order_acq_rel))
      t.process = p;
    if (fiber* f = next_fiber_.load(std::memory_order_acquire);
        f != nullptr && next_fiber_.compare_exchange_strong(f, nullptr, std::memory_order_acq_rel))
      t.fib = f;
    if (t.process == nullptr && t.fib == nullptr) {
      bid_.store(no_bid, std::memory_order_release);
      return {};
    }
    taken_ = t;
    bid_.store(took, std::memory_order_release);  // the owner lowers it (settle)
    return t;
  }

 private:
  static constexpr std::uint8_t no_bid = 0, bidding = 1, took = 2;

  /// The owner's half of the fence: its store to `field` stays before its
  /// load of bid_ (the taker's membarrier does the rest). A barrier for
  /// the compiler on these two words alone: a full one (signal fence) made
  /// it reload what it held in registers across every access, and an async
  /// round trip between two processes took 2-3 ns longer for it.
  template <class Field>
  void order_before_bid(Field& field) noexcept {
#if defined(__GNUC__)
    asm volatile("" : "+m"(field), "+m"(bid_));
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
  }

  /// Owner, after an access that saw a bid: what it took (one of the two;
  /// nullptr for the other) less what the taker took. Waits for the taker
  /// to finish, and lowers a bid that took something.
  [[gnu::noinline, gnu::cold]] taken settle(process_base* p, fiber* f) noexcept {
    for (;;) {
      const std::uint8_t b = bid_.load(std::memory_order_acquire);
      if (b == no_bid) return {p, f};
      if (b == took) {
        const taken gone = std::exchange(taken_, taken{});
        bid_.store(no_bid, std::memory_order_release);
        return {gone.process == p ? nullptr : p, gone.fib == f ? nullptr : f};
      }
      std::this_thread::yield();
    }
  }

  std::atomic<process_base*> lifo_{nullptr};  // the process woken here last, run here next
  std::atomic<fiber*> next_fiber_{nullptr};   // woken here, resumed here next
  std::atomic<std::uint8_t> bid_{no_bid};     // a taker's (runtime_core::relieve_stalled)
  taken taken_;                               // what it took, published by bid_ == took

 public:
  fiber* spare_fiber = nullptr;  // owner only: a stack for the next park here, taken without the lock
  // Owner only: the ticket of the last process that went idle here, kept
  // instead of released (see runtime_core::run_turns).
  process_base* kept = nullptr;
  unsigned lifo_streak = 0;
  unsigned tick = 0;
  unsigned index;
  std::uint64_t rng;
  // Stealing backs off while it only bounces processes between workers
  // (see runtime_core::run). Owner only; ns.
  std::int64_t steal_hold = 0;       // how long work must wait in another deque before this worker takes it
  std::int64_t steal_seen = 0;       // when it first saw work to take and held off (0: not holding)
  process_base* stolen = nullptr;    // just stolen, not yet run
  // Written by the slot's owner only (a load and a store, no locked
  // instruction), read by observers.
  std::atomic<std::uint64_t> messages{0};  // taken by processes run here
  std::atomic<std::int64_t> idle_ns{0};    // spent in idle(): spinning or parked with nothing to run
  std::atomic<std::int64_t> idle_since{0}; // when the current idle() began (0: busy)
  // Fibers parked and resumed on this slot's thread, owner-written like the
  // above: a count shared by all workers cost two locked instructions per
  // park on a line every worker wrote (see runtime_core::parked_count).
  // On a line of their own, which also ends the slot on a line boundary:
  // the next slot's queue must not share it.
  alignas(cache_line) std::atomic<std::uint64_t> fiber_parks{0};
  std::atomic<std::uint64_t> fiber_resumes{0};
  // Written by other workers only (runtime_core::relieve_stalled), on a
  // line the owner never touches: the messages count last seen, and since
  // when it has stood still with something waiting here (0: not watched).
  alignas(cache_line) std::atomic<std::uint64_t> watch_messages{0};
  std::atomic<std::int64_t> watch_since{0};
};

/// One worker's counters (see otpp::runtime::schedulers).
struct scheduler_sample {
  std::uint64_t messages = 0;
  std::int64_t idle_ns = 0;
  std::size_t run_queue = 0;
};

inline std::atomic<std::uint64_t> next_process_id{1};

class runtime_core {
 public:
  /// Starts the worker threads.
  explicit runtime_core(runtime_config cfg);

  runtime_core(const runtime_core&) = delete;
  runtime_core& operator=(const runtime_core&) = delete;

  ~runtime_core();

  [[nodiscard]] const runtime_config& config() const noexcept { return cfg_; }
  [[nodiscard]] bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

  // -- scheduling --------------------------------------------------------------

  /// `p` is owned (its `scheduled` bit is ours): queue it to run, with a
  /// ticket (a reference) that the worker running it consumes.
  void schedule(process_base* p) noexcept {
    const thread_ctx& t = tls();
    worker_slot* s = t.slot;
    if (s != nullptr && t.rt == this) {
      if (s->kept == p) {
        s->kept = nullptr;  // the ticket it left here goes with it
      } else {
        p->add_ref();
      }
      if (process_base* before = s->put_lifo(p)) {
        share(*s, before);
        notify();
      }
      // If the turn goes on to another message, p must not wait out its
      // handler where no other worker can take it.
      if (t.current != nullptr) t.current->local_ |= process_base::woke_lifo;
      return;
    }
    p->add_ref();
    push_injection(p);
    notify();
  }

  /// Before a process handles another message in the same turn: what an
  /// earlier handler woke into this worker's LIFO slot, which no other
  /// worker takes, moves to the deque, which they steal from, since the
  /// next handler may keep this worker for long (a computation, a blocking
  /// wait on something that process is to do). The worker still runs it
  /// next if nobody has taken it (its own pops are LIFO too). Within one
  /// handler that wakes a process and then keeps its worker, an idle worker
  /// takes it once it sees the stall (relieve_stalled).
  void share_lifo() noexcept {
    const thread_ctx& t = tls();
    worker_slot* s = t.slot;
    if (s == nullptr || t.rt != this) return;
    if (process_base* p = s->take_lifo()) {
      share(*s, p);
      notify();
    }
  }

  /// Queues `p` (with its ticket) where other workers take from: the
  /// deque of `s`, this thread's slot, or the global queue when the deque
  /// is full with no memory to grow.
  void share(worker_slot& s, process_base* p) noexcept {
    if (!s.deque.push(p)) [[unlikely]]
      push_injection(p);
  }

  /// Drops the ticket `s` kept, if any (before the worker idles or leaves:
  /// a kept ticket holds the process's memory).
  static void drop_kept(worker_slot& s) noexcept {
    if (process_base* p = std::exchange(s.kept, nullptr)) p->release();
  }

  // -- timers --------------------------------------------------------------------

  /// The timer service, started on first use.
  timer_service& timers() {
    if (timer_service* t = timers_.load(std::memory_order_acquire)) [[likely]] return *t;
    return start_timers();
  }
  [[nodiscard]] timer_service* timers_if_started() const noexcept { return timers_.load(std::memory_order_acquire); }
  /// Timers follow a clock other than the steady one (a test's virtual clock).
  [[nodiscard]] bool timers_on_own_clock() const noexcept { return cfg_.clock != nullptr; }
  /// Timers waiting to fire (0 if the service never started).
  [[nodiscard]] std::size_t timer_count() const noexcept;

  /// No process is running or queued: every slot's thread sits in idle()
  /// (so its LIFO slot is empty) and every queue is empty. A snapshot, for
  /// the virtual clock; processes run inline by other threads are not seen.
  [[nodiscard]] bool quiescent() const noexcept {
    const int idle = spinners_.load(std::memory_order_seq_cst) + sleepers_.load(std::memory_order_seq_cst);
    if (idle < static_cast<int>(slots_.size())) return false;
    if (injection_size_.load(std::memory_order_seq_cst) != 0) return false;
    if (ready_count_.load(std::memory_order_seq_cst) != 0) return false;
    for (auto& s : slots_)
      if (!s->deque.empty()) return false;
    return true;
  }

  // -- the process table ---------------------------------------------------------

  void register_process(process_base* p);
  void unregister_process(process_base* p) noexcept;

  /// Processes exited so far (what the timer service's orphan sweep paces itself by).
  [[nodiscard]] std::uint64_t exits() const noexcept;

  /// Live processes, each with a reference the caller must release.
  std::vector<process_base*> live_processes();

  [[nodiscard]] std::size_t live_count() noexcept;

  /// Each worker's counters now (an idle period in progress counted in).
  [[nodiscard]] std::vector<scheduler_sample> scheduler_samples() const;
  /// Processes queued in the global (injection) queue.
  [[nodiscard]] std::size_t injection_length() const noexcept { return injection_size_.load(std::memory_order_relaxed); }

  /// Calls f(process_base&) for each live process, a shard at a time under
  /// its lock (starts and exits in that shard wait meanwhile): f must only
  /// read what the process publishes (atomics), and be quick.
  template <class F>
  void for_each_live(F&& f) {
    for (auto& sh : shards_) {
      std::lock_guard lock{sh.mutex};
      for (process_base* p = sh.head; p; p = p->live_next_) f(*p);
    }
  }

  // -- blocking ------------------------------------------------------------------

  /// Called by a worker thread about to block: its slot goes to a spare.
  void hand_off_slot();

  /// A worker about to wait with a deadline for `callee`, which it just woke
  /// into its own LIFO slot: the callee must run on another thread (running
  /// it on the waiter's stack could outlast the deadline). If another worker
  /// is idle, it steals the callee from our deque; if every other worker is
  /// busy (a chain of calls holds them all), our slot goes to a spare thread
  /// at once rather than after handoff_after.
  void release_for_wait(process_base* callee);

  // -- fibers ----------------------------------------------------------------------

  /// On a worker running on a fiber: parks the fiber until `slot` is
  /// resolved or `deadline` passes, and carries on with the queues on
  /// another. False (nothing done) if no fiber is to be had. On return the
  /// caller may be on another thread.
  bool park_until(reply_slot_base* slot, steady::time_point deadline) noexcept;

  /// Fibers parked or queued to resume (a runtime keeps its threads while
  /// any exist).
  [[nodiscard]] std::size_t parked_fibers() const noexcept { return parked_count(); }

  /// Whether parked fibers wait to resume (on any worker).
  [[nodiscard]] bool fibers_ready() const noexcept { return ready_count_.load(std::memory_order_relaxed) != 0; }

  /// Whether processes are queued that a blocked holder of `s` would keep
  /// from running.
  [[nodiscard]] bool others_waiting(const worker_slot& s) const noexcept {
    return s.lifo_peek() != nullptr || s.next_fiber_peek() != nullptr || !s.deque.empty() || injection_size_.load(std::memory_order_relaxed) != 0;
  }

  // -- shutdown ------------------------------------------------------------------

  /// Stops accepting processes, stops the live ones in reverse start order
  /// (their terminate runs), then joins the threads, all within
  /// shutdown_timeout in total, each with terminate(shutdown). A process
  /// that does not stop in time (stuck in a handler or in terminate) is
  /// abandoned, with one log line, and its thread is left running; the core
  /// is then kept rather than freed under it until that thread ends (each
  /// thread holds a reference). Called again after a failure (bad_alloc), it
  /// finishes the job; once done, it returns at once. Returns whether every
  /// thread was joined.
  bool shutdown();

  [[nodiscard]] bool leaked() const noexcept { return leaked_; }

  // The runtime object holds one reference; every process's memory another
  // (see process_base): a pid may outlive the runtime and still be used.
  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  /// Threads started so far: workers plus spares that stood in for blocked ones.
  [[nodiscard]] std::size_t thread_count();

 private:
  timer_service& start_timers();

  struct thread_record {
    std::thread thread;
    std::atomic<std::uint32_t> word{0};      // spare: 1 when assigned or released
    std::atomic<std::uint32_t> finished{0};  // 1 when the thread function returned
    worker_slot* assigned = nullptr;
  };

  // A spin lock, not a std::mutex: every process takes it twice (start,
  // exit) for a few stores, and the mutex's lock and unlock were ~110
  // instructions of a task's ~2,800 (callgrind, task_async_await).
  struct alignas(cache_line) shard {
    spin_lock mutex;
    process_base* head = nullptr;
    std::size_t count = 0;
    std::atomic<std::uint64_t> exits{0};  // written under mutex, read without
  };
  static constexpr std::size_t shard_count = 64;

  // Stops `p` with reason shutdown; false if it did not stop in `left`.
  static bool stop_for_shutdown(process_base* p, steady::duration left);

  // Called with spare_mutex_ held.
  /// `cpu`: where to bind the new thread (bind_workers); -1: nowhere.
  void start_thread(worker_slot* s, int cpu = -1);

  // Stops live processes newest first, each with the time left. One that
  // does not stop in time is abandoned: logged once, never waited for
  // again. Once the time is up, the rest are only asked to stop (their
  // workers carry that out), and one line says how many were not waited for.
  void stop_processes(steady::time_point deadline);

  process_base* any_live_process(const std::vector<std::uint64_t>& skip) noexcept;

  // Tells every thread to finish, and joins those that do by the deadline.
  // The calling thread, if it is one of ours, is detached: it is running.
  bool join_threads(steady::time_point deadline, bool own_thread) noexcept;

  void thread_main(thread_record* me, worker_slot* initial, int cpu) noexcept;

  // The worker loop: runs until the thread is to end (on its own stack, or
  // on whichever fiber is current; see fiber_main).
  void schedule_loop() noexcept;

  // -- fibers (see park_until) -------------------------------------------------
  [[nodiscard]] bool fibers_on() const noexcept { return fiber_stack_ != 0; }
  static void fiber_main(void* core) noexcept;
  // A spare fiber, or a new one; nullptr if none can be mapped.
  fiber* take_fiber() noexcept;
  // Switches this thread from its current fiber to `to`; `to` completes `a`.
  // Out of line: after it returns the thread may be another.
  void switch_to(fiber* to, fiber_action a) noexcept;
  void after_switch() noexcept;
  void finish_park(fiber* f) noexcept;
  static void wake_fiber(slot_waker* w) noexcept;
  void make_ready(fiber* f) noexcept;
  // Under fiber_mutex_: off the timed list (if on it), onto the ready queue.
  void queue_ready_locked(fiber* f) noexcept;
  void unlink_timed_locked(fiber* f) noexcept;
  fiber* pop_ready() noexcept;
  void retire_fiber(fiber* f) noexcept;
  // Frees spare fibers beyond the standing few (an idle worker's chore).
  void trim_fibers() noexcept;
  // Queues the timed fibers whose deadline has passed; true if any.
  bool expire_fibers() noexcept;
  [[nodiscard]] bool fiber_due() const noexcept {
    const auto min = timed_min_ns_.load(std::memory_order_relaxed);
    return min != no_deadline && steady::now().time_since_epoch().count() >= min;
  }
  [[nodiscard]] steady::time_point next_fiber_deadline() const noexcept {
    const auto min = timed_min_ns_.load(std::memory_order_relaxed);
    return min == no_deadline ? steady::time_point::max() : steady::time_point{steady::duration{min}};
  }
  // The deadline watchdog (see watchdog_main).
  void start_watchdog() noexcept;
  void watchdog_main() noexcept;
  void stop_watchdog(steady::time_point deadline) noexcept;
  // Takes a ready fiber whose deadline passed before `before`; the earliest
  // deadline of the other ready fibers goes to `next`.
  fiber* pop_overdue(std::int64_t before, std::int64_t& next) noexcept;
  // Fibers parked or queued to resume: every resume is read before any
  // park, so a resume counted brings its park with it (release/acquire),
  // and a thread always sees the parks it made itself. A thread that parked
  // a fiber therefore never reads 0 while that fiber waits.
  [[nodiscard]] std::size_t parked_count() const noexcept;
  // A park (or, with `resume`, a resume) on thread `t`, for parked_count.
  void count_fiber(thread_ctx& t, bool resume) noexcept;
  // The thread may end: shutting down, and no parked fiber needs it.
  [[nodiscard]] bool may_leave() const noexcept {
    return terminating_.load(std::memory_order_acquire) && parked_count() == 0;
  }

  worker_slot* wait_for_slot(thread_record* me);

  /// Runs a queued process taken from `s`, this thread's slot; consumes
  /// its ticket (see schedule_owned).
  void run(process_base* p, worker_slot& s) noexcept;
  void run_turns(process_base* p) noexcept;

  process_base* find_work(worker_slot& s) noexcept;

  process_base* steal(worker_slot& s) noexcept;

  /// Work for `s` without stealing: its own queues, the global one, ready fibers.
  [[nodiscard]] bool has_own_work(const worker_slot& s) const noexcept;
  [[nodiscard]] bool others_have_work(const worker_slot& s) const noexcept;
  /// Whether `s` may steal now: it holds off no longer (see run), or the
  /// work it sees has waited out the hold.
  [[nodiscard]] bool hold_over(worker_slot& s) noexcept;
  [[nodiscard]] bool has_work(const worker_slot& s) const noexcept;
  /// has_work, less what `s` is holding off from stealing: other workers'
  /// queues count once the hold has run out, which is read on the clock
  /// only if `read_clock`.
  [[nodiscard]] bool has_work_to_take(worker_slot& s, bool read_clock) noexcept;

  // Work other threads could take: the global queue and every deque.
  [[nodiscard]] std::int64_t queued_hint() const noexcept;

  void idle(worker_slot& s) noexcept;

  /// Takes what waits in the LIFO slot (or as the fiber to resume next) of
  /// any other worker that has run one turn for stall_ns with it waiting:
  /// a handler that woke a process, then kept its worker (a computation, a
  /// wait on something the woken process is to do). The process goes to
  /// this worker's deque, the fiber to the shared ready queue. True if it
  /// took anything. `now`: the steady clock, in ns.
  bool relieve_stalled(worker_slot& s, std::int64_t now) noexcept;
  /// Whether a worker other than `s` is running something.
  [[nodiscard]] bool others_running(const worker_slot& s) const noexcept;
  /// Parks `s`'s idle thread until woken (or a parked fiber is due).
  void park_idle(worker_slot& s, std::uint32_t epoch) noexcept;

  void notify() noexcept {
    // Dekker pairing with idle(): the work we just published is visible to a
    // thread that counted itself as a sleeper before our load, or we see it.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (spinners_.load(std::memory_order_seq_cst) == 0 && sleepers_.load(std::memory_order_seq_cst) > 0) {
      epoch_.fetch_add(1, std::memory_order_seq_cst);
      unpark_one(epoch_);
    }
  }

  void wake_all() noexcept;

  /// Queues `p` (with its ticket) on the global queue, or, if that is full
  /// with no memory to grow, strands it. Never fails. Out of line, as is
  /// the taking behind pop_injection: inlined into schedule() and
  /// find_work, which run once a turn and nearly never take these paths,
  /// they cost an async round trip 3 ns (75 -> 78, otpp_bench
  /// call_process_async_ns, 8 alternated runs).
  void push_injection(process_base* p) noexcept;
  process_base* pop_injection() noexcept;
  process_base* take_injected() noexcept;
  // Out of memory for every queue: `p` is marked in its own run state and
  // counted, and workers find it in the process table (adopt_stranded).
  // Scheduling must not fail, and this needs no memory at all.
  void strand(process_base* p) noexcept;
  process_base* adopt_stranded() noexcept;

  runtime_config cfg_;
  std::vector<std::unique_ptr<worker_slot>> slots_;

  alignas(cache_line) std::atomic<std::size_t> injection_size_{0};
  std::mutex injection_mutex_;
  fifo_ring<process_base*> injection_{256};
  // Processes stranded (see strand); also counted in injection_size_, so
  // that no worker sleeps while one waits.
  std::atomic<std::size_t> stranded_{0};

  alignas(cache_line) std::atomic<std::uint32_t> epoch_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int> spinners_{0};
  // Idle workers relieve stalled ones (relieve_stalled): only with more
  // than one worker, and where heavy_fence is the system call.
  bool lifo_steals_ = false;
  // One parked worker keeps waking to look for stalls (see park_idle),
  // and hands the watch over when it leaves.
  std::atomic<bool> watcher_{false};
  std::atomic<std::uint32_t> watch_handoffs_{0};

  alignas(cache_line) std::mutex spare_mutex_;
  std::vector<std::unique_ptr<thread_record>> threads_;
  std::vector<thread_record*> idle_spares_;

  static constexpr std::int64_t no_deadline = INT64_MAX;
  std::size_t fiber_stack_ = 0;  // 0: no fibers
  std::size_t spare_fiber_cap_ = 0;
  // A spin lock, not a std::mutex: a reply moves a parked caller to the
  // ready queue under it on one worker while the other worker pops or parks
  // fibers under it, and a std::mutex then slept on a futex and paid a
  // wake-up system call for a section of a few stores (otpp_bench
  // call_concurrent_64: 1.8 -> 4.1 M/s). The watchdog's scans of the timed
  // and ready lists are the longest holders; spin_lock yields after a while.
  alignas(cache_line) spin_lock fiber_mutex_;
  fiber* spare_fibers_ = nullptr;  // under fiber_mutex_, as the three below
  std::size_t spare_fiber_count_ = 0;
  std::atomic<std::size_t> spares_{0};  // spare_fiber_count_, for a peek without the lock
  fiber* ready_head_ = nullptr;
  fiber* ready_tail_ = nullptr;
  fiber* timed_ = nullptr;  // parked with a deadline, unsorted
  std::atomic<std::size_t> ready_count_{0};
  std::atomic<std::int64_t> timed_min_ns_{no_deadline};  // a lower bound on the earliest deadline
  // Parks and resumes on threads without a worker slot (the watchdog, a
  // spare thread), which are rare: locked adds.
  std::atomic<std::uint64_t> parks_elsewhere_{0};
  std::atomic<std::uint64_t> resumes_elsewhere_{0};
  std::atomic<std::size_t> parked_peak_{0};  // since the last trim
  std::atomic<bool> burst_seen_{false};  // more fibers than the standing few were parked since the last trim
  std::atomic<std::int64_t> last_burst_ns_{0};  // when a trim found that burst over
  std::atomic<std::size_t> timed_count_{0};  // fibers parked with a deadline
  // The watchdog: a thread that resumes a parked process whose deadline
  // passed while every worker was busy (a worker would otherwise resume it
  // only when its current handler returns).
  alignas(cache_line) std::atomic<std::uint32_t> watch_word_{0};
  std::atomic<bool> watch_asleep_{false};  // sleeping with no deadline to watch
  std::atomic<bool> watch_started_{false};
  std::atomic<bool> watch_stop_{false};
  std::atomic<std::uint32_t> watch_finished_{0};
  std::thread watchdog_;  // under spare_mutex_

  std::atomic<timer_service*> timers_{nullptr};
  std::atomic<bool> closed_{false};
  std::atomic<bool> terminating_{false};
  std::mutex shutdown_mutex_;
  bool shut_down_ = false;  // under shutdown_mutex_
  bool leaked_ = false;
  std::atomic<std::size_t> refs_{1};

  shard shards_[shard_count];
};

// -- process_base members that need the runtime ------------------------------

/// Registers `p` (owned by the caller, not yet published) under `name`:
/// nothing on success, else why not (already_started, naming the holder).
/// Defined in name_table-inl.hpp, as is:
std::optional<exit_reason> register_local_name(process_base* p, std::string name, const void* type);
/// Frees the process's registered name.
void release_name(process_base& p, process_cold& c) noexcept;
/// Sends exit signals to links and downs to monitors (defined in links-inl.hpp).
void signal_exit(process_base& p, process_cold& c, const exit_reason& reason) noexcept;

/// True on a worker of `rt` whose queues are empty and, if it is the
/// runtime's only worker, that no parked fiber waits to resume on (with
/// more, another worker takes the fiber from the shared list).
inline bool worker_has_nothing_else(const runtime_core* rt) noexcept {
  const thread_ctx& t = tls();
  return t.slot != nullptr && t.rt == rt && !rt->others_waiting(*t.slot) &&
         !(rt->config().workers == 1 && rt->fibers_ready());
}

inline bool runtime_quiescent(const runtime_core* rt) noexcept { return rt->quiescent(); }
inline std::uint64_t runtime_exits(const runtime_core* rt) noexcept { return rt->exits(); }
inline void add_core_ref(runtime_core* rt) noexcept { rt->add_ref(); }
inline void release_core_ref(runtime_core* rt) noexcept { rt->release(); }

/// The inbox a timer scheduled by this thread goes to: its worker slot's own.
unsigned timer_inbox(const timer_service& s) noexcept;
/// Now on the clock the runtime's timers follow, in ns (starts the service).
std::int64_t timer_now_ns(runtime_core& rt);
/// A deadline `delay_ns` from now on that clock, cheaply (see
/// timer_service::due_after_ns).
std::int64_t timer_due_after_ns(runtime_core& rt, std::int64_t delay_ns);
/// When an awaited call sent now with timeout `delay_ns` falls due, read
/// as cheaply as that clock allows (see timer_service::call_due).
wait_due call_due_after(runtime_core& rt, std::int64_t delay_ns);
/// Whether the runtime's timers follow their own clock (a virtual one).
inline bool timers_on_own_clock(const runtime_core& rt) noexcept { return rt.timers_on_own_clock(); }

inline void process_base::mark_replied() noexcept {
  if (!(local_ & (timeout_asked | auto_hibernate))) return;
  cold_->idle_since = timer_now_ns(*rt_);
  local_ |= idle_since_set;
}

/// A worker waiting for processes it started itself (a stream's tasks)
/// runs one turn of one of them rather than leave it queued behind its
/// wait: the process in its LIFO slot, or the newest in its deque, if
/// `mine` accepts it. False if there was none, or this is not a worker.
/// Only the waiter's own work is run on its stack: another process could
/// block it past its deadline, or wait on the waiter itself.
template <class Mine>
bool help_own(Mine&& mine) {
  const thread_ctx& t = tls();
  worker_slot* s = t.slot;
  runtime_core* rt = t.rt;
  if (s == nullptr || rt == nullptr) return false;
  process_base* p = nullptr;
  if (process_base* woken = s->lifo_peek(); woken != nullptr && mine(woken) && s->take_lifo_if(woken)) {
    p = woken;
  } else if (process_base* q = s->deque.pop()) {
    if (mine(q)) {
      p = q;
    } else {
      rt->share(*s, q);  // back where it was: the ring has room for it
    }
  }
  if (p == nullptr) return false;
  const turn_result r = p->run_turn(rt->config().batch);
  if (r == turn_result::yielded) p->schedule_owned();
  p->release_ticket(r);
  return true;
}

/// Waits until `slot` is resolved or the deadline passes, the way a worker
/// must (see runtime_core-inl.hpp), without giving the slot up.
/// `deadline_far`: the deadline was set just now, a millisecond or more
/// ahead (a wait that parks at once then skips a clock read).
bool await_resolution(reply_slot_base* slot, steady::time_point deadline, process_base* callee,
                      bool callee_nonblocking = false, bool deadline_far = false) noexcept;

/// A caller's wait: as await_resolution, then the slot is given up at the
/// deadline so a late reply is dropped. Returns ready, failed or abandoned.
inline std::uint32_t await_reply(reply_slot_base* slot, steady::time_point deadline, process_base* callee,
                                 bool callee_nonblocking = false, bool deadline_far = false) noexcept {
  (void)await_resolution(slot, deadline, callee, callee_nonblocking, deadline_far);
  return slot->wait_until(deadline);
}

/// The caller's result from a finished wait.
template <class R>
result<R> collect(reply_slot<R>* slot, std::uint32_t st) {
  if constexpr (std::is_void_v<R>) {
    if (st == reply_slot_base::ready) return {};
  } else {
    if (st == reply_slot_base::ready) return result<R>{std::in_place, slot->take()};
  }
  if (st == reply_slot_base::failed) return slot->error();
  return exit_reason::timeout();
}

/// OTP's guard in gen:call and gen:stop: a negative timeout is a caller's
/// bug, refused (std::invalid_argument) before anything reaches the process.
void check_timeout(steady::duration d, const char* operation);
/// "5000 ms" or "infinity", for error messages.
std::string describe_timeout(steady::duration d);

/// Whether an operation may run on the target's behalf on the caller's
/// thread: only when the caller waits without a deadline (see await_resolution).
inline bool may_run_inline(steady::duration timeout) noexcept { return timeout == steady::duration::max(); }

inline steady::time_point deadline_after(steady::duration d) noexcept {
  auto now = steady::now();
  if (d >= steady::time_point::max() - now) return steady::time_point::max();
  return now + d;
}

/// Delivers a request and waits for its slot until the deadline; the type-
/// independent half of request (one copy, not one per request type).
std::uint32_t enqueue_and_await(process_base* p, message_node* node, reply_slot_base* slot, steady::duration timeout,
                                bool target_nonblocking) noexcept;

/// The one way an operation reaches a process and waits for its answer (a
/// call, a stop, a sys request). If `inline_allowed` (the caller waits
/// without a deadline, or the target promised never to block) and the target
/// is idle, `run_inline()` runs it here, as the target's turn. Otherwise
/// `make_node(slot)` builds the request, which goes through the mailbox
/// while the caller waits until the deadline: the answer, the target's exit
/// reason if it dies first, or timeout (a late answer is dropped).
/// `make()` gives the slot (two references) and the request for it (a
/// call's, in one block: make_call), or throws with nothing left.
template <class R, class RunInline, class Make>
result<R> request_made(process_base* p, steady::duration timeout, bool inline_allowed, bool target_nonblocking,
                       RunInline&& run_inline, Make&& make) {
  if (inline_allowed && p->try_claim()) return run_inline();
  if (!p->alive()) return exit_reason::noproc();
  const auto [slot, node] = make();
  const std::uint32_t st = enqueue_and_await(p, node, slot, timeout, target_nonblocking);
  auto out = collect<R>(slot, st);
  slot->release_caller();
  return out;
}
template <class R, class RunInline, class MakeNode>
result<R> request(process_base* p, steady::duration timeout, bool inline_allowed, bool target_nonblocking,
                  RunInline&& run_inline, MakeNode&& make_node) {
  return request_made<R>(p, timeout, inline_allowed, target_nonblocking, std::forward<RunInline>(run_inline), [&] {
    auto* slot = reply_slot<R>::make();
    try {
      return std::pair<reply_slot<R>*, message_node*>{slot, make_node(slot)};
    } catch (...) {
      slot->release();  // both references: nobody else ever saw it
      slot->release();
      throw;
    }
  });
}

/// otpp::stop for any process.
result<void> stop_process(process_base* p, exit_reason reason, steady::duration timeout);

}  // namespace detail
}  // namespace otpp

#if OTPP_HEADER_ONLY
#include "runtime_core-inl.hpp"
#endif
