#pragma once
// Metrics over telemetry events, in Elixir's telemetry_metrics shape, with a
// Prometheus text exposition.
//
//   namespace m = otpp::metrics;
//   m::reporter metrics{{
//       m::counter("cache_fetch_total", cache_fetch, {.tags = {"hit"}}),
//       m::distribution("cache_fetch_seconds", cache_fetch, "duration", {0.0001, 0.001, 0.01}, {.unit = "s"}),
//       m::counter("otpp_restarts_total", otpp::supervisor_events::child_restarting),
//   }};
//   serve(metrics.prometheus());   // "# TYPE cache_fetch_total counter\ncache_fetch_total{hit=\"true\"} 42\n..."
//
// A reporter attaches one telemetry handler per event it measures and
// detaches it when destroyed. Each metric keeps one series per combination
// of its tags' values (read from the event's metadata; a missing tag reads
// as ""). Updates are atomic and lock-free for a metric without tags; a
// tagged one finds its series under a shared lock. Values are doubles.
//
// - counter: events seen (the measurement is ignored) — Prometheus counter;
// - sum: the measurement added up — counter;
// - last_value: the latest measurement — gauge;
// - summary: count, sum, min and max of the measurement — summary (_sum and
//   _count; min and max through read());
// - distribution: a histogram over fixed bucket bounds — histogram.
// An event without the measurement a metric reads is not counted by it.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "pid.hpp"
#include "runtime.hpp"
#include "telemetry.hpp"

namespace otpp::metrics {

/// The kinds of metric (telemetry_metrics' five).
enum class kind : std::uint8_t { counter, sum, last_value, summary, distribution };

/// What every metric may say besides its event.
struct metric_options {
  std::vector<std::string> tags{};  ///< Metadata keys whose values label the series.
  std::string description{};      ///< The # HELP line.
  std::string unit{};             ///< Appended to the help text, e.g. "s" or "bytes".
};

/// A metric's definition (made by counter(), sum(), ...).
struct metric {
  kind type = kind::counter;         ///< Which kind.
  std::string name;                  ///< Its name in the exposition.
  telemetry::event event;            ///< The event it measures.
  std::string measurement;           ///< The measurement it reads (not for counter).
  std::vector<double> buckets;       ///< distribution: the buckets' upper bounds, increasing.
  metric_options options;            ///< Tags, description, unit.
};

/// Counts `e`'s events.
[[nodiscard]] inline metric counter(std::string name, telemetry::event e, metric_options o = {}) {
  return {kind::counter, std::move(name), std::move(e), {}, {}, std::move(o)};
}
/// Adds up `measurement` over `e`'s events.
[[nodiscard]] inline metric sum(std::string name, telemetry::event e, std::string measurement, metric_options o = {}) {
  return {kind::sum, std::move(name), std::move(e), std::move(measurement), {}, std::move(o)};
}
/// The latest `measurement` of `e`.
[[nodiscard]] inline metric last_value(std::string name, telemetry::event e, std::string measurement,
                                       metric_options o = {}) {
  return {kind::last_value, std::move(name), std::move(e), std::move(measurement), {}, std::move(o)};
}
/// Count, sum, min and max of `measurement` over `e`'s events.
[[nodiscard]] inline metric summary(std::string name, telemetry::event e, std::string measurement, metric_options o = {}) {
  return {kind::summary, std::move(name), std::move(e), std::move(measurement), {}, std::move(o)};
}
/// A histogram of `measurement` over `e`'s events, with `buckets` as the
/// buckets' upper bounds (increasing; +Inf is implied).
[[nodiscard]] inline metric distribution(std::string name, telemetry::event e, std::string measurement,
                                         std::vector<double> buckets, metric_options o = {}) {
  return {kind::distribution, std::move(name), std::move(e), std::move(measurement), std::move(buckets), std::move(o)};
}

/// One series of a metric, as read().
struct series_value {
  std::vector<std::pair<std::string, std::string>> tags;  ///< Tag name and value, in the metric's order.
  double value = 0;            ///< counter: events; sum: the total; last_value: the latest; summary/distribution: the sum.
  std::uint64_t count = 0;     ///< Events counted.
  double min = 0;              ///< summary: the smallest measurement.
  double max = 0;              ///< summary: the largest measurement.
  std::vector<std::uint64_t> buckets;  ///< distribution: events per bucket (not cumulative), +Inf last.
};

namespace detail {

// A tag value as the exposition prints it.
inline std::string tag_text(const telemetry::value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return {};
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::string_view>) {
          return std::string{x};
        } else if constexpr (std::is_same_v<T, otpp::pid>) {
          return std::string{otpp::detail::pid_text{x.id()}.view()};
        } else {
          return fmt::format("{}", x);
        }
      },
      v.get());
}

