#pragma once
// otpp::pool<Worker>: a pool of worker servers lent out one caller at a
// time (poolboy's model, the "pooling" use of GenServer).
//
//   auto db = otpp::start_link<otpp::pool<db_conn>>(otpp::pool_options{.size = 5, .max_overflow = 2}, dsn).value();
//   auto rows = otpp::transaction(db, [&](const otpp::server<db_conn>& c) { return otpp::call(c, query{"..."}); });
//
// The pool is a gen_server. It starts `size` workers linked to it (each
// `otpp::start_link<Worker>(args...)` with the arguments given after the
// options) and lends them out:
// - checkout(pool, timeout) takes a free worker, or starts an overflow one
//   while fewer than `max_overflow` are out, or waits in line (first come,
//   first served) until one is checked in, up to the timeout;
//   try_checkout never waits and fails with `full`;
// - checkin(pool, worker) gives it back (an overflow worker is stopped then,
//   unless a caller waits for it); transaction(pool, fn) checks out, runs
//   fn(worker) and checks in, also when fn throws;
// - a process that dies holding a worker gives it back (the pool monitors
//   it); a worker that crashes is replaced (or handed to a waiting caller);
//   a caller whose checkout timed out is skipped, its worker not lost.
// Telemetry: pool_events::checkout (wait in ns; pool, overflow) for every
// worker lent, pool_events::exhausted when a caller has to wait or is
// refused. Use it as a child: `otpp::child<otpp::pool<db_conn>>(opts, dsn)`.

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "gen_server.hpp"
#include "process.hpp"
#include "telemetry.hpp"

namespace otpp {

/// How big a pool is.
struct pool_options {
  std::size_t size = 5;          ///< Workers started with the pool and kept.
  std::size_t max_overflow = 0;  ///< Extra workers started when all are out, stopped when returned.
};

/// What pool_status reports (:poolboy.status).
struct pool_stats {
  std::size_t available = 0;    ///< Workers free now.
  std::size_t checked_out = 0;  ///< Workers lent out now.
  std::size_t overflow = 0;     ///< Overflow workers alive now (counted in the others).
  std::size_t waiting = 0;      ///< Callers waiting for a worker.
};

/// Telemetry every pool emits.
namespace pool_events {
/// A worker was lent. Measurements: wait (ns the caller waited in line, 0
/// if one was free). Metadata: pool (pid), overflow (an overflow worker).
inline const telemetry::event checkout{"otpp", "pool", "checkout"};
/// A caller found no worker free and no overflow left: it waits (or, from
/// try_checkout, is refused). Metadata: pool (pid), waiting (callers in line).
inline const telemetry::event exhausted{"otpp", "pool", "exhausted"};
}  // namespace pool_events

/// A pool of `Worker` servers (see the header comment).
template <class Worker>
class pool : public gen_server<pool<Worker>> {
  static_assert(std::is_base_of_v<gen_server<Worker>, Worker>, "otpp::pool<Worker>: Worker must be a gen_server");

 public:
  /// @cond OTPP_INTERNAL
  struct checkout_req {
    using reply_type = std::optional<server<Worker>>;  // empty: none free, and the caller would not wait
    pid caller;
    bool wait;
  };
  struct checkin_msg {
    server<Worker> worker;
  };
  struct status_req {};
  /// @endcond

  /// A pool of `opts.size` workers, each started with copies of `args`.
  /// Throws std::invalid_argument for a pool of no worker at all.
  template <class... Args>
  explicit pool(pool_options opts, Args&&... args)
      : opts_{opts}, start_worker_{[... a = std::forward<Args>(args)]() { return otpp::start_link<Worker>(a...); }} {
    if (opts_.size == 0 && opts_.max_overflow == 0)
      throw std::invalid_argument("otpp::pool: size and max_overflow are both 0: no worker could ever be lent");
  }

  /// @cond OTPP_INTERNAL
  init_result init() {
    this->trap_exit();
    for (std::size_t i = 0; i < opts_.size; ++i) {
      auto w = start_worker_();
      if (!w) {
        // Those started go too (an exit `normal` would leave them running).
        for (auto& started : free_) {
          otpp::unlink(started.pid());
          (void)otpp::exit(started.pid(), exit_reason::shutdown());
        }
        return init_result{init_result::kind::error, w.error()};
      }
      free_.push_back(*w);
    }
    return {};
  }

