#pragma once
// The type-independent half of a process: refcount, mailbox, run state,
// exit handling. gen_server<Impl> adds the typed half (process_of<Impl>).
//
// Lifetime: one allocation holds this header followed by the Impl object.
// `refs_` counts handles (pid, server<Impl>, in-flight calls) plus one "alive"
// reference held from start until the process has fully exited. The Impl is
// destroyed when the process exits; the memory when the last handle goes, so
// a pid stays a valid handle after death (it answers noproc).
//
// The run right: one party at a time may run the process (or, once dead,
// drain its mailbox). It is carried by the mailbox (see mpsc_queue): the
// owner gives it up by marking the empty mailbox idle (go_idle), and the
// sender whose push finds the mark has it, and schedules the process
// exactly once (or drains it if dead). A signal's sender, a resumed wait
// and an inline call take it through the mailbox too. `dead` (state_) is
// set once, by the owner, when the process exits.

#include <algorithm>
#include <array>
#include <atomic>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../exit_reason.hpp"
#include "../mailbox.hpp"
#include "../pid.hpp"
#include "config.hpp"
#include "mpsc_queue.hpp"
#include "node_pool.hpp"
#include "platform.hpp"
#include "reply_slot.hpp"

namespace otpp::detail {

class process_base;
class runtime_core;
struct worker_slot;
struct timer_node;

enum class msg_op : std::uint8_t { invoke, discard };

/// A mailbox entry. `fn` knows the payload's type: it handles the message
/// (invoke) or disposes of it unhandled (discard, failing a call with *why),
/// and in both cases frees the node.
struct message_node : mpsc_node {
  using fn_t = void (*)(process_base& p, message_node* n, msg_op op, const exit_reason* why) noexcept;
  fn_t fn = nullptr;
};

/// A message a process handles even while a handler awaits (stop, sys
/// requests): the others wait, held back in arrival order, until the
/// handler finishes. Recognised by its `fn`; the node's own handler is `body`.
struct system_node : message_node {
  explicit system_node(fn_t b, bool jump_queue = false) noexcept : body{b}, urgent{jump_queue} { fn = &handle; }
  fn_t body;
  // Handled before the queued messages, as a signal is (a read-only
  // introspection request, erlang:process_info's way): a backlog does not
  // delay it.
  bool urgent;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason* why) noexcept {
    static_cast<system_node*>(n)->body(p, n, op, why);
  }
};

/// A handler coroutine that has suspended: until it finishes, its process
/// handles only signals and system messages (see process_base::run_turn).
struct awaiting_handler {
  std::coroutine_handle<> top;  // the handler's own frame (owned)
  /// It finished: reply or crash, destroy the frame, release `slot` and `caller`.
  void (*finish)(process_base& p, awaiting_handler& h) noexcept = nullptr;
  reply_slot_base* slot = nullptr;  // the call it answers (a reference), if any
  process_base* caller = nullptr;   // that call's caller (a reference), if a process
  std::string_view msg_type;        // for the crash report
  std::string_view kind;            // "call", "cast", "info"
  unsigned reentrant_scopes = 0;    // otpp::reentrant waits it is inside
};

/// The mailbox entry that ends the wait of a suspended handler. Owned by
/// the process, never freed while it lives: taken as the mailbox's last
/// entry it stays there as the queue's dummy (no stub re-push), so ending
/// a wait costs its poster one exchange, which also schedules an idle
/// process.
struct resume_node final : message_node {
  resume_node() noexcept { fn = &handle; }
  static void handle(process_base&, message_node*, msg_op, const exit_reason*) noexcept {}  // owned: nothing to free
};

/// What resumes a process's suspended handler at `leaf`: one per process,
/// embedded in its cold state (a handler waits for one thing at a time), so
/// ending a wait allocates nothing and takes no reference (see
/// reply_slot_base::publish for why the process outlives the post). Two
/// resume nodes take turns: the one posted last may still be the mailbox's
/// dummy when the next wait begins.
struct resume_signal final : slot_waker {
  resume_signal() noexcept { wake = &post; }
  process_base* target = nullptr;
  std::coroutine_handle<> leaf;
  resume_node nodes[2];
  resume_node* next = &nodes[0];  // the one this wait posts
  static void post(slot_waker* w) noexcept;
};

/// A suspended handler that lets its process handle other messages while
/// it waits (a reentrant wait, see otpp::reentrant). When the wait ends, the
/// node goes to the back of the mailbox: the handler resumes in turn with
/// the messages that came before. Owned by the process's cold state and
/// reused, never freed while the process lives: a wake-up being posted
/// still reaches valid memory (see reply_slot_base::publish).
struct reentrant_wait final : message_node, slot_waker {
  reentrant_wait() noexcept {
    fn = &handle;
    wake = &post;
  }
  process_base* target = nullptr;
  std::coroutine_handle<> leaf;
  awaiting_handler handler;
  reentrant_wait* prev = nullptr;  // the process's list of waits, or its spares (next only)
  reentrant_wait* next = nullptr;
  static void post(slot_waker* w) noexcept;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept;
};

