#pragma once
// task.hpp's out-of-line code: naming a failed await.

#include <fmt/core.h>

#include "../task.hpp"
#include "config.hpp"

namespace otpp::detail {

OTPP_FUNC void throw_task_error(const exit_reason& reason, const pid& task, std::string_view operation,
                                steady::duration timeout) {
  throw exit_error{reason, fmt::format("{}(task {}, {})", operation, task, describe_timeout(timeout))};
}

}  // namespace otpp::detail
