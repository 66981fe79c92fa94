#pragma once
// async_call.hpp's out-of-line code: the checks and timers behind a wait.

#include <stdexcept>

#include <fmt/core.h>

#include "../async_call.hpp"
#include "config.hpp"

namespace otpp::detail {

OTPP_FUNC process_base& awaiting_process(const char* operation) {
  process_base* p = tls().current;
  if (p == nullptr) {
    throw std::logic_error(fmt::format(
        "{}: co_await outside a process; a coroutine that waits must be a handler's (or awaited by one). "
        "On a plain thread, use the call's get()",
        operation));
  }
  return *p;
}

OTPP_FUNC void throw_async_call_error(const exit_reason& reason, std::uint64_t target, std::string_view server_type,
                                      std::string_view request_type, steady::duration timeout) {
  // A remote call (otpp::node) has no local pid: its server_type names it.
  if (target == 0)
    throw exit_error{reason, fmt::format("otpp::async_call({}, {}, {})", server_type, request_type, describe_timeout(timeout))};
  throw exit_error{reason, fmt::format("otpp::async_call({} {}, {}, {})", pid_text{target}.view(), server_type,
                                       request_type, describe_timeout(timeout))};
}

}  // namespace otpp::detail