/// A bounded mailbox's state (see otpp/mailbox.hpp), shared by the senders
/// and the owner: set before the process is published, never replaced.
struct mailbox_bound {
  std::int64_t capacity = 0;
  overflow policy = overflow::drop_newest;
  std::int64_t block_ns = 0;
  // Messages in the mailbox: added by every push, taken off as the owner
  // takes each one. Concurrent senders can overshoot the capacity by a few.
  alignas(cache_line) std::atomic<std::int64_t> queued{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<std::uint32_t> blocked{0};  // plain-thread senders waiting for room
  std::atomic<std::uint32_t> room{0};     // bumped (and woken) when room comes back for them
  // Owner only, overflow::drop_oldest: messages still to drop, then to keep
  // without looking (see process_base::evict_if_over).
  alignas(cache_line) std::int64_t drop_run = 0;
  std::int64_t keep_run = 0;
};

/// What became of a message offered to a process.
enum class offer_result : std::uint8_t { queued, full, dead };

/// An awaited call without a deadline (infinity, or sent from a thread).
inline constexpr std::int64_t no_deadline_ns = INT64_MAX;

/// When a wait falls due. Exact (`ns` on the runtime's clock) when `stamp`
/// is 0. Otherwise `stamp` is the timer service's stamp read as the call
/// was sent, and `ns` its start plus the timeout: never later than the
/// true due (a timer armed for it may come early, to find the wait not yet
/// over), and made exact once that stamp has ended (timer_service::call_due).
struct wait_due {
  std::int64_t ns = no_deadline_ns;
  std::uint64_t stamp = 0;
};

/// A wait with a deadline, kept by the process whose handler waits: one
/// timer per process serves all of them (see process_base::add_deadline).
struct await_deadline {
  std::int64_t due = 0;              // ns on the runtime's clock (see wait_due)
  reply_slot_base* slot = nullptr;   // an awaited call (not a reference: see add_deadline), or null for a sleep
  slot_waker* waker = nullptr;       // resumes the handler
  std::uint64_t stamp = 0;           // see wait_due
};

template <class Node, class... A>
Node* make_node(A&&... a) {
  static_assert(alignof(Node) <= pool_granule, "over-aligned message types are not supported yet");
  void* m = pool_allocate(sizeof(Node));
  try {
    return ::new (m) Node(std::forward<A>(a)...);
  } catch (...) {
    pool_deallocate(m, sizeof(Node));
    throw;
  }
}

template <class Node>
void free_node(Node* n) noexcept {
  n->~Node();
  pool_deallocate(n, sizeof(Node));
}

struct fiber;

/// What the fiber that gains control on a switch completes for the one that
/// left (see runtime_core::switch_to).
struct fiber_action {
  enum kind_t : unsigned char { none, park_fiber, retire, exit } kind = none;
  fiber* f = nullptr;
};

/// Per-thread execution context. `current`, `inline_depth` and
/// `start_depth` belong to the execution and travel with a fiber when it
/// switches; the rest belongs to the thread.
struct thread_ctx {
  runtime_core* rt = nullptr;     // the runtime whose worker this thread is
  worker_slot* slot = nullptr;    // the queues this thread currently serves
  process_base* current = nullptr;  // the process whose code is running
  unsigned inline_depth = 0;      // nested inline calls on this stack
  unsigned start_depth = 0;       // nested starts run inline on this stack
  void* record = nullptr;         // the runtime's record of this thread
  fiber* fib = nullptr;           // the fiber running here (nullptr: none in use)
  fiber* native = nullptr;        // this thread's own stack, as a fiber
  fiber_action pending{};         // left by the last switch
};
inline thread_local thread_ctx tls_ctx{};

/// The calling thread's context, its address computed afresh at every use.
/// A handler that blocks in a call may resume on another thread (its fiber
/// moves), and a compiler keeps a thread-local's address, computed once,
/// for the rest of a function: every access to per-thread state that can be
/// inlined into a handler goes through a call the compiler cannot fold.
[[gnu::noinline]] inline thread_ctx& tls() noexcept {
  thread_ctx* p = &tls_ctx;
  asm volatile("" : "+r"(p));
  return *p;
}

/// Makes `p` the current process for a scope (inline calls, start, turns).
/// A blocked call inside the scope may resume it on another thread.
class current_scope {
 public:
  explicit current_scope(process_base* p) noexcept {
    thread_ctx& t = tls();
    saved_ = t.current;
    t.current = p;
  }
  ~current_scope() { tls().current = saved_; }
  current_scope(const current_scope&) = delete;
  current_scope& operator=(const current_scope&) = delete;

 private:
  process_base* saved_;
};

enum class turn_result : std::uint8_t { idle, yielded, dead };

// Defined with the runtime (runtime_core.hpp), which this header sits below.
/// A process's memory holds its runtime's core: whoever holds a pid may
/// still enqueue, which touches the scheduler.
void add_core_ref(runtime_core* rt) noexcept;
void release_core_ref(runtime_core* rt) noexcept;

/// Something to tidy when a process exits (a registry's entries for it).
/// Runs on the exiting process's thread, owner of its state.
class exit_hook {
 public:
  virtual ~exit_hook() = default;
  virtual void on_exit(process_base& p) noexcept = 0;
  /// Identifies the registry the hook belongs to.
  [[nodiscard]] virtual const void* owner_tag() const noexcept = 0;
};

/// Rarely used state, allocated on first need so an idle process stays small.
/// A process's links: a few kept inline (most processes have none to
/// three, and a task's come and go with it: no allocation, no hashing),
/// hashed once there are more (a supervisor links to every child, and
/// adding or removing one must not cost a walk of the others).
class link_set {
 public:
  [[nodiscard]] bool contains(process_base* p) const noexcept {
    if (big_) return big_->contains(p);
    return std::find(small_.begin(), small_.begin() + n_, p) != small_.begin() + n_;
  }
  /// False if it was there already. Throws bad_alloc (nothing changed) when
  /// growing past the inline ones fails.
  bool insert(process_base* p) {
    if (big_) return big_->insert(p).second;
    if (contains(p)) return false;
    if (n_ < small_.size()) {
      small_[n_++] = p;
      return true;
    }
    auto big = std::make_unique<std::unordered_set<process_base*>>(small_.begin(), small_.end());
    big->insert(p);
    big_ = std::move(big);
    n_ = 0;
    return true;
  }
  std::size_t erase(process_base* p) noexcept {
    if (big_) return big_->erase(p);
    for (std::uint32_t i = 0; i < n_; ++i) {
      if (small_[i] == p) {
        small_[i] = small_[--n_];
        return 1;
      }
    }
    return 0;
  }
  void clear() noexcept {
    big_.reset();
    n_ = 0;
  }
  /// Hibernation: the fewest buckets for what is left.
  void shrink() noexcept {
    if (big_) big_->rehash(0);
  }
  template <class F>
  void for_each(F&& f) const {
    if (big_) {
      for (process_base* p : *big_) f(p);
    } else {
      for (std::uint32_t i = 0; i < n_; ++i) f(small_[i]);
    }
  }

