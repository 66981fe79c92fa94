#pragma once
// Telemetry: named events with measurements and metadata, dispatched to the
// handlers attached to them (Erlang's :telemetry).
//
//   inline const otpp::telemetry::event cache_fetch{"search_cache", "fetch"};
//
//   otpp::telemetry::execute(cache_fetch, {{"count", 1}}, {{"hit", true}, {"key", key}});
//
//   namespace tel = otpp::telemetry;
//   tel::attach("stats", cache_fetch, [](const tel::event&, const tel::measurements&, const tel::metadata& md) {
//     if (md.get<bool>("hit").value_or(false)) ++hits;
//   });
//
// An event is a handle to its interned name, made once (a namespace-scope
// constant, or a static): executing one that has no handler costs one
// relaxed load and allocates nothing, whatever the arguments, because
// measurements and metadata are views of the caller's initializer lists.
// The arguments themselves are still evaluated: guard one that is costly to
// compute (a string built for the occasion) with `if (event.active())`.
// Handlers run on the emitting thread, synchronously, in attach order; they
// must copy what they keep (string values are views). A handler that throws
// is detached and logged; the emitter never sees the exception.
//
// span(events, metadata, fn) wraps fn in start/stop/exception events with
// its duration in nanoseconds, like :telemetry.span.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/core.h>

#include "exit_reason.hpp"
#include "log.hpp"
#include "detail/platform.hpp"
#include "pid.hpp"

namespace otpp::telemetry {

/// A metadata value, viewed for the length of the handler call.
class value {
 public:
  /// What a value can hold (monostate: nothing).
  using variant = std::variant<std::monostate, bool, std::int64_t, double, std::string_view, pid>;

  /// Holds nothing.
  value() = default;
  /// @{
  /// Converts like a literal: a bool, any integer, any floating point, a
  /// string (viewed, not copied: it must outlive the handler call) or a pid.
  value(bool b) noexcept : v_{b} {}  // NOLINT: values convert like literals
  template <class I>
    requires(std::is_integral_v<I> && !std::is_same_v<I, bool>)
  value(I i) noexcept : v_{static_cast<std::int64_t>(i)} {}  // NOLINT
  template <class F>
    requires std::is_floating_point_v<F>
  value(F f) noexcept : v_{static_cast<double>(f)} {}  // NOLINT
  value(std::string_view s) noexcept : v_{s} {}        // NOLINT
  value(const char* s) noexcept : v_{std::string_view{s}} {}  // NOLINT
  value(const std::string& s) noexcept : v_{std::string_view{s}} {}  // NOLINT
  value(const pid& p) noexcept : v_{p} {}              // NOLINT
  /// @}
  /// A server handle is its pid.
  template <class S>
    requires requires(const S& s) {
      { s.pid() } -> std::convertible_to<pid>;
    }
  value(const S& s) noexcept : v_{s.pid()} {}  // NOLINT

  /// The value if it holds a T (any integer type reads an integer).
  template <class T>
  [[nodiscard]] std::optional<T> as() const {
    if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, double> || std::is_same_v<T, pid>) {
      if (auto* x = std::get_if<T>(&v_)) return *x;
    } else if constexpr (std::is_integral_v<T>) {
      if (auto* x = std::get_if<std::int64_t>(&v_)) return static_cast<T>(*x);
    } else if constexpr (std::is_same_v<T, std::string_view> || std::is_same_v<T, std::string>) {
      if (auto* x = std::get_if<std::string_view>(&v_)) return T{*x};
    } else {
      static_assert(sizeof(T) == 0, "telemetry values are bool, integers, double, strings or pids");
    }
    return std::nullopt;
  }
  /// The held value, for std::visit.
  [[nodiscard]] const variant& get() const noexcept { return v_; }

 private:
  variant v_;
};