inline void atomic_add(std::atomic<double>& a, double v) noexcept {
  double now = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(now, now + v, std::memory_order_relaxed)) {
  }
}

struct series {
  explicit series(std::size_t buckets) : bucket_counts(buckets + 1) {}
  std::atomic<std::uint64_t> count{0};
  std::atomic<double> value{0};
  std::atomic<double> min{std::numeric_limits<double>::infinity()};
  std::atomic<double> max{-std::numeric_limits<double>::infinity()};
  std::vector<std::atomic<std::uint64_t>> bucket_counts;
};

class live_metric {
 public:
  explicit live_metric(metric d) : def_{std::move(d)}, untagged_{def_.options.tags.empty() ? new series(def_.buckets.size()) : nullptr} {}

  [[nodiscard]] const metric& def() const noexcept { return def_; }

  void record(const telemetry::measurements& m, const telemetry::metadata& md) {
    double v = 1;
    if (def_.type != kind::counter) {
      auto got = m.get(def_.measurement);
      if (!got) return;
      v = *got;
    }
    series& s = untagged_ ? *untagged_ : find(md);
    // As few locked instructions as each kind needs: a counter's value is
    // its count, a distribution's count the sum of its buckets.
    switch (def_.type) {
      case kind::counter: s.count.fetch_add(1, std::memory_order_relaxed); break;
      case kind::sum:
        s.count.fetch_add(1, std::memory_order_relaxed);
        atomic_add(s.value, v);
        break;
      case kind::last_value:
        s.count.fetch_add(1, std::memory_order_relaxed);
        s.value.store(v, std::memory_order_relaxed);
        break;
      case kind::summary: {
        s.count.fetch_add(1, std::memory_order_relaxed);
        atomic_add(s.value, v);
        double lo = s.min.load(std::memory_order_relaxed);
        while (v < lo && !s.min.compare_exchange_weak(lo, v, std::memory_order_relaxed)) {
        }
        double hi = s.max.load(std::memory_order_relaxed);
        while (v > hi && !s.max.compare_exchange_weak(hi, v, std::memory_order_relaxed)) {
        }
        break;
      }
      case kind::distribution: {
        atomic_add(s.value, v);
        const auto b = std::lower_bound(def_.buckets.begin(), def_.buckets.end(), v) - def_.buckets.begin();
        s.bucket_counts[static_cast<std::size_t>(b)].fetch_add(1, std::memory_order_relaxed);
        break;
      }
    }
  }

  [[nodiscard]] std::vector<series_value> read() const {
    std::vector<series_value> out;
    auto one = [&](const std::vector<std::string>& values, const series& s) {
      series_value r;
      for (std::size_t i = 0; i < values.size(); ++i) r.tags.emplace_back(def_.options.tags[i], values[i]);
      r.count = s.count.load(std::memory_order_relaxed);
      r.value = s.value.load(std::memory_order_relaxed);
      if (def_.type == kind::counter) r.value = static_cast<double>(r.count);
      if (def_.type == kind::distribution) {
        for (const auto& b : s.bucket_counts) {
          r.buckets.push_back(b.load(std::memory_order_relaxed));
          r.count += r.buckets.back();
        }
      }
      r.min = r.count ? s.min.load(std::memory_order_relaxed) : 0;
      r.max = r.count ? s.max.load(std::memory_order_relaxed) : 0;
      out.push_back(std::move(r));
    };
    if (untagged_) {
      one({}, *untagged_);
    } else {
      std::shared_lock lock{mutex_};
      for (const auto& [values, s] : tagged_) one(values, *s);
    }
    return out;
  }