  void handle_call(checkout_req req, reply_to<std::optional<server<Worker>>> r) {
    if (auto w = lend(req.caller)) {
      emit_checkout(out_.back().overflow, 0);
      if (!r.reply(std::move(*w))) give_up_last();  // the caller is gone already
      return;
    }
    if (req.wait) waiting_.push_back({std::move(r), std::move(req.caller), now_ns()});
    emit_exhausted();
    if (!req.wait) r.reply(std::nullopt);
  }

  void handle_cast(checkin_msg m) {
    auto it = find_out(m.worker.pid());
    if (it == out_.end()) return;  // not ours, or already back (a second checkin)
    if (it->watch) (void)otpp::demonitor(it->watch);
    const bool extra = it->overflow;
    out_.erase(it);
    give_back(std::move(m.worker), extra);
  }

  pool_stats handle_call(status_req) {
    return {free_.size(), out_.size(), overflow_, waiting_.size()};
  }

  void handle_info(const down& d) {
    // A holder died: what it held comes back.
    for (auto it = out_.begin(); it != out_.end();) {
      if (it->holder == d.process) {
        auto w = std::move(it->worker);
        const bool extra = it->overflow;
        it = out_.erase(it);
        give_back(std::move(w), extra);
      } else {
        ++it;
      }
    }
  }

  void handle_info(const exit_signal& s) {
    if (auto it = find_out(s.from); it != out_.end()) {
      if (it->watch) (void)otpp::demonitor(it->watch);
      const bool extra = it->overflow;
      out_.erase(it);
      replace(extra);
      return;
    }
    if (auto it = std::find_if(free_.begin(), free_.end(), [&](const server<Worker>& w) { return w.pid() == s.from; });
        it != free_.end()) {
      free_.erase(it);
      replace(false);  // a free worker is a base one
      return;
    }
    // Not a worker: our parent (or a linked stranger) going down takes us with it.
    if (!s.reason.is_normal()) this->stop(s.reason);
  }

  /// @endcond

 private:
  struct lent {
    server<Worker> worker;
    pid holder;
    monitor_ref watch;
    bool overflow;
  };
  struct waiter {
    reply_to<std::optional<server<Worker>>> reply;
    pid caller;
    std::int64_t since;
  };

  static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  typename std::vector<lent>::iterator find_out(const pid& w) {
    return std::find_if(out_.begin(), out_.end(), [&](const lent& l) { return l.worker.pid() == w; });
  }

  // A worker for `caller`, free or overflow; nothing if none can be had.
  std::optional<server<Worker>> lend(const pid& caller) {
    bool extra = false;
    server<Worker> w;
    if (!free_.empty()) {  // only base workers wait here: an overflow one is stopped when returned
      w = std::move(free_.back());
      free_.pop_back();
    } else if (overflow_ < opts_.max_overflow) {
      auto started = start_worker_();
      if (!started) return std::nullopt;  // counts as exhausted; the start error was logged by the worker
      w = std::move(*started);
      ++overflow_;
      extra = true;
    } else {
      return std::nullopt;
    }
    out_.push_back({w, caller, caller ? otpp::monitor(caller) : monitor_ref{}, extra});
    return w;
  }

  // A worker back in the pool: to the first caller still waiting, else kept
  // (or stopped, if it is an overflow worker).
  void give_back(server<Worker> w, bool extra) {
    while (!waiting_.empty()) {
      waiter next = std::move(waiting_.front());
      waiting_.pop_front();
      out_.push_back({w, next.caller, next.caller ? otpp::monitor(next.caller) : monitor_ref{}, extra});
      if (next.reply.reply(w)) {
        emit_checkout(extra, now_ns() - next.since);
        return;
      }
      give_up_last();  // that caller gave up (its checkout timed out): the next one
    }
    if (extra) {
      --overflow_;
      otpp::unlink(w.pid());  // its exit is ours, not a crash to answer
      (void)otpp::exit(w.pid(), exit_reason::shutdown());
      return;
    }
    free_.push_back(std::move(w));
  }

