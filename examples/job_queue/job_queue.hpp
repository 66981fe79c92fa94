#pragma once
// A bounded job queue: jobs run one at a time on a worker process, off the
// queue's own thread, so the queue keeps answering while a job runs.
//
//   auto q = otpp::start_link<examples::job_queue>(examples::job_queue_options{.max_queued = 100}).value();
//   std::uint64_t id = otpp::call(q, examples::job_queue::enqueue{[] { return render_report(); }}).value();
//   otpp::call(q, examples::job_queue::await{id}, 30s);   // the job's result (or its failure)
//   otpp::call(q, examples::job_queue::status{id});       // queued / running / done / failed
//
// A full queue refuses with error("queue_full"): nothing is dropped
// silently. A job that throws crashes its worker (let it crash): the queue
// traps the exit, records the job as failed with the reason, starts a fresh
// worker and goes on with the next job. await is a deferred call: it
// replies when the job ends, however long that takes (or at once if it has).
// The results of the last keep_results finished jobs are kept; older ids
// answer error("not_found").
//
// Telemetry: [job_queue, job] {duration (ns), count} {ok}.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <otpp/exit_reason.hpp>
#include <otpp/gen_server.hpp>
#include <otpp/process.hpp>
#include <otpp/telemetry.hpp>

namespace examples {

struct job_queue_options {
  std::size_t max_queued = 100;
  std::size_t keep_results = 1000;
};

namespace job_queue_events {
inline const otpp::telemetry::event job{"job_queue", "job"};
}  // namespace job_queue_events

namespace job_queue_detail {
/// A worker's report: the job is done.
struct finished {
  std::uint64_t id;
  std::string result;
};

/// Runs one job at a time; a job that throws takes the worker down with it.
class worker : public otpp::gen_server<worker> {
 public:
  struct run {
    std::uint64_t id;
    std::function<std::string()> fn;
  };
  explicit worker(otpp::pid queue) : queue_{std::move(queue)} {}
  void handle_cast(run r) { otpp::send(queue_, finished{r.id, r.fn()}); }

 private:
  otpp::pid queue_;
};
}  // namespace job_queue_detail

class job_queue : public otpp::gen_server<job_queue> {
 public:
  using job = std::function<std::string()>;
  using info_types = otpp::type_list<job_queue_detail::finished>;

  enum class state { queued, running, done, failed };
  struct job_status {
    examples::job_queue::state state;
    std::string result;  // done: the job's result; failed: why
  };

  /// call → the job's id, or error("queue_full") / error("empty job").
  struct enqueue {
    job fn;
  };
  /// call → job_status, or error("not_found").
  struct status {
    std::uint64_t id;
  };
  /// deferred call → the job's result, or the reason it failed / not_found.
  struct await {
    using reply_type = otpp::result<std::string>;
    std::uint64_t id;
  };
  struct stats {
    std::size_t queued = 0;
    bool running = false;
    std::uint64_t done = 0;
    std::uint64_t failed = 0;
  };
  struct get_stats {};

  explicit job_queue(job_queue_options opts = {}) : opts_{opts} {
    if (opts_.max_queued == 0) throw std::invalid_argument("job_queue: max_queued must be positive");
  }

  void init() {
    trap_exit(true);  // a crashing job must not take the queue with it
    start_worker();
  }

  otpp::result<std::uint64_t> handle_call(enqueue e) {
    if (!e.fn) return otpp::exit_reason::error("empty job");
    if (queue_.size() >= opts_.max_queued) return otpp::exit_reason::error("queue_full");
    const std::uint64_t id = next_id_++;
    queue_.push_back({id, std::move(e.fn)});
    jobs_[id] = job_status{state::queued, {}};
    dispatch();
    return id;
  }

  otpp::result<job_status> handle_call(const status& s) const {
    auto it = jobs_.find(s.id);
    if (it == jobs_.end()) return otpp::exit_reason::error("not_found");
    return it->second;
  }

  void handle_call(const await& a, otpp::reply_to<otpp::result<std::string>> to) {
    auto it = jobs_.find(a.id);
    if (it == jobs_.end()) {
      to.reply(otpp::exit_reason::error("not_found"));
    } else if (it->second.state == state::done || it->second.state == state::failed) {
      reply_finished(it->second, to);
    } else {
      waiters_.emplace(a.id, std::move(to));
    }
  }

  stats handle_call(get_stats) const { return stats{queue_.size(), running_ != 0, done_, failed_}; }

  void handle_info(job_queue_detail::finished f) { finish(f.id, true, std::move(f.result)); }

  void handle_info(const otpp::exit_signal& e) {
    if (e.from != worker_.pid()) {
      // Trapping is for the worker: any other exit signal ends the queue
      // as it would a process that does not trap (normal is ignored).
      if (!e.reason.is_normal()) stop(e.reason);
      return;
    }
    worker_ = {};
    if (running_ != 0) finish(running_, false, e.reason.to_string());
    start_worker();
    dispatch();
  }

 private:
  struct pending {
    std::uint64_t id;
    job fn;
  };

  void start_worker() { worker_ = otpp::start_link<job_queue_detail::worker>(self().pid()).value(); }

  void dispatch() {
    if (running_ != 0 || queue_.empty() || !worker_) return;
    pending next = std::move(queue_.front());
    queue_.pop_front();
    running_ = next.id;
    jobs_[next.id].state = state::running;
    started_ = std::chrono::steady_clock::now();
    otpp::cast(worker_, job_queue_detail::worker::run{next.id, std::move(next.fn)});
  }

  void finish(std::uint64_t id, bool ok, std::string result) {
    if (id != running_) return;
    running_ = 0;
    const auto took = std::chrono::steady_clock::now() - started_;
    otpp::telemetry::execute(job_queue_events::job,
                             {{"duration", std::chrono::nanoseconds(took).count()}, {"count", 1}}, {{"ok", ok}});
    job_status& s = jobs_[id];
    s = job_status{ok ? state::done : state::failed, std::move(result)};
    ok ? ++done_ : ++failed_;
    auto [b, e] = waiters_.equal_range(id);
    for (auto it = b; it != e; ++it) reply_finished(s, it->second);
    waiters_.erase(b, e);
    finished_.push_back(id);
    while (finished_.size() > opts_.keep_results) {
      jobs_.erase(finished_.front());
      finished_.pop_front();
    }
    dispatch();
  }

  static void reply_finished(const job_status& s, const otpp::reply_to<otpp::result<std::string>>& to) {
    if (s.state == state::done) {
      to.reply(otpp::result<std::string>{s.result});
    } else {
      to.reply(otpp::exit_reason::error("job failed: " + s.result));
    }
  }

  job_queue_options opts_;
  otpp::server<job_queue_detail::worker> worker_;
  std::deque<pending> queue_;
  std::map<std::uint64_t, job_status> jobs_;
  std::deque<std::uint64_t> finished_;  // oldest first, for keep_results
  std::multimap<std::uint64_t, otpp::reply_to<otpp::result<std::string>>> waiters_;
  std::uint64_t next_id_ = 1;
  std::uint64_t running_ = 0;  // 0: none
  std::chrono::steady_clock::time_point started_;
  std::uint64_t done_ = 0;
  std::uint64_t failed_ = 0;
};

}  // namespace examples
