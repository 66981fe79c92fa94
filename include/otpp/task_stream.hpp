#pragma once
// otpp::async_stream: Elixir's Task.async_stream. Runs fn(item) for each item
// of a range in its own task, at most max_concurrency at once, and gives
// their outcomes as a lazy range.
//
//   for (otpp::result<page> r : otpp::async_stream(urls, fetch, {.max_concurrency = 8})) {
//     if (r) index(*r); else log_failure(r.error());
//   }
//
// Lazy: items are taken from the range only as tasks finish and the
// consumer moves on, so an endless range is fine. Ordered (the default),
// outcomes come in the items' order; unordered, as the tasks finish. At most
// max_concurrency functions run at once (a task that has delivered its
// outcome may take a moment more to exit). Each task has `timeout` from its
// start: past it, on_timeout::exit (the default) kills every task of the
// stream and throws exit_error(timeout) here, as the caller exits in
// Elixir; on_timeout::kill_task kills that task and gives error(timeout)
// in its place.
//
// Crashes follow Task.async_stream's links: iterated in a process that
// does not trap exits, a crashing task ends the stream at once with
// exit_error(reason) (the process goes down with it unless it catches);
// in a process that traps exits, or on a plain thread, a crash is the
// outcome error(reason). The stream keeps that promise itself rather than
// through links: its consumer is blocked in a handler, where thousands of
// link and exit signals would only pile up. Likewise the tasks die with the
// stream: destroying it (leaving the loop early, a throw, the consumer's
// exit) stops the ones still running (exit reason shutdown). The one difference a trapping
// process sees is that no exit_signal message arrives for a crashed task.
// The consumer waits the way a worker must (see await_resolution), running
// its own queued tasks itself rather than leaving them behind its wait.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "detail/coarse_clock.hpp"
#include "process.hpp"
#include "task.hpp"

namespace otpp {

/// What an async_stream does with a task that outlives its timeout.
enum class stream_timeout {
  exit,       ///< kill every task and throw exit_error(timeout) to the consumer
  kill_task,  ///< kill that task; its outcome is error(timeout)
};

/// Task.async_stream's options.
struct async_stream_options {
  /// Tasks running at once; 0: one per hardware thread.
  std::size_t max_concurrency = 0;
  /// Outcomes in the items' order (true) or as tasks finish (false).
  bool ordered = true;
  /// How long each task may run, from its start.
  std::chrono::steady_clock::duration timeout = default_call_timeout;
  /// What a timeout does.
  stream_timeout on_timeout = stream_timeout::exit;
};

namespace detail {

/// Where a stream's tasks report as they finish (from the threads that
/// resolve them), and where its consumer sleeps until one does: a bit per
/// entry, and a bell the consumer hangs up before it sleeps. Lock-free: a
/// ring is one fetch_or, plus a wake-up only when the consumer sleeps.
class stream_board {
 public:
  explicit stream_board(std::size_t capacity)
      : words_{(capacity + 63) / 64}, bits_{std::make_unique<std::atomic<std::uint64_t>[]>(words_)} {
    for (std::size_t w = 0; w < words_; ++w) bits_[w].store(0, std::memory_order_relaxed);
  }
  stream_board(const stream_board&) = delete;
  stream_board& operator=(const stream_board&) = delete;

  /// Entry `i`'s task is resolved.
  void finished(std::uint32_t i) noexcept {
    // seq_cst, with the consumer's in take(): either it sees this bit or
    // this sees its bell.
    bits_[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_seq_cst);
    if (bell_.load(std::memory_order_seq_cst) == nullptr) return;
    if (reply_slot<void>* bell = bell_.exchange(nullptr, std::memory_order_acq_rel)) {
      bell->set_value();
      bell->release();
    }
  }

  /// Adds the finished entries to `out`, without waiting; false if none.
  bool poll(std::vector<std::uint32_t>& out) {
    bool any = false;
    for (std::size_t w = 0; w < words_; ++w) {
      if (bits_[w].load(std::memory_order_relaxed) == 0) continue;
      for (std::uint64_t b = bits_[w].exchange(0, std::memory_order_acquire); b != 0; b &= b - 1) {
        out.push_back(static_cast<std::uint32_t>(w * 64 + static_cast<std::size_t>(__builtin_ctzll(b))));
        any = true;
      }
    }
    return any;
  }

