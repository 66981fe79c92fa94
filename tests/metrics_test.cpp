// otpp::metrics: the five metric kinds over telemetry events, tags, the
// Prometheus text exposition, bad definitions, detaching, and many emitters
// at once (exact counts).

#include <string>
#include <thread>
#include <vector>

#include <otpp/metrics.hpp>
#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

namespace m = otpp::metrics;
namespace tel = otpp::telemetry;

namespace {
const tel::event fetch{"metrics_test", "fetch"};
const tel::event other{"metrics_test", "other"};

bool has_line(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

// Some scheduler has been idle for a while (they all start idle).
bool eventually_idle(otpp::runtime& rt) {
  return otpp_test::eventually([&] {
    for (const auto& s : rt.schedulers())
      if (s.idle.count() > 0) return true;
    return false;
  });
}
}  // namespace

TEST_CASE("metrics: counter and sum with tags, rendered as Prometheus counters") {
  m::reporter r{{m::counter("metrics_test.fetch.count", fetch, {.tags = {"hit"}, .description = "Fetches"}),
                 m::sum("metrics_test_bytes_total", fetch, "bytes", {.unit = "bytes"})}};
  for (int i = 0; i < 3; ++i) tel::execute(fetch, {{"bytes", 10}}, {{"hit", true}});
  tel::execute(fetch, {{"bytes", 5}}, {{"hit", false}});
  tel::execute(fetch, {}, {{"hit", false}});  // no bytes: counted by the counter, not the sum
  auto series = r.read("metrics_test.fetch.count");
  REQUIRE(series.size() == 2);
  double hits = 0, misses = 0;
  for (auto& s : series) (s.tags.at(0).second == "true" ? hits : misses) = s.value;
  CHECK(hits == 3);
  CHECK(misses == 2);
  CHECK(r.read("metrics_test_bytes_total").at(0).value == 35);
  const std::string text = r.prometheus();
  CHECK(has_line(text, "# HELP metrics_test_fetch_count Fetches"));
  CHECK(has_line(text, "# TYPE metrics_test_fetch_count counter"));
  CHECK(has_line(text, "metrics_test_fetch_count{hit=\"true\"} 3"));
  CHECK(has_line(text, "metrics_test_fetch_count{hit=\"false\"} 2"));
  CHECK(has_line(text, "# HELP metrics_test_bytes_total (bytes)"));
  CHECK(has_line(text, "metrics_test_bytes_total 35"));
}

TEST_CASE("metrics: last_value, summary and distribution") {
  m::reporter r{{m::last_value("metrics_test_last", fetch, "v"), m::summary("metrics_test_summary", fetch, "v"),
                 m::distribution("metrics_test_hist", fetch, "v", {1, 10, 100})}};
  for (double v : {5.0, 0.5, 50.0, 500.0, 10.0}) tel::execute(fetch, {{"v", v}});
  CHECK(r.read("metrics_test_last").at(0).value == 10);
  auto s = r.read("metrics_test_summary").at(0);
  CHECK(s.count == 5);
  CHECK(s.value == 565.5);
  CHECK(s.min == 0.5);
  CHECK(s.max == 500);
  auto h = r.read("metrics_test_hist").at(0);
  CHECK(h.buckets == std::vector<std::uint64_t>{1, 2, 1, 1});  // <=1, <=10 (5 and 10), <=100, +Inf
  const std::string text = r.prometheus();
  CHECK(has_line(text, "# TYPE metrics_test_last gauge"));
  CHECK(has_line(text, "metrics_test_last 10"));
  CHECK(has_line(text, "# TYPE metrics_test_summary summary"));
  CHECK(has_line(text, "metrics_test_summary_sum 565.5"));
  CHECK(has_line(text, "metrics_test_summary_count 5"));
  CHECK(has_line(text, "# TYPE metrics_test_hist histogram"));
  CHECK(has_line(text, "metrics_test_hist_bucket{le=\"1\"} 1"));
  CHECK(has_line(text, "metrics_test_hist_bucket{le=\"10\"} 3"));
  CHECK(has_line(text, "metrics_test_hist_bucket{le=\"100\"} 4"));
  CHECK(has_line(text, "metrics_test_hist_bucket{le=\"+Inf\"} 5"));
  CHECK(has_line(text, "metrics_test_hist_count 5"));
}

TEST_CASE("metrics: label values are escaped, pids print as pids, a missing tag reads empty") {
  otpp::runtime rt{{.workers = 1}};
  m::reporter r{{m::counter("metrics_test_labels", other, {.tags = {"what", "who"}})}};
  tel::execute(other, {}, {{"what", "a \"quoted\"\\ line\n"}});
  const std::string text = r.prometheus();
  CHECK(has_line(text, "metrics_test_labels{what=\"a \\\"quoted\\\"\\\\ line\\n\",who=\"\"} 1"));
}

TEST_CASE("metrics: bad definitions are refused; a reporter detaches when it goes") {
  CHECK_THROWS_AS(m::reporter({m::counter("", fetch)}), std::invalid_argument);
  CHECK_THROWS_AS(m::reporter({m::counter("x", fetch), m::counter("x", other)}), std::invalid_argument);
  CHECK_THROWS_AS(m::reporter({m::sum("x", fetch, "")}), std::invalid_argument);
  CHECK_THROWS_AS(m::reporter({m::distribution("x", fetch, "v", {10, 1})}), std::invalid_argument);
  CHECK_THROWS_AS(m::reporter({m::distribution("x", fetch, "v", {})}), std::invalid_argument);
  const auto before = tel::list_handlers({"metrics_test"}).size();
  {
    m::reporter r{{m::counter("a", fetch), m::counter("b", other), m::counter("c", fetch)}};
    CHECK(tel::list_handlers({"metrics_test"}).size() == before + 2);  // one per event
  }
  CHECK(tel::list_handlers({"metrics_test"}).size() == before);
}

TEST_CASE("metrics: many threads emitting at once; every event counted once") {
  m::reporter r{{m::counter("metrics_test_par", fetch, {.tags = {"t"}}),
                 m::distribution("metrics_test_par_hist", fetch, "v", {0.5, 1.5})}};
  constexpr int threads = 4, per = 20'000;
  std::vector<std::thread> ts;
  for (int k = 0; k < threads; ++k)
    ts.emplace_back([k] {
      for (int i = 0; i < per; ++i) tel::execute(fetch, {{"v", i % 2}}, {{"t", k % 2}});
    });
  for (auto& t : ts) t.join();
  double total = 0;
  for (auto& s : r.read("metrics_test_par")) total += s.value;
  CHECK(total == threads * per);
  auto h = r.read("metrics_test_par_hist").at(0);
  CHECK(h.count == static_cast<std::uint64_t>(threads * per));
  CHECK(h.buckets == std::vector<std::uint64_t>{threads * per / 2, threads * per / 2, 0});
}

namespace {
class counter_server : public otpp::gen_server<counter_server> {
 public:
  struct bump {};
  struct get {};
  void handle_cast(bump) { ++n_; }
  int handle_call(get) { return n_; }