/// One numeric measurement of an event: {"duration", 1.5}.
struct measurement {
  /// Any arithmetic value, kept as a double.
  template <class N>
    requires std::is_arithmetic_v<N>
  measurement(std::string_view k, N v) noexcept : key{k}, value{static_cast<double>(v)} {}
  std::string_view key;  ///< The measurement's name.
  double value;          ///< Its value.
};

/// One metadata entry of an event: {"hit", true}.
struct metadata_entry {
  std::string_view key;    ///< The entry's name.
  telemetry::value value;  ///< Its value.
};

/// A read-only view of an event's entries, handed to handlers for the
/// length of the call.
template <class Entry>
class entries {
 public:
  /// The entries in [b, e).
  entries(const Entry* b, const Entry* e) noexcept : begin_{b}, end_{e} {}
  /// The first entry.
  [[nodiscard]] const Entry* begin() const noexcept { return begin_; }
  /// Past the last entry.
  [[nodiscard]] const Entry* end() const noexcept { return end_; }
  /// How many entries there are.
  [[nodiscard]] std::size_t size() const noexcept { return static_cast<std::size_t>(end_ - begin_); }
  /// The first entry named `key`, or nullptr.
  [[nodiscard]] const Entry* find(std::string_view key) const noexcept {
    for (const Entry* e = begin_; e != end_; ++e)
      if (e->key == key) return e;
    return nullptr;
  }

 private:
  const Entry* begin_;
  const Entry* end_;
};

/// The measurements of an event, as a handler sees them.
class measurements : public entries<measurement> {
 public:
  using entries::entries;
  /// The measurement, or nothing.
  [[nodiscard]] std::optional<double> get(std::string_view key) const noexcept {
    if (auto* e = find(key)) return e->value;
    return std::nullopt;
  }
};

/// The metadata of an event, as a handler sees it.
class metadata : public entries<metadata_entry> {
 public:
  using entries::entries;
  /// The value under `key` if it holds a T.
  template <class T>
  [[nodiscard]] std::optional<T> get(std::string_view key) const {
    if (auto* e = find(key)) return e->value.template as<T>();
    return std::nullopt;
  }
};

class event;

/// One attachment, as list_handlers reports it.
struct handler_info {
  std::string id;                  ///< The id given to attach.
  std::vector<std::string> event;  ///< The event's name, part by part.
};

using handler = std::function<void(const event&, const measurements&, const metadata&)>;

namespace detail {

struct attached {
  std::string id;
  std::shared_ptr<const handler> fn;
};
using handler_list = std::vector<attached>;

struct event_entry {
  std::vector<std::string> name;
  std::atomic<std::size_t> count{0};  // handlers attached: the fast path's one load
  // Replaced whole on attach/detach; an emitter copies the pointer under the
  // lock and runs the handlers outside it. (std::atomic<std::shared_ptr> in
  // libstdc++ 12 guards its pointer with a lock bit ThreadSanitizer cannot see.)
  mutable otpp::detail::spin_lock lock;
  std::shared_ptr<const handler_list> handlers;

  [[nodiscard]] std::shared_ptr<const handler_list> load() const {
    std::lock_guard guard{lock};
    return handlers;
  }
  void store(std::shared_ptr<const handler_list> next) {
    std::lock_guard guard{lock};
    handlers.swap(next);  // the old list is released outside the lock
  }
};

// Interned names and attachments; leaked on purpose (events may be emitted
// during static destruction).
class registry {
 public:
  static registry& instance() {
    static registry* r = new registry;
    return *r;
  }

  event_entry* intern(std::vector<std::string> name) {
    std::lock_guard lock{mutex_};
    for (auto& e : entries_)
      if (e->name == name) return e.get();
    entries_.push_back(std::make_unique<event_entry>());
    entries_.back()->name = std::move(name);
    return entries_.back().get();
  }