  /// Adds the finished entries to `out`; if there are none, first waits
  /// for one until `deadline`.
  void take(std::vector<std::uint32_t>& out, steady::time_point deadline) {
    if (poll(out)) return;
    auto* bell = reply_slot<void>::make();  // two references: ours and the board's
    bell_.store(bell, std::memory_order_seq_cst);
    bool any = false;
    for (std::size_t w = 0; w < words_ && !any; ++w) any = bits_[w].load(std::memory_order_seq_cst) != 0;
    if (!any) (void)await_resolution(bell, deadline, nullptr);
    if (bell_.exchange(nullptr, std::memory_order_acq_rel) == bell) bell->release();  // not rung: the board's
    bell->release();
    (void)poll(out);
  }

 private:
  std::size_t words_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> bits_;
  std::atomic<reply_slot<void>*> bell_{nullptr};
};

/// Starts a stream's task: task_async, or a task supervisor's async. Its
/// links_caller() says whether a task is linked to a calling process.
template <class Start, class Job>
using started_task_t = std::invoke_result_t<const Start&, Job>;

/// An item of Range, as a stream's task holds it.
template <class Range>
using stream_item_t = std::decay_t<decltype(*std::begin(std::declval<Range&>()))>;

}  // namespace detail

/// The lazy range async_stream returns: an input range of result<R>, R
/// being fn's result. Neither copyable nor movable (its tasks report to it
/// by address): iterate it where it is made.
template <class Range, class F, class Start>
class task_stream {
  using item_iterator = decltype(std::begin(std::declval<Range&>()));
  using item_type = detail::stream_item_t<Range>;

  struct job {
    F fn;
    item_type item;
    decltype(auto) operator()() { return std::invoke(fn, std::move(item)); }
  };
  using task_type = detail::started_task_t<Start, job>;
  template <class T>
  struct result_of_task;
  template <class T>
  struct result_of_task<task<T>> {
    using type = T;
  };

 public:
  /// What each task gives: fn's result, unwrapped from async<R>.
  using value_type = typename result_of_task<task_type>::type;

  /// Keeps `range` (a reference to an lvalue, the range itself if an
  /// rvalue), `fn` and the options; starts nothing until begin().
  task_stream(Range&& range, F fn, async_stream_options options, Start start)
      : range_(std::forward<Range>(range)),
        fn_(std::move(fn)),
        options_(options),
        start_(std::move(start)),
        capacity_(options.max_concurrency ? options.max_concurrency
                                          : std::max<std::size_t>(1, std::thread::hardware_concurrency())),
        board_(capacity_),
        entries_(std::make_unique<entry[]>(capacity_)) {
    free_.reserve(capacity_);
    for (std::size_t i = capacity_; i-- > 0;) {
      entries_[i].wake = &entry::ring;
      entries_[i].board = &board_;
      entries_[i].index = static_cast<std::uint32_t>(i);
      free_.push_back(static_cast<std::uint32_t>(i));
    }
    scratch_.reserve(capacity_);
  }
  task_stream(const task_stream&) = delete;
  task_stream& operator=(const task_stream&) = delete;
  /// Stops (exit reason shutdown) the tasks still running.
  ~task_stream() { stop_all(); }

  /// The stream's input iterator: dereferences to the current outcome.
  class iterator {
   public:
    /// Each outcome.
    using value_type = result<typename task_stream::value_type>;
    /// Required of iterators; never used.
    using difference_type = std::ptrdiff_t;
    /// A singular iterator.
    iterator() noexcept = default;
    /// The current outcome.
    value_type& operator*() const noexcept { return *s_->current_; }
    /// The current outcome's members.
    value_type* operator->() const noexcept { return &*s_->current_; }
    /// The next outcome: may wait for a task, start more, or throw exit_error.
    iterator& operator++() {
      s_->advance();
      return *this;
    }
    /// As ++it.
    void operator++(int) { ++*this; }
    /// True once every outcome has been given.
    friend bool operator==(const iterator& i, std::default_sentinel_t) noexcept { return i.at_end(); }

   private:
    friend class task_stream;
    explicit iterator(task_stream* s) noexcept : s_{s} {}
    [[nodiscard]] bool at_end() const noexcept { return s_->finished_; }
    task_stream* s_ = nullptr;
  };