 private:
  std::array<process_base*, 4> small_{};
  std::uint32_t n_ = 0;
  std::unique_ptr<std::unordered_set<process_base*>> big_;
};

/// Calls the process will answer later (a kept reply_to, a task's result,
/// the call of a handler abandoned while it awaited), each a reference:
/// whatever is still open when the process exits fails with its reason.
/// The first is kept inline: a task has exactly one, and a vector's first
/// push was a malloc and a free per task (callgrind, task_async_await).
class deferred_slots {
 public:
  /// Throws bad_alloc (nothing changed) past the inline one.
  void push(reply_slot_base* s) {
    if (first_ == nullptr) {
      first_ = s;
    } else {
      rest_.push_back(s);
    }
  }
  [[nodiscard]] std::size_t size() const noexcept { return (first_ != nullptr) + rest_.size(); }
  /// Drops (releases) every slot `done` says is finished.
  template <class Done>
  void prune(Done done) noexcept {
    std::erase_if(rest_, done);
    if (first_ != nullptr && done(first_)) {
      first_ = nullptr;
      if (!rest_.empty()) {
        first_ = rest_.back();
        rest_.pop_back();
      }
    }
  }
  /// Hands each slot to `f` and forgets them all.
  template <class F>
  void drain(F f) noexcept {
    if (first_ != nullptr) f(std::exchange(first_, nullptr));
    for (reply_slot_base* s : rest_) f(s);
    rest_.clear();
  }
  void shrink() noexcept { rest_.shrink_to_fit(); }
  [[nodiscard]] std::size_t heap_bytes() const noexcept { return rest_.capacity() * sizeof(void*); }

 private:
  reply_slot_base* first_ = nullptr;
  std::vector<reply_slot_base*> rest_;
};

/// What a process needs once a handler of it awaits (a call, a sleep, a
/// task), kept apart from process_cold: a linked task or a supervised
/// worker that never waits has a cold part too, and building and dropping
/// these bytes with it (272 then, 280 since a deadline keeps its stamp)
/// took a new and delete of process_cold from 14 to 9.5 ns (a loop of them,
/// this project's AMD EPYC host).
struct process_waits {
  static void* operator new(std::size_t n) { return pool_allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { pool_deallocate(p, n); }

  // While a handler awaits: the handler, and the messages held back until
  // it finishes (a list through the nodes' own links, oldest first).
  awaiting_handler awaiting;
  resume_signal resume;
  // The first wait's deadline, beside the waker that wait has just set (see
  // process_base::add_deadline); further ones are in `deadlines`.
  await_deadline first_deadline;
  bool first_deadline_used = false;
  message_node* held_head = nullptr;
  message_node* held_tail = nullptr;
  // Handlers suspended in reentrant waits (the process runs on meanwhile),
  // the records free for the next one, and the one being set up by the
  // handler that is suspending right now.
  reentrant_wait* reentrant_head = nullptr;
  reentrant_wait* reentrant_spare = nullptr;
  reentrant_wait* suspending = nullptr;
  awaiting_handler* running = nullptr;  // the handler running now (see process_base::drive)
  // The deadlines of its other waits (room kept for first_deadline too), and
  // the one timer behind them all, armed for the earliest (or earlier: it
  // re-arms itself when it comes due early).
  std::vector<await_deadline> deadlines;
  timer_node* deadline_timer = nullptr;  // a handle reference
  std::int64_t deadline_timer_due = 0;
  std::uint64_t deadline_gen = 0;

  ~process_waits();
};

struct process_cold {
  // From the node pool, not malloc: a task or a linked worker gets one at
  // start and drops it at exit, and malloc's free of ~700 bytes was ~5% of
  // a task (otpp_bench task_async_await_ns, callgrind).
  static void* operator new(std::size_t n) { return pool_allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { pool_deallocate(p, n); }

  exit_reason exit;
  std::string_view crash_message;  // type of the message whose handler threw
  std::string_view crash_kind;     // "call", "cast", "info", ...
  message_node* continuation = nullptr;
  deferred_slots deferred;
  std::size_t deferred_prune_at = 16;
  struct stop_waiter {
    reply_slot<void>* slot;
    exit_reason requested;
  };
  std::vector<stop_waiter> stop_waiters;
  std::vector<message_node*> held_replies;  // sent after terminate (stop from handle_call)
  // Made by a process's first handler that awaits; owned.
  process_waits* waits = nullptr;

  // Links and monitors (see detail/links.hpp). Every pointer holds a
  // reference.
  link_set links;
  process_base* parent = nullptr;  // the process that start_link-ed us
  struct monitor_entry {
    std::uint64_t ref;
    process_base* watcher;               // a process, or
    reply_slot<exit_reason>* waiter;     // a plain thread in await_exit
  };
  struct monitor_tables {
    std::unordered_map<std::uint64_t, monitor_entry> monitors;  // who watches us, by ref
    std::unordered_set<std::uint64_t> watching;                 // monitor refs we hold, not yet fired
  };
  // Made by the first monitor either way: building and destroying two empty
  // hash tables was ~100 instructions of every task (callgrind,
  // task_async_await), and most processes with a cold part never monitor.
  std::unique_ptr<monitor_tables> mon;
  /// The tables, made if need be. Throws std::bad_alloc.
  monitor_tables& monitor_state() {
    if (!mon) mon = std::make_unique<monitor_tables>();
    return *mon;
  }
  std::unique_ptr<mailbox_bound> bound;  // a bounded mailbox's (set before the process is published)
  std::string name;                      // registered name, if any
  std::uint64_t handled_high = 0;        // messages handled, bits 32 and up
  std::vector<std::shared_ptr<exit_hook>> exit_hooks;  // registries we are in

  // The idle timer behind set_timeout and hibernate_after (see idle_timer in
  // runtime_core.hpp). One live timer at most: re-arming to a later deadline
  // keeps it, and it re-arms itself when it comes due early.
  timer_node* idle_timer = nullptr;       // a handle reference
  std::int64_t idle_timer_due = 0;        // its deadline, ns on the runtime's clock
  std::uint64_t idle_gen = 0;             // generation of the live timer or message
  std::int64_t idle_due = 0;              // when the armed timeout or hibernation is due
  std::int64_t timeout_requested = 0;     // ns, from set_timeout in the current callback
  std::int64_t hibernate_after = 0;       // ns; the hibernate_after start option
  std::int64_t idle_since = 0;            // when the callback that replied ended (see mark_replied)

  ~process_cold();
};

class process_base : public process_identity {
 public:
  // local_ flags: owned by whoever holds `scheduled`.
  static constexpr std::uint32_t exit_pending = 1;
  static constexpr std::uint32_t call_terminate = 2;
  static constexpr std::uint32_t has_continue = 4;
  static constexpr std::uint32_t has_cold = 8;
  static constexpr std::uint32_t trapping = 16;
  static constexpr std::uint32_t constructed = 32;  // the Impl exists
  // Idle-time directives (set_timeout, hibernate, hibernate_after).
  static constexpr std::uint32_t timeout_asked = 64;     // set_timeout in this callback
  static constexpr std::uint32_t hibernate_asked = 128;  // hibernate() in this callback
  static constexpr std::uint32_t idle_armed = 256;       // a timeout/hibernation waits for idleness to last
  static constexpr std::uint32_t armed_hibernate = 512;  // ...and it is a hibernation
  static constexpr std::uint32_t auto_hibernate = 1024;  // hibernate_after is set
  static constexpr std::uint32_t hibernated = 2048;      // no message since the last hibernation
  static constexpr std::uint32_t idle_since_set = 4096;  // cold_->idle_since holds the idle time's start
  static constexpr std::uint32_t idle_flags = timeout_asked | hibernate_asked | idle_armed | auto_hibernate;
  static constexpr std::uint32_t awaiting = 8192;   // a handler coroutine is suspended
  static constexpr std::uint32_t has_held = 16384;  // messages held back while one awaited
  static constexpr std::uint32_t reentrant_next = 32768;      // the wait being set up lets other messages run
  static constexpr std::uint32_t reentrant_handlers = 65536;  // every wait of every handler does (Impl's choice)
  static constexpr std::uint32_t bounded_box = 131072;    // the mailbox is bounded
  static constexpr std::uint32_t evicts_oldest = 262144;  // ...with overflow::drop_oldest
  static constexpr std::uint32_t dry_asked = 524288;      // run_mailbox_dry once the mailbox runs dry
  // The pending exit's reason, where no cold part could be had to keep it in.
  static constexpr std::uint32_t exit_killed_bare = 1u << 20;
  static constexpr std::uint32_t exit_oom_bare = 1u << 21;
  // A handler of this turn woke a process into its worker's LIFO slot,
  // which other workers do not take from (runtime_core::share_lifo).
  static constexpr std::uint32_t woke_lifo = 1u << 22;
  // sys::suspend: only signals and system messages are handled; the rest
  // are held back in order until sys::resume.
  static constexpr std::uint32_t suspended = 1u << 23;
  // What makes a turn that found the mailbox empty settle first.
  static constexpr std::uint32_t settle_flags = idle_flags | dry_asked;
  // What sends a turn down its slow path (one test on the fast path).
  static constexpr std::uint32_t turn_slow = has_continue | exit_pending | awaiting | has_held | suspended;

