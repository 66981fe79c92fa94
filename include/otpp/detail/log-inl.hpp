#pragma once
// log.hpp's out-of-line code.

#include <cstdio>

#include "../log.hpp"
#include "config.hpp"

namespace otpp {

OTPP_FUNC void set_logger(log_handler handler) {
  auto& s = detail::logger_state::instance();
  std::shared_ptr<const log_handler> h;
  if (handler) h = std::make_shared<const log_handler>(std::move(handler));
  std::lock_guard lock{s.mutex};
  s.handler = std::move(h);
}

OTPP_FUNC void log_line(log_level level, std::string_view line) noexcept {
  if (!log_enabled(level)) return;
  auto& s = detail::logger_state::instance();
  std::shared_ptr<const log_handler> h;
  {
    std::lock_guard lock{s.mutex};
    h = s.handler;
  }
  if (h) {
    try {
      (*h)(level, line);
    } catch (...) {
    }
    return;
  }
  static constexpr const char* names[] = {"debug", "info", "warning", "error", "none"};
  std::fprintf(stderr, "[otpp %s] %.*s\n", names[static_cast<int>(level)], static_cast<int>(line.size()), line.data());
}

}  // namespace otpp