 private:
  int n_ = 0;
};
}  // namespace

TEST_CASE("metrics: the runtime's own counters (messages and idle time per scheduler) and their exposition") {
  otpp::runtime rt{{.workers = 2}};
  auto total = [&] {
    std::uint64_t n = 0;
    for (const auto& s : rt.schedulers()) n += s.messages;
    return n;
  };
  REQUIRE(rt.schedulers().size() == 2);
  const auto before = total();
  auto c = rt.start<counter_server>().value();
  for (int i = 0; i < 1000; ++i) otpp::cast(c, counter_server::bump{});
  REQUIRE(otpp::call(c, counter_server::get{}) == 1000);
  // Credited when the turn that took them ends, which may be after the reply.
  CHECK(otpp_test::eventually([&] { return total() - before >= 1000; }));
  CHECK(eventually_idle(rt));
  const std::string text = m::runtime_prometheus(rt);
  CHECK(has_line(text, "# TYPE otpp_processes gauge"));
  CHECK(has_line(text, "otpp_processes 1"));
  CHECK(has_line(text, "# TYPE otpp_messages_total counter"));
  CHECK(text.find("otpp_messages_total{scheduler=\"1\"}") != std::string::npos);
  CHECK(text.find("otpp_scheduler_idle_seconds_total{scheduler=\"0\"}") != std::string::npos);
  CHECK(has_line(text, "otpp_run_queue_length{scheduler=\"shared\"} 0"));
}