  explicit process_base(runtime_core* rt) noexcept : rt_{rt} { add_core_ref(rt); }
  process_base(const process_base&) = delete;
  process_base& operator=(const process_base&) = delete;

  // -- typed half ----------------------------------------------------------
  virtual void dispatch_untyped(message_node* n) noexcept = 0;
  /// Runs Impl::terminate if it exists; a throw replaces `reason`.
  virtual void run_terminate(exit_reason& reason) noexcept = 0;
  virtual void destroy_state() noexcept = 0;
  [[nodiscard]] virtual std::string_view type_name() const noexcept = 0;
  /// type_id of the server's Impl: lets an untyped lookup be checked before
  /// it becomes a server<Impl>.
  [[nodiscard]] virtual const void* impl_type() const noexcept = 0;
  /// Bytes of the process object (header and Impl, as allocated).
  [[nodiscard]] virtual std::size_t object_bytes() const noexcept = 0;
  /// Owner only: the state as its fmt formatter writes it; false when Impl
  /// has none. A formatter's exception propagates.
  virtual bool format_state(std::string& out) = 0;
  /// handle_info for the runtime's own messages (trapped exits, monitors).
  virtual void dispatch_info(exit_signal& m) noexcept = 0;
  virtual void dispatch_info(down& m) noexcept = 0;
  /// handle_info(otpp::timeout): the set_timeout idle time passed.
  virtual void dispatch_timeout() noexcept = 0;
  /// Runs Impl::on_hibernate if it exists (a throw crashes the process).
  virtual void run_on_hibernate() noexcept = 0;
  /// What the Impl asked (ask_mailbox_dry) to do once no message waits:
  /// a state machine starts its event timeout there.
  virtual void run_mailbox_dry() noexcept = 0;

  [[nodiscard]] runtime_core* rt() const noexcept { return rt_; }
  /// The runtime's registration: a process gets its id once.
  void assign_id(std::uint64_t id) noexcept { id_ = id | (id_ & bounded_flag); }
  /// Before the process is published: it is born holding `n` references
  /// (its own and those its start hands out), one plain store instead of a
  /// locked add each.
  void set_birth_refs(std::uint32_t n) noexcept { refs_.store(n, std::memory_order_relaxed); }
  /// `n` references at once: one locked add.
  void add_refs(std::uint32_t n) noexcept { refs_.fetch_add(n, std::memory_order_relaxed); }
  /// Drops `n` references at once; frees the process if they were the last.
  void release_refs(std::uint32_t n) noexcept {
    if (refs_.fetch_sub(n, std::memory_order_acq_rel) == n) last_reference_gone();
  }
  /// After a turn run on a ticket: drops the ticket, and with it the
  /// process's own reference if the turn ended in death (run_turn).
  void release_ticket(turn_result r) noexcept { release_refs(r == turn_result::dead ? 2 : 1); }
  // state_ bit: queued, with its ticket, in no queue for want of memory
  // (runtime_core::strand). Set and taken only with the run right held by
  // the queue, so never beside a process that runs.
  static constexpr std::uint32_t stranded = 4;
  void mark_stranded() noexcept { state_.fetch_or(stranded, std::memory_order_release); }
  /// Whether it was stranded; if so, the caller now holds its ticket.
  [[nodiscard]] bool take_stranded() noexcept {
    return (state_.load(std::memory_order_relaxed) & stranded) != 0 &&
           (state_.fetch_and(~stranded, std::memory_order_acq_rel) & stranded) != 0;
  }
  /// The run state (scheduled, dead), for observers: a snapshot.
  [[nodiscard]] std::uint32_t run_state() const noexcept {
    return (state_.load(std::memory_order_acquire) & dead) | (mailbox_.idle() ? 0 : scheduled);
  }