  /// Starts the first tasks and waits for the first outcome. Call once.
  iterator begin() {
    if (!begun_) {
      begun_ = true;
      it_.emplace(std::begin(range_));
      advance();
    }
    return iterator{this};
  }
  /// The end: reached when every item's outcome has been given.
  [[nodiscard]] std::default_sentinel_t end() const noexcept { return {}; }

 private:
  struct entry : detail::slot_waker {
    detail::stream_board* board = nullptr;
    std::optional<task_type> t;
    detail::steady::time_point deadline{};
    std::uint32_t index = 0;
    bool done = false;       // its outcome is in (or it timed out)
    bool timed_out = false;  // killed by a kill_task timeout

    static void ring(detail::slot_waker* w) noexcept {
      auto* e = static_cast<entry*>(w);
      e->board->finished(e->index);
    }
  };

  // Starts tasks for further items while there is room.
  void fill() {
    while (!free_.empty() && *it_ != std::end(range_)) {
      const std::uint32_t i = free_.back();
      entry& e = entries_[i];
      e.t.emplace(std::invoke(start_, job{fn_, **it_}));
      ++*it_;
      free_.pop_back();
      e.done = false;
      e.timed_out = false;
      e.deadline = options_.timeout == std::chrono::steady_clock::duration::max()
                       ? detail::steady::time_point::max()
                       : detail::coarse_deadline_after(options_.timeout);
      ++in_flight_;
      order_.push_back(i);
      if (!detail::task_access::slot(*e.t)->await(&e)) mark_done(i);  // finished already
    }
  }

  void mark_done(std::uint32_t i) {
    entries_[i].done = true;
    if (!options_.ordered) ready_.push_back(i);
  }

  // The next outcome into current_, or finished_.
  void advance() {
    current_.reset();
    fill();
    if (in_flight_ == 0) {
      finished_ = true;
      return;
    }
    for (;;) {
      std::optional<std::uint32_t> next;
      if (options_.ordered) {
        if (entries_[order_.front()].done) next = order_.front();
      } else if (!ready_.empty()) {
        next = ready_.front();
      }
      if (next) {
        emit(*next);
        return;
      }
      auto wake_by = detail::steady::time_point::max();  // the soonest deadline
      for (std::uint32_t i : order_)
        if (!entries_[i].done) wake_by = std::min(wake_by, entries_[i].deadline);
      if (wake_by != detail::steady::time_point::max()) {  // none finite: no clock read
        if (const auto now = detail::now_for_deadlines(wake_by); wake_by <= now) {
          for (std::uint32_t i : order_)
            if (!entries_[i].done && entries_[i].deadline <= now) expire(i);
          continue;
        }
      }
      scratch_.clear();
      // On a worker, a task of ours queued behind us is run here rather
      // than left for another thread to steal (or for a spare to start).
      if (detail::help_own([this](detail::process_base* p) { return ours(p); })) {
        (void)board_.poll(scratch_);
      } else {
        board_.take(scratch_, wake_by);
      }
      for (std::uint32_t i : scratch_) {
        // A ring can outlive its task (one that rang while being killed):
        // only an entry whose current task is resolved is done.
        entry& e = entries_[i];
        if (!e.done && e.t && !detail::task_access::slot(*e.t)->open()) {
          mark_done(i);
          if (crash_ends_stream() && detail::task_access::slot(*e.t)->settled_state() == detail::reply_slot_base::failed)
            crash(i);
        }
      }
    }
  }

  // Whether `p` is one of the tasks still running for this stream.
  bool ours(const detail::process_base* p) const noexcept {
    for (std::uint32_t i : order_) {
      const entry& e = entries_[i];
      if (!e.done && detail::pid_access::get(e.t->pid()) == p) return true;
    }
    return false;
  }

  // Entry i's task is past its timeout.
  void expire(std::uint32_t i) {
    if (options_.on_timeout == stream_timeout::exit) {
      stop_all();
      throw exit_error{exit_reason::timeout(),
                       fmt::format("otpp::async_stream (a task ran past its timeout of {})",
                                   detail::describe_timeout(options_.timeout))};
    }
    entry& e = entries_[i];
    e.timed_out = stop_task(e, exit_reason::kill());  // else it finished just in time
    mark_done(i);
  }