  result<void> attach(const std::string& id, const std::vector<event_entry*>& events, handler fn) {
    if (!fn) return exit_reason::error("telemetry: empty handler");
    std::lock_guard lock{mutex_};
    if (ids_.contains(id)) return exit_reason::error("already_exists");
    auto shared = std::make_shared<const handler>(std::move(fn));
    for (event_entry* e : events) {
      auto now = e->load();
      auto next = now ? std::make_shared<handler_list>(*now) : std::make_shared<handler_list>();
      next->push_back(attached{id, shared});
      e->store(std::move(next));
      e->count.fetch_add(1, std::memory_order_release);
    }
    ids_.emplace(id, events);
    return {};
  }

  bool detach(std::string_view id) {
    std::lock_guard lock{mutex_};
    auto it = ids_.find(std::string{id});
    if (it == ids_.end()) return false;
    for (event_entry* e : it->second) {
      auto now = e->load();
      if (!now) continue;
      auto next = std::make_shared<handler_list>();
      for (auto& a : *now)
        if (a.id != id) next->push_back(a);
      e->count.fetch_sub(now->size() - next->size(), std::memory_order_release);
      e->store(std::move(next));
    }
    ids_.erase(it);
    return true;
  }

  std::vector<handler_info> list(const std::vector<std::string>& prefix) {
    std::lock_guard lock{mutex_};
    std::vector<handler_info> out;
    for (auto& e : entries_) {
      if (e->name.size() < prefix.size() || !std::equal(prefix.begin(), prefix.end(), e->name.begin())) continue;
      if (auto hs = e->load())
        for (auto& a : *hs) out.push_back({a.id, e->name});
    }
    return out;
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<event_entry>> entries_;
  std::unordered_map<std::string, std::vector<event_entry*>> ids_;
};

struct event_access;

inline std::string describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace detail

/// An event name, interned once: ["search_cache", "fetch"]. Cheap to copy.
class event {
 public:
  /// The event named by these parts: {"search_cache", "fetch"}.
  event(std::initializer_list<std::string_view> name)
      : entry_{detail::registry::instance().intern(std::vector<std::string>(name.begin(), name.end()))} {}
  /// The event named by these parts.
  explicit event(std::vector<std::string> name) : entry_{detail::registry::instance().intern(std::move(name))} {}

  /// The name, part by part.
  [[nodiscard]] const std::vector<std::string>& name() const noexcept { return entry_->name; }
  /// Whether any handler is attached: one relaxed load.
  [[nodiscard]] bool active() const noexcept { return entry_->count.load(std::memory_order_relaxed) != 0; }
  /// `name` with `last` appended (for the events of a span).
  [[nodiscard]] event operator/(std::string_view last) const {
    auto n = entry_->name;
    n.emplace_back(last);
    return event{std::move(n)};
  }

  friend bool operator==(const event& a, const event& b) noexcept { return a.entry_ == b.entry_; }

