// examples::job_queue through its public API.
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "job_queue.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::job_queue;

TEST_CASE("job_queue: jobs run in order, one at a time, off the queue's thread", "[examples][job_queue]") {
  otpp::runtime rt{{.workers = 2}};
  auto q = rt.start<job_queue>().value();
  std::promise<void> release;
  auto gate = release.get_future().share();
  const auto first = otpp::call(q, job_queue::enqueue{[gate] {
                       gate.wait();  // holds the worker; the queue must still answer
                       return std::string{"first"};
                     }}).value();
  const auto second = otpp::call(q, job_queue::enqueue{[] { return std::string{"second"}; }}).value();
  CHECK(otpp::call(q, job_queue::status{first}).value().state == job_queue::state::running);
  CHECK(otpp::call(q, job_queue::status{second}).value().state == job_queue::state::queued);
  CHECK(otpp::call(q, job_queue::get_stats{}).queued == 1);
  release.set_value();
  CHECK(otpp::call(q, job_queue::await{second}, 10s).value() == "second");
  CHECK(otpp::call(q, job_queue::await{first}, 10s).value() == "first");  // already done: at once
  auto st = otpp::call(q, job_queue::status{first}).value();
  CHECK(st.state == job_queue::state::done);
  CHECK(st.result == "first");
}

TEST_CASE("job_queue: a full queue refuses; bad input is an error", "[examples][job_queue]") {
  otpp::runtime rt{{.workers = 2}};
  auto q = rt.start<job_queue>(examples::job_queue_options{.max_queued = 1}).value();
  std::promise<void> release;
  auto gate = release.get_future().share();
  auto hold = [gate] {
    gate.wait();
    return std::string{};
  };
  REQUIRE(otpp::call(q, job_queue::enqueue{hold}));  // running
  REQUIRE(otpp::call(q, job_queue::enqueue{hold}));  // queued: the queue is full
  CHECK(otpp::call(q, job_queue::enqueue{hold}).error() == otpp::exit_reason::error("queue_full"));
  CHECK(otpp::call(q, job_queue::enqueue{nullptr}).error() == otpp::exit_reason::error("empty job"));
  CHECK(otpp::call(q, job_queue::status{999}).error() == otpp::exit_reason::error("not_found"));
  CHECK(otpp::call(q, job_queue::await{999}).error() == otpp::exit_reason::error("not_found"));
  release.set_value();
}

TEST_CASE("job_queue: a throwing job fails alone; the queue goes on", "[examples][job_queue]") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::log_capture logs;
  otpp::testing::telemetry_capture cap{examples::job_queue_events::job};
  auto q = rt.start<job_queue>(examples::job_queue_options{.keep_results = 2}).value();
  const auto bad = otpp::call(q, job_queue::enqueue{[]() -> std::string { throw std::runtime_error("disk full"); }}).value();
  const auto good = otpp::call(q, job_queue::enqueue{[] { return std::string{"ok"}; }}).value();
  auto r = otpp::call(q, job_queue::await{bad}, 10s);
  REQUIRE_FALSE(r);
  CHECK(r.error().detail().find("disk full") != std::string_view::npos);
  CHECK(otpp::call(q, job_queue::await{good}, 10s).value() == "ok");
  CHECK(otpp::call(q, job_queue::status{bad}).value().state == job_queue::state::failed);
  auto s = otpp::call(q, job_queue::get_stats{});
  CHECK(s.done == 1);
  CHECK(s.failed == 1);
  CHECK(q.alive());
  // keep_results 2: a third finished job pushes the first out
  const auto third = otpp::call(q, job_queue::enqueue{[] { return std::string{"3"}; }}).value();
  CHECK(otpp::call(q, job_queue::await{third}, 10s).value() == "3");
  CHECK(otpp::call(q, job_queue::status{bad}).error() == otpp::exit_reason::error("not_found"));
  auto evs = cap.events();
  REQUIRE(evs.size() == 3);
  CHECK(evs[0].metadata.at("ok") == otpp::testing::captured_value{false});
  CHECK(evs[1].metadata.at("ok") == otpp::testing::captured_value{true});
}

TEST_CASE("job_queue: max_running jobs run at once, the rest wait their turn", "[examples][job_queue]") {
  otpp::runtime rt{{.workers = 4}};  // two jobs hold their threads below
  auto q = rt.start<job_queue>(examples::job_queue_options{.max_running = 2}).value();
  std::promise<void> release;
  auto gate = release.get_future().share();
  auto hold = [gate] {
    gate.wait();
    return std::string{"held"};
  };
  const auto a = otpp::call(q, job_queue::enqueue{hold}).value();
  const auto b = otpp::call(q, job_queue::enqueue{hold}).value();
  const auto c = otpp::call(q, job_queue::enqueue{[] { return std::string{"third"}; }}).value();
  auto s = otpp::call(q, job_queue::get_stats{});
  CHECK(s.running == 2u);
  CHECK(s.queued == 1u);
  CHECK(otpp::call(q, job_queue::status{c}).value().state == job_queue::state::queued);
  release.set_value();
  CHECK(otpp::call(q, job_queue::await{a}, 10s).value() == "held");
  CHECK(otpp::call(q, job_queue::await{b}, 10s).value() == "held");
  CHECK(otpp::call(q, job_queue::await{c}, 10s).value() == "third");
}
