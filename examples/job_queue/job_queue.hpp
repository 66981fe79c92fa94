#pragma once
// A bounded job queue: each job runs as a task under the queue's own task
// supervisor (Task.Supervisor), off the queue's thread, so the queue keeps
// answering while jobs run; at most max_running at once, in order.
//
//   auto q = otpp::start_link<examples::job_queue>(examples::job_queue_options{.max_queued = 100}).value();
//   std::uint64_t id = otpp::call(q, examples::job_queue::enqueue{[] { return render_report(); }}).value();
//   otpp::call(q, examples::job_queue::await{id}, 30s);   // the job's result (or its failure)
//   otpp::call(q, examples::job_queue::status{id});       // queued / running / done / failed
//
// A full queue refuses with error("queue_full"): nothing is dropped
// silently. A job that throws crashes its task alone (let it crash): the
// queue monitors each task, as Elixir's async_nolink + DOWN pattern does,
// and records the job as failed with the reason, then goes on with the next
// job. await is a deferred call: it replies when the job ends, however long
// that takes (or at once if it has). The results of the last keep_results
// finished jobs are kept; older ids answer error("not_found"). Stopping the
// queue stops its supervisor, and with it the jobs still running.
//
// Telemetry: [job_queue, job] {duration (ns), count} {ok}.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <otpp/exit_reason.hpp>
#include <otpp/gen_server.hpp>
#include <otpp/process.hpp>
#include <otpp/task_supervisor.hpp>
#include <otpp/telemetry.hpp>

namespace examples {

struct job_queue_options {
  std::size_t max_queued = 100;
  std::size_t keep_results = 1000;
  std::size_t max_running = 1;  // jobs at once
};

namespace job_queue_events {
inline const otpp::telemetry::event job{"job_queue", "job"};
}  // namespace job_queue_events

namespace job_queue_detail {
/// A task's report: the job is done.
struct finished {
  std::uint64_t id;
  std::string result;
};
}  // namespace job_queue_detail

class job_queue : public otpp::gen_server<job_queue> {
 public:
  using job = std::function<std::string()>;
  using info_types = otpp::type_list<job_queue_detail::finished, otpp::down>;

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
    std::size_t running = 0;
    std::uint64_t done = 0;
    std::uint64_t failed = 0;
  };
  struct get_stats {};

  explicit job_queue(job_queue_options opts = {}) : opts_{opts} {
    if (opts_.max_queued == 0) throw std::invalid_argument("job_queue: max_queued must be positive");
    if (opts_.max_running == 0) throw std::invalid_argument("job_queue: max_running must be positive");
  }

  void init() {
    trap_exit(true);  // the supervisor's exit is a message to act on, not a silent death
    tasks_ = otpp::task_supervisor::start_link().value();
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

  stats handle_call(get_stats) const { return stats{queue_.size(), running_.size(), done_, failed_}; }

  void handle_info(job_queue_detail::finished f) { finish(f.id, true, std::move(f.result)); }

  // A task ended: after its report (normal), or crashed before it.
  void handle_info(const otpp::down& d) {
    auto it = by_task_.find(d.ref.id());
    if (it == by_task_.end()) return;
    const std::uint64_t id = it->second;
    by_task_.erase(it);
    if (!d.reason.is_normal()) finish(id, false, d.reason.to_string());
  }

  void handle_info(const otpp::exit_signal& e) {
    // Without its supervisor the queue cannot run jobs: it goes down with
    // it. Any other exit signal ends it as it would a process that does not
    // trap (normal is ignored).
    if (e.from == tasks_.pid() || !e.reason.is_normal()) stop(e.reason);
  }

 private:
  struct pending {
    std::uint64_t id;
    job fn;
  };

  void dispatch() {
    while (running_.size() < opts_.max_running && !queue_.empty()) {
      pending next = std::move(queue_.front());
      queue_.pop_front();
      // The task reports its result; a crash is its monitor's DOWN.
      auto run = [fn = std::move(next.fn), queue = self().pid(), id = next.id] {
        otpp::send(queue, job_queue_detail::finished{id, fn()});
      };
      auto started = tasks_.start_child(std::move(run));
      if (!started) {
        finish_now(next.id, false, started.error().to_string());
        continue;
      }
      by_task_.emplace(otpp::monitor(*started).id(), next.id);
      running_.emplace(next.id, std::chrono::steady_clock::now());
      jobs_[next.id].state = state::running;
    }
  }

  void finish(std::uint64_t id, bool ok, std::string result) {
    auto it = running_.find(id);
    if (it == running_.end()) return;  // already finished (a report, then its DOWN)
    const auto took = std::chrono::steady_clock::now() - it->second;
    running_.erase(it);
    record(id, ok, std::move(result), took);
    dispatch();
  }

  // A job that never ran (its task could not start).
  void finish_now(std::uint64_t id, bool ok, std::string result) { record(id, ok, std::move(result), {}); }

  void record(std::uint64_t id, bool ok, std::string result, std::chrono::steady_clock::duration took) {
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
  }

  static void reply_finished(const job_status& s, const otpp::reply_to<otpp::result<std::string>>& to) {
    if (s.state == state::done) {
      to.reply(otpp::result<std::string>{s.result});
    } else {
      to.reply(otpp::exit_reason::error("job failed: " + s.result));
    }
  }

  job_queue_options opts_;
  otpp::task_supervisor tasks_;
  std::deque<pending> queue_;
  std::map<std::uint64_t, job_status> jobs_;
  std::deque<std::uint64_t> finished_;  // oldest first, for keep_results
  std::multimap<std::uint64_t, otpp::reply_to<otpp::result<std::string>>> waiters_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, std::chrono::steady_clock::time_point> running_;  // id -> started
  std::unordered_map<std::uint64_t, std::uint64_t> by_task_;                // task monitor's id -> job id
  std::uint64_t done_ = 0;
  std::uint64_t failed_ = 0;
};

}  // namespace examples
