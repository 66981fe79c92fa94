// Queues a few jobs, one of which throws; waits for each result.
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>

#include <otpp/otpp.hpp>

#include "job_queue.hpp"

int main() {
  using examples::job_queue;
  otpp::set_log_level(otpp::log_level::none);  // the failing job's crash report is expected
  auto q = otpp::start<job_queue>(examples::job_queue_options{.max_queued = 2}).value();
  std::vector<std::uint64_t> ids;
  ids.push_back(otpp::call(q, job_queue::enqueue{[] { return std::string{"report ready"}; }}).value());
  ids.push_back(otpp::call(q, job_queue::enqueue{[]() -> std::string { throw std::runtime_error("disk full"); }}).value());
  ids.push_back(otpp::call(q, job_queue::enqueue{[] { return std::to_string(6 * 7); }}).value());
  for (auto id : ids) {
    auto r = otpp::call(q, job_queue::await{id}, std::chrono::seconds(10));
    fmt::print("job {} -> {}\n", id, r ? *r : r.error().to_string());
  }
  auto s = otpp::call(q, job_queue::get_stats{});
  fmt::print("done {}, failed {}\n", s.done, s.failed);
  otpp::stop(q);
  return 0;
}