  // -- mailbox ---------------------------------------------------------------
  /// Any thread. Delivers `n`, scheduling the process if it was idle; a dead
  /// process's messages are discarded (calls fail with noproc). Returns false
  /// if the process was already known dead (the node is discarded).
  inline bool enqueue(message_node* n) noexcept;
  /// Any thread. A user's message (cast, send, a timer's message; a call if
  /// `call`): as enqueue, except that a full bounded mailbox refuses it (the
  /// node is discarded with mailbox_full, the drop counted and reported).
  inline offer_result offer(message_node* n, bool call) noexcept;
  /// Before the process is published: bound its mailbox. Throws bad_alloc.
  void set_bound(const bounded_mailbox_t& b);
  /// A bounded process's bound (null for an unbounded one). Any thread.
  [[nodiscard]] const mailbox_bound* bound() const noexcept { return bounded() ? cold_->bound.get() : nullptr; }
  /// Owner only, in a user message's handler under overflow::drop_oldest:
  /// whether the message just taken is to be dropped because newer ones
  /// fill the mailbox (counted and reported here).
  [[nodiscard]] bool evict_taken(bool call) noexcept {
    if (!(local_ & evicts_oldest)) [[likely]]
      return false;
    return evict_if_over(call);
  }
  /// Any thread. Delivers a system signal (link, exit, monitor...): handled
  /// before the next message, not behind the queued ones. Never refused: a
  /// dead process's signals are discarded, and their fn answers for it.
  inline void enqueue_signal(message_node* n) noexcept;
  /// Any thread. Ends the wait of the suspended handler: queues `n` (its
  /// resume node, taken by run_turn) and schedules the process if it is idle.
  inline void post_resume(resume_node* n) noexcept;
  /// Owner only, the mailbox empty: gives up the right to run, then
  /// re-checks. True if the process is idle now; false if the caller still
  /// holds the right and must run it on: a message (or a resume) came in
  /// first, or a signal came in meanwhile and the right was taken back.
  [[nodiscard]] inline bool go_idle() noexcept;

  /// Any thread. Takes the run right of an idle process with an empty
  /// mailbox, to run a call inline. Pair with release_inline.
  [[nodiscard]] bool try_claim() noexcept {
    if (!mailbox_.take_idle()) return false;  // seq_cst: sees everything the previous owner did
    if (state_.load(std::memory_order_relaxed) & dead) {
      drain_dead();
      return false;
    }
    if (signals_.empty(sig_head_) && !(local_ & (awaiting | has_held | suspended))) return true;
    // Messages are queued ahead of us (or a handler awaits, holding the
    // process): they must be handled first, so run the process the normal
    // way and let the caller enqueue behind them.
    schedule_owned();
    return false;
  }

  /// Owner only: gives up the run right after an inline operation. Pending
  /// continuations are scheduled; queued messages are handled here, up to a
  /// small budget (combining: the thread that holds the process drains what
  /// piled up instead of handing it to another core).
  void release_inline() noexcept;

  // -- handlers that wait (coroutines, see otpp/async.hpp) ----------------------
  /// Owner only: runs a handler coroutine from its start until it finishes
  /// or suspends. Suspended, it holds the process: until it finishes only
  /// signals and system messages are handled, the rest are held back in
  /// order. The cold state must exist (cold_state()).
  void run_handler(const awaiting_handler& h) noexcept;
  /// Owner only: resumes the suspended handler at `leaf`, the coroutine whose
  /// wait is over; if the handler then finishes, held messages come next.
  void resume_handler(std::coroutine_handle<> leaf) noexcept;
  /// Owner only: the waker that resumes the suspended handler at `leaf`.
  /// Throws std::bad_alloc for a reentrant wait without memory for its record.
  slot_waker* resume_waker(std::coroutine_handle<> leaf) {
    if (local_ & reentrant_next) [[unlikely]]
      return reentrant_waker(leaf);
    process_waits& ws = *cold_->waits;
    if (ws.suspending) [[unlikely]]
      cancel_reentrant_wait();  // an earlier reentrant wait was over at once
    ws.resume.target = this;
    ws.resume.leaf = leaf;
    // Not the mailbox's dummy (the node the last wait posted, if nothing
    // has come in since): a node is queued once at a time.
    ws.resume.next = mpsc_queue::at(head_) == &ws.resume.nodes[0] ? &ws.resume.nodes[1] : &ws.resume.nodes[0];
    return &ws.resume;
  }
  /// Owner only, in a handler coroutine: the waits set up until
  /// leave_reentrant are reentrant (see otpp::reentrant); nests.
  void enter_reentrant() noexcept;
  void leave_reentrant() noexcept;
  /// Before the process runs: every wait of its handlers is reentrant.
  void make_handlers_reentrant() noexcept { local_ |= reentrant_handlers; }
  /// Owner only: resumes the handler suspended in reentrant wait `w`.
  void resume_reentrant(reentrant_wait* w) noexcept;
  /// Owner only: the wait (an awaited call's `slot`, or a sleep's null) ends
  /// at `due` unless it is over first: then the call is abandoned (if that
  /// ends it) and `waker` is woken. Throws std::bad_alloc (nothing registered).
  void add_deadline(wait_due due, reply_slot_base* slot, slot_waker* waker) {
    // A process's only wait, with the timer already set early enough (a
    // call after call, each re-using the last one's timer): four stores.
    process_waits& ws = *cold_->waits;
    if (!ws.first_deadline_used && ws.deadline_timer != nullptr && ws.deadline_timer_due <= due.ns &&
        ws.deadlines.capacity() != ws.deadlines.size()) [[likely]] {
      ws.first_deadline.due = due.ns;
      ws.first_deadline.slot = slot;
      ws.first_deadline.waker = waker;
      ws.first_deadline.stamp = due.stamp;
      ws.first_deadline_used = true;
      return;
    }
    add_deadline_slow(due, slot, waker);
  }
  void add_deadline(std::int64_t due, reply_slot_base* slot, slot_waker* waker) {
    add_deadline(wait_due{due, 0}, slot, waker);
  }
  void add_deadline_slow(wait_due due, reply_slot_base* slot, slot_waker* waker);
  /// Owner only: the wait keyed by `slot` (a call) or `waker` (a sleep) is
  /// over. False if its deadline had already passed (its waker was woken).
  [[gnu::always_inline]] bool remove_deadline(const reply_slot_base* slot, const slot_waker* waker) noexcept {
    // A call's entry beside its waker (see add_deadline): inline.
    process_waits& ws = *cold_->waits;
    if (slot != nullptr && ws.first_deadline_used && ws.first_deadline.slot == slot) [[likely]] {
      ws.first_deadline_used = false;
      return true;
    }
    return remove_deadline_slow(slot, waker);
  }
  bool remove_deadline_slow(const reply_slot_base* slot, const slot_waker* waker) noexcept;
  /// Owner only: the deadline timer of generation `gen` fired.
  void deadlines_due(std::uint64_t gen) noexcept;
  /// Owner only: a handler coroutine is suspended.
  [[nodiscard]] bool handler_awaiting() const noexcept { return (local_ & awaiting) != 0; }