 private:
  series& find(const telemetry::metadata& md) {
    std::vector<std::string> key;
    key.reserve(def_.options.tags.size());
    for (const auto& t : def_.options.tags) {
      const auto* e = md.find(t);
      key.push_back(e ? tag_text(e->value) : std::string{});
    }
    {
      std::shared_lock lock{mutex_};
      if (auto it = tagged_.find(key); it != tagged_.end()) return *it->second;
    }
    std::unique_lock lock{mutex_};
    auto& slot = tagged_[std::move(key)];
    if (!slot) slot = std::make_unique<series>(def_.buckets.size());
    return *slot;
  }

  metric def_;
  std::unique_ptr<series> untagged_;
  mutable std::shared_mutex mutex_;
  std::map<std::vector<std::string>, std::unique_ptr<series>> tagged_;
};

// Prometheus names: [a-zA-Z_:][a-zA-Z0-9_:]*; anything else becomes '_'.
inline std::string prometheus_name(std::string_view n) {
  std::string out{n};
  for (std::size_t i = 0; i < out.size(); ++i) {
    const char c = out[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) out[i] = '_';
  }
  return out;
}

inline std::string label_escape(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

inline std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

}  // namespace detail

/// Keeps the metrics it is given up to date from their events, from its
/// construction to its destruction, and renders them.
class reporter {
 public:
  /// Attaches to the metrics' events. Throws std::invalid_argument for an
  /// empty or repeated name, a missing measurement, or buckets that do not
  /// increase.
  explicit reporter(std::vector<metric> defs) : id_{fmt::format("otpp.metrics.{}", next_id())} {
    std::vector<std::string> names;
    for (auto& d : defs) {
      if (d.name.empty()) throw std::invalid_argument("otpp::metrics: a metric needs a name");
      const std::string n = detail::prometheus_name(d.name);
      if (std::find(names.begin(), names.end(), n) != names.end())
        throw std::invalid_argument(fmt::format("otpp::metrics: two metrics named {}", n));
      names.push_back(n);
      if (d.type != kind::counter && d.measurement.empty())
        throw std::invalid_argument(fmt::format("otpp::metrics: {} reads no measurement", d.name));
      if (d.type == kind::distribution &&
          (d.buckets.empty() || std::adjacent_find(d.buckets.begin(), d.buckets.end(), std::greater_equal<>{}) != d.buckets.end()))
        throw std::invalid_argument(fmt::format("otpp::metrics: {}'s buckets must be given, increasing", d.name));
      metrics_.push_back(std::make_shared<detail::live_metric>(std::move(d)));
    }
    // One handler per event, updating every metric of that event.
    std::vector<telemetry::event> events;
    for (auto& m : metrics_) {
      const auto& e = m->def().event;
      if (std::find(events.begin(), events.end(), e) == events.end()) events.push_back(e);
    }
    for (std::size_t i = 0; i < events.size(); ++i) {
      // Shared with the handler: an emitter may still run it after we detach.
      std::vector<std::shared_ptr<detail::live_metric>> mine;
      for (auto& m : metrics_)
        if (m->def().event == events[i]) mine.push_back(m);
      auto r = telemetry::attach(fmt::format("{}.{}", id_, i), events[i],
                                 [mine](const telemetry::event&, const telemetry::measurements& ms,
                                        const telemetry::metadata& md) {
                                   for (const auto& m : mine) m->record(ms, md);
                                 });
      if (!r) {
        detach_all(i);
        throw std::runtime_error(fmt::format("otpp::metrics: could not attach: {}", r.error()));
      }
    }
    events_ = events.size();
  }
  reporter(const reporter&) = delete;
  reporter& operator=(const reporter&) = delete;
  /// Detaches.
  ~reporter() { detach_all(events_); }

  /// Every series of the metric named `name` (empty if there is none).
  [[nodiscard]] std::vector<series_value> read(std::string_view name) const {
    for (const auto& m : metrics_)
      if (m->def().name == name) return m->read();
    return {};
  }