  // Hands entry i's outcome over and frees the entry (starting the next
  // item's task at once, so it runs while the consumer works).
  void emit(std::uint32_t i) {
    entry& e = entries_[i];
    if (e.timed_out) {
      current_.emplace(exit_reason::timeout());
    } else {
      current_.emplace(detail::task_outcome(detail::task_access::slot(*e.t)));
    }
    if (!e.timed_out && !current_->has_value() && crash_ends_stream()) crash(i);
    e.t.reset();
    --in_flight_;
    if (options_.ordered) {
      order_.pop_front();
    } else {
      ready_.pop_front();
      std::erase(order_, i);
    }
    free_.push_back(i);
    fill();
  }

  // Whether a crash ends the stream: the tasks stand linked to a consumer
  // process that does not trap exits.
  bool crash_ends_stream() const noexcept {
    return start_.links_caller() && detail::tls().current != nullptr && !detail::tls().current->traps_exits();
  }

  // Entry i's task crashed: as a link would, it takes the consumer down.
  [[noreturn]] void crash(std::uint32_t i) {
    entry& e = entries_[i];
    exit_reason why = detail::task_access::slot(*e.t)->error();
    const otpp::pid who = e.t->pid();
    stop_all();
    throw exit_error{std::move(why), fmt::format("otpp::async_stream (task {})", who)};
  }

  // Stops listening to e's task and sends it `why`. False if it had finished.
  bool stop_task(entry& e, const exit_reason& why) {
    auto* slot = detail::task_access::slot(*e.t);
    if (!slot->unawait()) return false;  // after this no wake-up touches e
    otpp::exit(e.t->pid(), why);
    return true;
  }

  // Stops every task still running and ends the stream.
  void stop_all() noexcept {
    for (std::uint32_t i : order_) {
      entry& e = entries_[i];
      if (!e.t) continue;
      // shutdown: what a supervisor sends first, and nothing to log for a
      // task that simply is not wanted any more.
      if (!e.done) (void)stop_task(e, exit_reason::shutdown());
      e.t.reset();
      free_.push_back(i);
    }
    order_.clear();
    ready_.clear();
    in_flight_ = 0;
    finished_ = true;  // after a throw, iterating on ends the loop
  }

  Range range_;
  F fn_;
  async_stream_options options_;
  Start start_;
  std::size_t capacity_;
  detail::stream_board board_;
  std::unique_ptr<entry[]> entries_;
  std::optional<item_iterator> it_;
  std::vector<std::uint32_t> free_;     // entries without a task
  std::deque<std::uint32_t> order_;     // entries with a task, in item order
  std::deque<std::uint32_t> ready_;     // unordered: done entries, in finishing order
  std::vector<std::uint32_t> scratch_;  // what the board hands over
  std::size_t in_flight_ = 0;
  std::optional<result<value_type>> current_;
  bool begun_ = false;
  bool finished_ = false;
};

namespace detail {
/// Starts each task unlinked (the stream stands in for the link), in `rt`
/// if set, else in the caller's runtime or the default one.
struct task_async_start {
  runtime* rt = nullptr;
  [[nodiscard]] static bool links_caller() noexcept { return true; }
  template <class Job>
  auto operator()(Job j) const {
    using server_type = task_server<task_result_t<Job>, Job>;
    return start_task(std::move(j), [this](Job&& f, auto slot) {
      return rt != nullptr ? rt->start<server_type>(std::move(f), slot) : otpp::start<server_type>(std::move(f), slot);
    });
  }
};
}  // namespace detail

/// Task.async_stream: fn(item) for each item of `range`, each in a task of
/// its own, in the caller's runtime. See the header's comment for ordering,
/// concurrency, timeouts and crashes.
template <class Range, class F>
  requires std::invocable<F&, detail::stream_item_t<Range>&&>
[[nodiscard]] task_stream<Range, F, detail::task_async_start> async_stream(Range&& range, F fn,
                                                                          async_stream_options options = {}) {
  return {std::forward<Range>(range), std::move(fn), options, detail::task_async_start{}};
}

/// async_stream with its tasks in runtime `rt`.
template <class Range, class F>
  requires std::invocable<F&, detail::stream_item_t<Range>&&>
[[nodiscard]] task_stream<Range, F, detail::task_async_start> async_stream(runtime& rt, Range&& range, F fn,
                                                                          async_stream_options options = {}) {
  return {std::forward<Range>(range), std::move(fn), options, detail::task_async_start{&rt}};
}

}  // namespace otpp