  /// Owner only: handle up to `budget` messages. On `dead`, the process's
  /// own reference is the caller's to drop (with its ticket, if it holds
  /// one: one locked instruction for both) and nothing else may be done
  /// with the process.
  turn_result run_turn(unsigned budget) noexcept;

  // -- exit ------------------------------------------------------------------
  /// Owner only (inside a callback): exit with `r` once the callback
  /// returns; with out_of_memory if there is no memory to keep `r` in.
  void request_exit(exit_reason r, bool with_terminate) noexcept;
  /// Owner only: an untrappable kill. It overrides an exit already asked for
  /// (a stop, a crash or a trapped shutdown whose terminate has not begun):
  /// a kill is never lost, and terminate does not run.
  void request_kill() noexcept;
  void crash(std::exception_ptr e, std::string_view msg_type, std::string_view kind) noexcept;
  /// Logs an untyped message no handler took (Erlang's default handle_info).
  void log_dropped(std::string_view message_type) const noexcept;
  /// A handle_call threw: crash, and fail the call with the final reason at exit.
  void call_crashed(std::exception_ptr e, std::string_view req_type, reply_slot_base* slot) noexcept;
  [[nodiscard]] bool exit_requested() const noexcept { return (local_ & exit_pending) != 0; }
  void mark_constructed() noexcept { local_ |= constructed; }
  void set_trap_exit(bool on) noexcept { local_ = on ? (local_ | trapping) : (local_ & ~trapping); }
  [[nodiscard]] bool traps_exits() const noexcept { return (local_ & trapping) != 0; }
  /// Owner only (inside a callback): set_timeout. A negative duration clears it.
  void request_timeout(std::int64_t ns) {
    local_ &= ~(timeout_asked | hibernate_asked);
    if (ns < 0) return;
    cold().timeout_requested = ns;
    local_ |= timeout_asked;
  }
  /// Owner only: run_mailbox_dry once the mailbox runs dry (before an idle
  /// timeout or hibernation is armed).
  void ask_mailbox_dry() noexcept { local_ |= dry_asked; }
  /// Owner only (inside a callback): hibernate once it returns.
  void request_hibernate() noexcept { local_ = (local_ & ~timeout_asked) | hibernate_asked; }
  /// Owner only, before the process is published.
  void set_hibernate_after(std::int64_t ns) {
    cold().hibernate_after = ns;
    local_ |= auto_hibernate;
  }
  /// Owner only: a message (not our own idle timer) is about to be handled:
  /// a pending timeout or hibernation is off ("reset by any message").
  void note_message() noexcept {
    if (local_ & hibernated) publish_hibernating(false);
    local_ &= ~(timeout_asked | hibernate_asked | idle_armed | hibernated | idle_since_set);
  }
  /// Owner only, just before a call's reply is published: the idle time of a
  /// set_timeout or hibernate_after starts now, not when the turn later
  /// settles (by then the caller may have moved a test clock on).
  void mark_replied() noexcept;
  /// Owner only, about to go idle: arms what set_timeout, hibernate or
  /// hibernate_after asked for (defined with the runtime).
  void settle_idle() noexcept;
  /// Owner only: our idle timer of generation `gen` came due.
  void idle_timer_due(std::uint64_t gen) noexcept;

  /// Owner only; the cold state, created on demand.
  process_cold& cold_state() { return cold(); }
  /// Owner only: where a suspended handler is kept, created on demand
  /// (before a handler coroutine starts). Throws std::bad_alloc.
  process_waits& wait_state() {
    process_cold& c = cold();
    if (c.waits == nullptr) c.waits = new process_waits;
    return *c.waits;
  }
  [[nodiscard]] process_cold* cold_if_any() noexcept { return (local_ & has_cold) ? cold_ : nullptr; }
  /// Owner only (sys::suspend): from the next message on, handles only
  /// signals and system messages, holding the rest back in order. Throws
  /// std::bad_alloc (the place held messages are kept is made now).
  void suspend() {
    (void)wait_state();
    local_ |= suspended;
  }
  /// Owner only (sys::resume): what was held back comes next, in order.
  void resume() noexcept { local_ &= ~suspended; }
  [[nodiscard]] bool is_suspended() const noexcept { return (local_ & suspended) != 0; }
  /// Owner only: about what the cold state holds, in bytes (tables at their
  /// capacity; the nodes of hash tables estimated).
  [[nodiscard]] std::size_t cold_bytes() noexcept {
    process_cold* c = cold_if_any();
    if (c == nullptr) return 0;
    std::size_t n = sizeof(process_cold) + c->name.capacity() + c->deferred.heap_bytes() +
                    c->stop_waiters.capacity() * sizeof(process_cold::stop_waiter) +
                    c->held_replies.capacity() * sizeof(void*) +
                    (c->waits ? sizeof(process_waits) + c->waits->deadlines.capacity() * sizeof(await_deadline) : 0) +
                    c->exit_hooks.capacity() * sizeof(std::shared_ptr<exit_hook>);
    if (const auto* m = c->mon.get()) {
      n += sizeof(*m);
      n += m->monitors.size() * (sizeof(process_cold::monitor_entry) + 4 * sizeof(void*)) + m->monitors.bucket_count() * sizeof(void*);
      n += m->watching.size() * 4 * sizeof(void*) + m->watching.bucket_count() * sizeof(void*);
    }
    if (c->bound) n += sizeof(mailbox_bound);
    return n;
  }

