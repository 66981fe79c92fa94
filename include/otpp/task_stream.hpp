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
// in its place. Tasks started from a process are linked to it, as
// Task.async's are: a crashing task crashes the caller (here, exit_error is
// thrown at once) unless the caller traps exits, when its outcome is
// error(reason). From a plain thread nothing is linked, and a crash is
// error(reason). Destroying the stream early kills the tasks still
// running. The consumer waits the way a worker must (see
// await_resolution), so a process may iterate; a coroutine handler that
// must not hold its worker should await tasks instead.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/core.h>

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
/// resolve them), and where its consumer sleeps until one does.
class stream_board {
 public:
  explicit stream_board(std::size_t capacity) { done_.reserve(capacity); }
  stream_board(const stream_board&) = delete;
  stream_board& operator=(const stream_board&) = delete;

  /// Entry `i`'s task is resolved (never more entries pending than the
  /// capacity reserved, so the push does not allocate).
  void finished(std::uint32_t i) noexcept {
    reply_slot<void>* bell = nullptr;
    {
      std::lock_guard lock{mutex_};
      done_.push_back(i);
      bell = std::exchange(bell_, nullptr);
    }
    if (bell != nullptr) {
      bell->set_value();
      bell->release();
    }
  }

  /// Moves the finished entries into `out`; if there are none, first waits
  /// for one until `deadline`.
  void take(std::vector<std::uint32_t>& out, steady::time_point deadline) {
    reply_slot<void>* bell = nullptr;
    {
      std::lock_guard lock{mutex_};
      if (done_.empty()) {
        bell = reply_slot<void>::make();  // two references: ours and the board's
        bell_ = bell;
      }
    }
    if (bell != nullptr) {
      (void)await_resolution(bell, deadline, nullptr);
      std::lock_guard lock{mutex_};
      if (bell_ == bell) {  // not rung: take the board's reference back
        bell_ = nullptr;
        bell->release();
      }
    }
    if (bell != nullptr) bell->release();
    std::lock_guard lock{mutex_};
    out.insert(out.end(), done_.begin(), done_.end());
    done_.clear();
  }

 private:
  std::mutex mutex_;
  std::vector<std::uint32_t> done_;
  reply_slot<void>* bell_ = nullptr;
};

/// Starts a stream's task: task_async, or a task supervisor's async. Its
/// links_caller() says whether a task is linked to a calling process.
template <class Start, class Job>
using started_task_t = std::invoke_result_t<const Start&, Job>;

}  // namespace detail

/// The lazy range async_stream returns: an input range of result<R>, R
/// being fn's result. Neither copyable nor movable (its tasks report to it
/// by address): iterate it where it is made.
template <class Range, class F, class Start>
class task_stream {
  using item_iterator = decltype(std::begin(std::declval<Range&>()));
  using item_sentinel = decltype(std::end(std::declval<Range&>()));
  using item_type = std::decay_t<decltype(*std::declval<item_iterator&>())>;

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
  /// Kills the tasks still running.
  ~task_stream() { kill_all(); }

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
                       : detail::deadline_after(options_.timeout);
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
      auto wake_by = detail::steady::time_point::max();
      const auto now = detail::steady::now();
      bool expired = false;
      for (std::uint32_t i : order_) {
        entry& e = entries_[i];
        if (e.done) continue;
        if (e.deadline <= now) {
          expire(i);
          expired = true;
        } else {
          wake_by = std::min(wake_by, e.deadline);
        }
      }
      if (expired) continue;
      scratch_.clear();
      board_.take(scratch_, wake_by);
      for (std::uint32_t i : scratch_) {
        // A ring can outlive its task (one that rang while being killed):
        // only an entry whose current task is resolved is done.
        entry& e = entries_[i];
        if (!e.done && e.t && !detail::task_access::slot(*e.t)->open()) mark_done(i);
      }
    }
  }

  // Entry i's task is past its timeout.
  void expire(std::uint32_t i) {
    if (options_.on_timeout == stream_timeout::exit) {
      kill_all();
      throw exit_error{exit_reason::timeout(),
                       fmt::format("otpp::async_stream (a task ran past its timeout of {})",
                                   detail::describe_timeout(options_.timeout))};
    }
    entry& e = entries_[i];
    e.timed_out = stop_task(e);  // else it finished just in time
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
    const bool crashed = !e.timed_out && !current_->has_value();
    pid who = e.t->pid();
    e.t.reset();
    --in_flight_;
    if (options_.ordered) {
      order_.pop_front();
    } else {
      ready_.pop_front();
      std::erase(order_, i);
    }
    free_.push_back(i);
    // A linked caller that does not trap exits goes down with a crashed
    // task (the exit signal is on its way); say so now rather than hand
    // the crash over as data.
    if (crashed && start_.links_caller() && detail::tls.current != nullptr && !detail::tls.current->traps_exits()) {
      kill_all();
      throw exit_error{current_->error(), fmt::format("otpp::async_stream (task {})", who)};
    }
    fill();
  }

  // Stops listening to e's task, unlinks it from the caller (its kill must
  // not take the caller down) and kills it. False if it had finished.
  bool stop_task(entry& e) {
    auto* slot = detail::task_access::slot(*e.t);
    if (!slot->unawait()) return false;  // after this no wake-up touches e
    if (detail::tls.current != nullptr) otpp::unlink(e.t->pid());
    otpp::exit(e.t->pid(), exit_reason::kill());
    return true;
  }

  void kill_all() noexcept {
    for (std::uint32_t i : order_) {
      entry& e = entries_[i];
      if (!e.t) continue;
      if (!e.done) {
        try {
          (void)stop_task(e);
        } catch (...) {
          // unlink may allocate; the kill below is what matters
          otpp::exit(e.t->pid(), exit_reason::kill());
        }
      }
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
/// Starts each task with task_async, in `rt` if set.
struct task_async_start {
  runtime* rt = nullptr;
  [[nodiscard]] static bool links_caller() noexcept { return true; }
  template <class Job>
  auto operator()(Job j) const {
    return rt != nullptr ? task_async(*rt, std::move(j)) : task_async(std::move(j));
  }
};
}  // namespace detail

/// Task.async_stream: fn(item) for each item of `range`, each in a task
/// started as task_async starts one (linked to the calling process). See
/// the header's comment for ordering, concurrency, timeouts and crashes.
template <class Range, class F>
[[nodiscard]] task_stream<Range, F, detail::task_async_start> async_stream(Range&& range, F fn,
                                                                          async_stream_options options = {}) {
  return {std::forward<Range>(range), std::move(fn), options, detail::task_async_start{}};
}

/// async_stream with tasks in runtime `rt` (as task_async(rt, fn) starts them).
template <class Range, class F>
[[nodiscard]] task_stream<Range, F, detail::task_async_start> async_stream(runtime& rt, Range&& range, F fn,
                                                                          async_stream_options options = {}) {
  return {std::forward<Range>(range), std::move(fn), options, detail::task_async_start{&rt}};
}

}  // namespace otpp