  /// The Prometheus text exposition (format 0.0.4) of every metric.
  [[nodiscard]] std::string prometheus() const {
    std::string out;
    for (const auto& m : metrics_) {
      const metric& d = m->def();
      const std::string name = detail::prometheus_name(d.name);
      static constexpr const char* types[] = {"counter", "counter", "gauge", "summary", "histogram"};
      std::string help = d.options.description;
      if (!d.options.unit.empty()) help += (help.empty() ? "" : " ") + std::string{"("} + d.options.unit + ")";
      if (!help.empty()) out += fmt::format("# HELP {} {}\n", name, help);
      out += fmt::format("# TYPE {} {}\n", name, types[static_cast<int>(d.type)]);
      for (const series_value& s : m->read()) {
        std::string labels;
        for (const auto& [k, v] : s.tags)
          labels += fmt::format("{}{}=\"{}\"", labels.empty() ? "" : ",", detail::prometheus_name(k), detail::label_escape(v));
        auto with = [&](std::string_view extra) {
          std::string l = labels;
          if (!extra.empty()) l += (l.empty() ? "" : ",") + std::string{extra};
          return l.empty() ? std::string{} : "{" + l + "}";
        };
        switch (d.type) {
          case kind::counter:
          case kind::sum:
          case kind::last_value: out += fmt::format("{}{} {}\n", name, with(""), detail::number(s.value)); break;
          case kind::summary:
            out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, with(""), detail::number(s.value), name, with(""), s.count);
            break;
          case kind::distribution: {
            std::uint64_t cumulative = 0;
            for (std::size_t i = 0; i < s.buckets.size(); ++i) {
              cumulative += s.buckets[i];
              const std::string le = i < d.buckets.size() ? detail::number(d.buckets[i]) : "+Inf";
              out += fmt::format("{}_bucket{} {}\n", name, with(fmt::format("le=\"{}\"", le)), cumulative);
            }
            out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, with(""), detail::number(s.value), name, with(""), s.count);
            break;
          }
        }
      }
    }
    return out;
  }

 private:
  static std::uint64_t next_id() {
    static std::atomic<std::uint64_t> n{0};
    return n.fetch_add(1, std::memory_order_relaxed);
  }
  void detach_all(std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) (void)telemetry::detach(fmt::format("{}.{}", id_, i));
  }

  std::string id_;
  std::vector<std::shared_ptr<detail::live_metric>> metrics_;
  std::size_t events_ = 0;
};

/// The runtime's own metrics in the same text format: otpp_processes,
/// otpp_threads and otpp_timers (gauges); per scheduler,
/// otpp_messages_total and otpp_scheduler_idle_seconds_total (counters:
/// rate() of the first is messages per second, 1 - rate() of the second the
/// utilisation) and otpp_run_queue_length (a gauge, plus the shared queue as
/// scheduler="shared"). Restarts and dropped messages are events: count them
/// with counter() over supervisor_events::child_restarting and
/// mailbox_events::dropped.
[[nodiscard]] inline std::string runtime_prometheus(const runtime& rt) {
  std::string out;
  out += fmt::format("# HELP otpp_processes Live processes.\n# TYPE otpp_processes gauge\notpp_processes {}\n",
                     rt.process_count());
  out += fmt::format("# HELP otpp_threads Threads started by the runtime.\n# TYPE otpp_threads gauge\notpp_threads {}\n",
                     rt.thread_count());
  out += fmt::format("# HELP otpp_timers Timers waiting to fire.\n# TYPE otpp_timers gauge\notpp_timers {}\n",
                     rt.timer_count());
  const auto ss = rt.schedulers();
  out += "# HELP otpp_messages_total Messages taken by processes, per scheduler.\n# TYPE otpp_messages_total counter\n";
  for (std::size_t i = 0; i < ss.size(); ++i) out += fmt::format("otpp_messages_total{{scheduler=\"{}\"}} {}\n", i, ss[i].messages);
  out += "# HELP otpp_scheduler_idle_seconds_total Time a scheduler had nothing to run.\n"
         "# TYPE otpp_scheduler_idle_seconds_total counter\n";
  for (std::size_t i = 0; i < ss.size(); ++i)
    out += fmt::format("otpp_scheduler_idle_seconds_total{{scheduler=\"{}\"}} {}\n", i,
                       detail::number(std::chrono::duration<double>(ss[i].idle).count()));
  out += "# HELP otpp_run_queue_length Processes waiting to run.\n# TYPE otpp_run_queue_length gauge\n";
  for (std::size_t i = 0; i < ss.size(); ++i) out += fmt::format("otpp_run_queue_length{{scheduler=\"{}\"}} {}\n", i, ss[i].run_queue);
  out += fmt::format("otpp_run_queue_length{{scheduler=\"shared\"}} {}\n", rt.shared_run_queue());
  return out;
}

}  // namespace otpp::metrics