  // -- introspection (owner only) --------------------------------------------
  void note_handled() {
    const std::uint32_t n = handled_.load(std::memory_order_relaxed) + 1;
    handled_.store(n, std::memory_order_release);  // owner-only: a store, not a read-modify-write
    if (n == 0) ++cold().handled_high;
  }
  [[nodiscard]] std::uint64_t messages_handled() noexcept {
    process_cold* c = cold_if_any();
    return (c ? c->handled_high << 32 : 0) | handled_.load(std::memory_order_relaxed);
  }
  /// Walks the queue: nodes between head and tail belong to the owner.
  [[nodiscard]] std::size_t mailbox_length() noexcept {
    std::size_t n = held_length();
    const mpsc_node* dummy = mpsc_queue::taken_in_place(head_) ? mpsc_queue::at(head_) : mailbox_.consumer_head();
    for (mpsc_node* x = mpsc_queue::at(head_); x != nullptr; x = x->next_.load(std::memory_order_acquire))
      if (x != dummy && x != mailbox_.consumer_head() && !is_resume(x)) ++n;
    return n;
  }
  /// Owner only: messages taken from the mailbox and held back (while a
  /// handler awaits, or while suspended), still waiting to be handled.
  [[nodiscard]] std::size_t held_length() noexcept {
    std::size_t n = 0;
    if (local_ & has_held)
      for (const mpsc_node* x = cold_->waits->held_head; x != nullptr; x = x->next_.load(std::memory_order_relaxed)) ++n;
    return n;
  }
  /// Owner only: whether a message is queued (or being pushed).
  [[nodiscard]] bool mailbox_waiting() const noexcept { return !mailbox_.empty(head_); }
  /// init failed: OTP does not call terminate then.
  void suppress_terminate() noexcept { local_ &= ~call_terminate; }
  /// Owner only: a reply to send once terminate has run.
  void hold_reply(message_node* n);

  /// The starter's last step: the process becomes runnable by anyone.
  void publish_started() noexcept {
    if (local_ & settle_flags) settle_idle();
    if (local_ & (has_continue | exit_pending)) {
      schedule_owned();
      return;
    }
    if (!go_idle()) schedule_owned();
  }

  /// Owner only: completes an exit (terminate, crash log, mailbox drain,
  /// waiters) and returns the final reason.
  /// `keep_ref`: the process's own reference is left to the caller.
  exit_reason finish_exit(bool keep_ref = false) noexcept;
  /// Owner only: exits at once with `reason` (inline stop; no cold state
  /// needed); `keep_ref` as for finish_exit.
  exit_reason exit_now(exit_reason reason, bool with_terminate, bool keep_ref = false) noexcept;

  /// Owner only: the stop protocol of otpp::stop.
  void add_stop_waiter(reply_slot<void>* s, exit_reason requested) {
    cold().stop_waiters.push_back({s, std::move(requested)});
  }

  void set_continuation(message_node* n);

  /// Owner only: a deferred reply that this process owes; failed with the
  /// exit reason if the process dies first.
  void track_deferred(reply_slot_base* s);
  /// As track_deferred, keeping a reference the caller gives up (if it
  /// throws, the caller still holds it).
  void adopt_deferred(reply_slot_base* s);

  // -- observing from any thread, without a message ---------------------------
  /// Messages queued and not yet taken: a snapshot, exact with one sender,
  /// within a few under concurrent senders until the mailbox next runs empty.
  [[nodiscard]] std::uint32_t queue_length() const noexcept {
    const std::uint32_t in = enqueued_.load(std::memory_order_acquire);
    const std::uint32_t taken = handled_.load(std::memory_order_acquire);
    const std::uint32_t correction = published_.load(std::memory_order_acquire) >> 1;
    const std::uint32_t n = (in - taken + correction) & 0x7fffffffu;
    return n >= 0x40000000u ? 0 : n;  // a count lost in flight reads as "none", not as 2^31
  }
  /// Messages taken so far, mod 2^32: it moves whenever the process gets on
  /// with its mailbox (for an observer telling a stuck process from a busy one).
  [[nodiscard]] std::uint32_t progress() const noexcept { return handled_.load(std::memory_order_acquire); }
  /// Hibernating: asleep after hibernate() or hibernate_after, until a message.
  [[nodiscard]] bool hibernating() const noexcept { return (published_.load(std::memory_order_acquire) & 1u) != 0; }

  // -- for the runtime -------------------------------------------------------
  /// Queues the owned process to run (defined with the runtime).
  void schedule_owned() noexcept;
  /// Owner only: a call handled inline counts as handled without having been
  /// queued; the hibernation bit is published for observers.
  void note_inline_call() noexcept {
    published_.store(published_.load(std::memory_order_relaxed) + 2, std::memory_order_release);
  }
  /// Owner only, with the mailbox empty: the queue length is 0 now, so the
  /// correction becomes what makes it so (undoing counts senders lost).
  void resync_queue_length() noexcept {
    const std::uint32_t c = handled_.load(std::memory_order_relaxed) - enqueued_.load(std::memory_order_relaxed);
    published_.store((published_.load(std::memory_order_relaxed) & 1u) | (c << 1), std::memory_order_release);
  }
  /// Owner only: publishes whether the process hibernates, for observers.
  void publish_hibernating(bool on) noexcept {
    const std::uint32_t v = published_.load(std::memory_order_relaxed);
    published_.store(on ? (v | 1u) : (v & ~1u), std::memory_order_release);
  }

  // Layout (offsets for a 64-byte aligned object; the vptr, state, refs and
  // id come first, from process_identity): the first cache line holds what
  // senders touch (mailbox tail, state, refs, the enqueue count); the second
  // what the running consumer touches per message (head, local flags)
  // followed by the Impl. See process_of::alloc_size.
 private:
  mpsc_queue mailbox_;                              // 24: tail + stub
  runtime_core* rt_;                                // 40: a sender that wakes us schedules through it
  std::atomic<std::uint32_t> enqueued_{0};          // 48: messages pushed (mod 2^32)
  // Owner-written, read by observers: bit 0 hibernating; the rest counts
  // calls run inline (handled without being queued), for queue_length.
  std::atomic<std::uint32_t> published_{0};         // 52
  friend class runtime_core;  // the process table links processes through these
  process_base* live_prev_ = nullptr;               // 56: intrusive list of live processes
  process_base* live_next_ = nullptr;               // 64
  mpsc_node* head_ = mailbox_.consumer_head();      // 72: consumer's cursor (see mpsc_queue)
  std::uint32_t local_ = 0;                         // 80
  std::atomic<std::uint32_t> handled_{0};           // 84: messages handled, low bits (owner-written)
  process_cold* cold_ = nullptr;                    // 88
  mpsc_queue signals_;                              // 96: tail + stub, rarely written
  mpsc_node* sig_head_ = signals_.consumer_head();  // 112