  // A worker died: a new one, for a waiting caller or the free list, unless
  // it was an overflow worker nobody waits for.
  void replace(bool extra) {
    if (extra) --overflow_;
    if (extra && waiting_.empty()) return;
    auto w = start_worker_();
    if (!w) return;  // the pool is smaller until a checkin or the next crash; the worker logged why
    if (extra) ++overflow_;
    give_back(std::move(*w), extra);
  }

  // The last worker lent did not reach its caller: it is not out after all.
  void give_up_last() {
    if (out_.back().watch) (void)otpp::demonitor(out_.back().watch);
    out_.pop_back();
  }

  void emit_checkout(bool extra, std::int64_t waited) {
    if (!pool_events::checkout.active()) return;
    telemetry::execute(pool_events::checkout, {{"wait", waited}}, {{"pool", otpp::self()}, {"overflow", extra}});
  }
  void emit_exhausted() {
    if (!pool_events::exhausted.active()) return;
    telemetry::execute(pool_events::exhausted, {{"count", 1}}, {{"pool", otpp::self()}, {"waiting", waiting_.size()}});
  }

  pool_options opts_;
  std::function<result<server<Worker>>()> start_worker_;
  std::vector<server<Worker>> free_;  // LIFO: the most recently used first, warm
  std::vector<lent> out_;
  std::deque<waiter> waiting_;
  std::size_t overflow_ = 0;
};

/// Takes a worker from the pool, waiting in line up to `timeout` if none is
/// free (the wait counts towards it). Fails with timeout, noproc (no pool),
/// or the pool's exit reason. From a process, the worker comes back by
/// itself if the process dies holding it.
template <class Worker>
result<server<Worker>> checkout(const server<pool<Worker>>& p,
                                std::chrono::steady_clock::duration timeout = default_call_timeout) {
  auto r = otpp::try_call(p, typename pool<Worker>::checkout_req{otpp::self(), true}, timeout);
  if (!r) return r.error();
  return std::move(**r);  // a caller that waits always gets one
}

/// Takes a free (or overflow) worker if there is one, never waiting in line:
/// otherwise fails with error "full".
template <class Worker>
result<server<Worker>> try_checkout(const server<pool<Worker>>& p,
                                    std::chrono::steady_clock::duration timeout = default_call_timeout) {
  auto r = otpp::try_call(p, typename pool<Worker>::checkout_req{otpp::self(), false}, timeout);
  if (!r) return r.error();
  if (!*r) return exit_reason::error("full");
  return std::move(**r);
}

/// Gives a worker back (a cast: returns at once). Checking in a worker twice,
/// or one the pool does not know, does nothing.
template <class Worker>
void checkin(const server<pool<Worker>>& p, const server<Worker>& w) {
  otpp::cast(p, typename pool<Worker>::checkin_msg{w});
}

/// checkout, fn(worker), checkin, also when fn throws (then rethrows).
/// Returns what fn returns, or the checkout's failure.
template <class Worker, class F>
  requires std::invocable<F&, const server<Worker>&>
auto transaction(const server<pool<Worker>>& p, F&& fn, std::chrono::steady_clock::duration timeout = default_call_timeout)
    -> result<std::invoke_result_t<F&, const server<Worker>&>> {
  using R = std::invoke_result_t<F&, const server<Worker>&>;
  auto w = checkout(p, timeout);
  if (!w) return w.error();
  struct give_back_on_exit {
    const server<otpp::pool<Worker>>& from;
    const server<Worker>& worker;
    ~give_back_on_exit() { checkin(from, worker); }
  } guard{p, *w};
  if constexpr (std::is_void_v<R>) {
    fn(std::as_const(*w));
    return {};
  } else {
    return result<R>{std::in_place, fn(std::as_const(*w))};
  }
}

/// Free, lent, overflow and waiting counts (:poolboy.status).
template <class Worker>
[[nodiscard]] result<pool_stats> pool_status(const server<pool<Worker>>& p,
                                             std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return otpp::try_call(p, typename pool<Worker>::status_req{}, timeout);
}

}  // namespace otpp