 private:
  friend struct detail::event_access;
  detail::event_entry* entry_;
};

namespace detail {
struct event_access {
  static event_entry* entry(const event& e) noexcept { return e.entry_; }
};
}  // namespace detail

/// Attaches one handler to several events under one id, unique across all
/// events; error("already_exists") if the id is taken.
inline result<void> attach_many(const std::string& id, std::initializer_list<event> events, handler fn) {
  std::vector<detail::event_entry*> entries;
  for (const event& e : events) entries.push_back(detail::event_access::entry(e));
  return detail::registry::instance().attach(id, entries, std::move(fn));
}

/// Attaches `fn` to `e`; see attach_many.
inline result<void> attach(const std::string& id, const event& e, handler fn) {
  return attach_many(id, {e}, std::move(fn));
}

/// Detaches the handler `id` from every event; error("not_found") if no
/// handler has that id.
inline result<void> detach(std::string_view id) {
  if (!detail::registry::instance().detach(id)) return exit_reason::error("not_found");
  return {};
}

/// Handlers attached to events whose names start with `prefix`.
[[nodiscard]] inline std::vector<handler_info> list_handlers(std::vector<std::string> prefix = {}) {
  return detail::registry::instance().list(prefix);
}

/// Runs the handlers of `e`; a handler that throws is detached and logged.
inline void dispatch(const event& e, const measurements& m, const metadata& md) {
  auto hs = detail::event_access::entry(e)->load();
  if (!hs) return;
  for (const auto& a : *hs) {
    try {
      (*a.fn)(e, m, md);
    } catch (...) {
      const std::string why = detail::describe_current_exception();
      (void)detach(a.id);
      std::string name;
      for (const auto& part : e.name()) name += (name.empty() ? "" : ".") + part;
      otpp::detail::log_rt(log_level::error, "otpp: telemetry handler {} failed on {} and was detached: {}", a.id, name,
                           why);
    }
  }
}

/// Emits `e`. Free when nothing is attached to it: one relaxed load.
inline void execute(const event& e, std::initializer_list<measurement> m, std::initializer_list<metadata_entry> md = {}) {
  if (!e.active()) [[likely]]
    return;
  dispatch(e, measurements{m.begin(), m.end()}, metadata{md.begin(), md.end()});
}

/// The three events of a span: prefix/start, prefix/stop, prefix/exception.
class span_events {
 public:
  /// The events under `prefix`.
  span_events(std::initializer_list<std::string_view> prefix)
      : start_{event{prefix} / "start"}, stop_{event{prefix} / "stop"}, exception_{event{prefix} / "exception"} {}
  /// prefix/start: emitted when the span begins.
  [[nodiscard]] const event& start() const noexcept { return start_; }
  /// prefix/stop: emitted when it ends normally, with its duration.
  [[nodiscard]] const event& stop() const noexcept { return stop_; }
  /// prefix/exception: emitted when it ends by an exception.
  [[nodiscard]] const event& exception() const noexcept { return exception_; }

 private:
  event start_, stop_, exception_;
};

/// Runs fn() between prefix/start (monotonic_time, system_time) and
/// prefix/stop (duration, monotonic_time; ns), both with `md`; if fn throws,
/// prefix/exception (duration, monotonic_time) with `md` plus kind
/// "exception" and reason, then rethrows. Returns what fn returns.
template <class F>
decltype(auto) span(const span_events& s, std::initializer_list<metadata_entry> md, F&& fn) {
  using clock = std::chrono::steady_clock;
  if (!s.start().active() && !s.stop().active() && !s.exception().active()) return std::forward<F>(fn)();
  const auto t0 = clock::now();
  if (s.start().active()) {
    const auto sys = std::chrono::system_clock::now().time_since_epoch();
    execute(s.start(), {{"monotonic_time", t0.time_since_epoch().count()},
                        {"system_time", std::chrono::nanoseconds(sys).count()}},
            md);
  }
  auto finish = [&](const event& e, std::vector<metadata_entry> with) {
    const auto t1 = clock::now();
    const measurement ms[] = {{"duration", std::chrono::nanoseconds(t1 - t0).count()},
                              {"monotonic_time", t1.time_since_epoch().count()}};
    dispatch(e, measurements{std::begin(ms), std::end(ms)}, metadata{with.data(), with.data() + with.size()});
  };
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<F>>) {
      std::forward<F>(fn)();
      if (s.stop().active()) finish(s.stop(), std::vector<metadata_entry>(md));
      return;
    } else {
      decltype(auto) r = std::forward<F>(fn)();
      if (s.stop().active()) finish(s.stop(), std::vector<metadata_entry>(md));
      return static_cast<decltype(r)>(r);
    }
  } catch (...) {
    if (s.exception().active()) {
      const std::string why = detail::describe_current_exception();
      std::vector<metadata_entry> with(md);
      with.push_back({"kind", "exception"});
      with.push_back({"reason", std::string_view{why}});
      finish(s.exception(), std::move(with));
    }
    throw;
  }
}

}  // namespace otpp::telemetry