 protected:
  /// Destroys the object and gives its memory back (the typed half knows how).
  virtual void deallocate_self() noexcept = 0;
  // Out of line: the key function, so a compiled runtime emits the vtable once.
  void last_reference_gone() noexcept final;

  process_cold& cold() {
    if (!(local_ & has_cold)) {
      cold_ = new process_cold;
      local_ |= has_cold;
    }
    return *cold_;
  }

 private:
  void run_continuation() noexcept;
  message_node* next_held_back() noexcept;
  slot_waker* reentrant_waker(std::coroutine_handle<> leaf);
  // A reentrant wait was set up but did not suspend (it was over at once,
  // or setting it up threw): its record goes back.
  void cancel_reentrant_wait() noexcept;
  void drive(awaiting_handler h, std::coroutine_handle<> leaf) noexcept;
  void abandon_reentrant(process_cold& c, process_waits& ws) noexcept;
  void abandon_one(process_cold& c, awaiting_handler& h) noexcept;
  void hold_back(message_node* n) noexcept;
  void abandon_handler(process_cold& c, process_waits& ws) noexcept;
  void discard_held(process_waits& ws, const exit_reason& why) noexcept;
  void arm_deadline_timer(std::int64_t due);
  void drop_deadlines(process_waits& ws) noexcept;
  bool run_signals() noexcept;
  inline void took_run_right() noexcept;
  inline void push_message(message_node* n) noexcept;
  offer_result offer_bounded(message_node* n, bool call) noexcept;
  bool wait_for_room(mailbox_bound& b) noexcept;
  void report_drop(mailbox_bound& b, std::int64_t queued, bool call) noexcept;
  bool evict_if_over(bool call) noexcept;
  // Owner: a counted message left the mailbox.
  void bound_taken() noexcept;
  void drain(const exit_reason& why) noexcept;
  void drain_dead() noexcept;
  // A resume node may stay in the mailbox as its dummy (see mpsc_queue::pop).
  static bool is_resume(const mpsc_node* n) noexcept { return static_cast<const message_node*>(n)->fn == &resume_node::handle; }
  void arm_idle(std::int64_t due, bool hibernation) noexcept;
  void hibernate_now() noexcept;
};

/// A message from our own idle timer; the handler lives in runtime_core.hpp.
struct idle_timer_node final : message_node {
  explicit idle_timer_node(std::uint64_t g) noexcept : gen{g} { fn = &handle; }
  std::uint64_t gen;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<idle_timer_node*>(n);
    if (op == msg_op::invoke) p.idle_timer_due(self->gen);
    free_node(self);
  }
};

// -- inline definitions that need nothing but this header ---------------------

inline bool process_base::enqueue(message_node* n) noexcept {
  if (state_.load(std::memory_order_acquire) & dead) {
    static const exit_reason noproc = exit_reason::noproc();
    n->fn(*this, n, msg_op::discard, &noproc);
    return false;
  }
  if (bounded()) [[unlikely]]
    cold_->bound->queued.fetch_add(1, std::memory_order_relaxed);  // never refused, but counted
  push_message(n);
  return true;
}

inline offer_result process_base::offer(message_node* n, bool call) noexcept {
  if (bounded()) [[unlikely]]
    return offer_bounded(n, call);
  return enqueue(n) ? offer_result::queued : offer_result::dead;
}

inline void process_base::push_message(message_node* n) noexcept {
  // Counted before the push, without a locked instruction (a fetch_add here
  // costs a third of the cast rate): exact for one sender; concurrent
  // senders may lose a count now and then, which the owner corrects each
  // time the mailbox runs empty (see resync_queue_length).
  enqueued_.store(enqueued_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (mailbox_.push(n)) took_run_right();
}

inline void process_base::enqueue_signal(message_node* n) noexcept {
  // seq_cst push, then the run right (Dekker pairing with go_idle's mark
  // and re-check): either we find the process idle, or its owner sees the
  // signal.
  signals_.push(n);
  if (mailbox_.take_idle()) took_run_right();
}

inline void process_base::took_run_right() noexcept {
  if (state_.load(std::memory_order_acquire) & dead) {
    drain_dead();
  } else {
    schedule_owned();
  }
}

inline bool process_base::go_idle() noexcept {
  if (!mailbox_.mark_idle(head_)) return false;  // a message came in first
  // No longer the owner: the re-check reads only the signals' tail.
  if (signals_.empty_after_release()) return true;
  return !mailbox_.take_idle();  // else a sender took the right, and schedules us
}

inline void resume_signal::post(slot_waker* w) noexcept {
  auto* self = static_cast<resume_signal*>(w);
  self->target->post_resume(self->next);
}

inline void process_base::post_resume(resume_node* n) noexcept {
  if (mailbox_.push(n)) took_run_right();
}

inline void reentrant_wait::post(slot_waker* w) noexcept {
  auto* self = static_cast<reentrant_wait*>(w);
  (void)self->target->enqueue(self);
}
inline void reentrant_wait::handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
  if (op == msg_op::invoke) p.resume_reentrant(static_cast<reentrant_wait*>(n));  // owned by the process
}

/// Turns a pid into the process it names, and a process into a new pid.
struct pid_access {
  static process_base* get(const pid& p) noexcept { return static_cast<process_base*>(p.p_.get()); }
  /// A new handle to `p` (takes a reference).
  static pid make(process_base* p) noexcept { return pid{counted<process_identity>::share(p)}; }
  /// A handle holding a reference the caller already has.
  static pid adopt(process_base* p) noexcept { return pid{counted<process_identity>::adopt(p)}; }
};

/// The already_started reason naming `holder` (see otpp::holder).
inline exit_reason already_started_by(process_base* holder) {
  auto held = std::make_shared<const pid>(pid_access::make(holder));
  std::string text{pid_text{held->id()}.view()};
  return exit_reason::already_started(std::move(text), std::move(held));
}

}  // namespace otpp::detail

#if OTPP_HEADER_ONLY
#include "process_base-inl.hpp"
#endif
