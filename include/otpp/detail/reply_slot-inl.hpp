#pragma once
// reply_slot's out-of-line code: failing a call (the callee died, or the
// request was discarded), which no reply's fast path needs.

#include "config.hpp"
#include "reply_slot.hpp"

namespace otpp::detail {

OTPP_FUNC bool reply_slot_base::fail(const exit_reason& why) noexcept {
  std::uint32_t prev;
  if (!claim(prev)) return false;
  try {
    error_ = why;
  } catch (...) {
  }
  publish(failed, prev);
  return true;
}

}  // namespace otpp::detail
