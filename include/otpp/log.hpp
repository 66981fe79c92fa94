#pragma once
// The logger that crash reports and dropped-message warnings go to.
//
// Default: one line per event on stderr. Replace it with set_logger (for
// example, to route into spdlog or to capture in tests); pass an empty
// handler to restore the default. The handler may be called from any worker
// thread, concurrently; it must not throw (a throw is swallowed).
//
//   otpp::set_logger([](otpp::log_level lvl, std::string_view line) { my_log(lvl, line); });
//
// set_log_level(l) drops lines below `l` before they are formatted (Erlang's
// logger level); log_level::none drops them all.

#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string_view>
#include <utility>

#include <fmt/core.h>

#include "detail/config.hpp"

namespace otpp {

enum class log_level { debug, info, warning, error, none };

using log_handler = std::function<void(log_level, std::string_view)>;

namespace detail {
struct logger_state {
  std::atomic<int> level{0};
  std::mutex mutex;
  std::shared_ptr<const log_handler> handler;
  // Never destroyed, as processes may log during static destruction; and
  // in static storage, not on the heap: the first log line may be the
  // report of a process that ran out of memory.
  static logger_state& instance() noexcept {
    alignas(logger_state) static unsigned char storage[sizeof(logger_state)];
    static logger_state* s = ::new (static_cast<void*>(storage)) logger_state;
    return *s;
  }
};
}  // namespace detail

/// Routes log lines to `handler` (an empty one restores stderr).
void set_logger(log_handler handler);

/// The lowest level that is logged (debug by default).
inline void set_log_level(log_level lowest) noexcept {
  detail::logger_state::instance().level.store(static_cast<int>(lowest), std::memory_order_relaxed);
}

[[nodiscard]] inline bool log_enabled(log_level level) noexcept {
  return level != log_level::none &&
         static_cast<int>(level) >= detail::logger_state::instance().level.load(std::memory_order_relaxed);
}

/// Logs one line as it is, if `level` is enabled.
void log_line(log_level level, std::string_view line) noexcept;

template <class... Args>
void log(log_level level, fmt::format_string<Args...> f, Args&&... args) noexcept {
  if (!log_enabled(level)) return;
  try {
    log_line(level, fmt::format(f, std::forward<Args>(args)...));
  } catch (...) {
  }
}

namespace detail {
// The library's own log lines: formatted at run time, so the many call sites
// in headers do not each instantiate fmt's compile-time format checking.
template <class... Args>
void log_rt(log_level level, std::string_view f, const Args&... args) noexcept {
  if (!log_enabled(level)) return;
  try {
    log_line(level, fmt::vformat(f, fmt::make_format_args(args...)));
  } catch (...) {
  }
}
}  // namespace detail

}  // namespace otpp

#if OTPP_HEADER_ONLY
#include "detail/log-inl.hpp"
#endif
