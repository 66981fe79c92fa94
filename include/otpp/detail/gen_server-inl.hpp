#pragma once
// gen_server.hpp's out-of-line code: start_link's links and otpp::stop.

#include <fmt/core.h>

#include "../gen_server.hpp"
#include "config.hpp"

namespace otpp {
namespace detail {

OTPP_FUNC void process_base::hold_reply(message_node* n) { cold().held_replies.push_back(n); }

// start_link: link the new process with the calling one before init runs,
// both ways, and remember the caller as its parent. Owner-only on both sides:
// the caller is running this code and the child is not published yet.
OTPP_FUNC void link_parent(process_base* parent, process_base* child) {
  auto& pc = parent->cold_state();
  auto& cc = child->cold_state();
  // Inserted first, references taken after: a bad_alloc leaves nothing half-done.
  cc.links.insert(parent);
  try {
    pc.links.insert(child);
  } catch (...) {
    cc.links.erase(parent);
    throw;
  }
  parent->add_ref();
  parent->add_ref();
  cc.parent = parent;
  child->add_ref();
}

// A failed start_link leaves no exit signal behind (OTP 26+): the link is
// undone before the child exits; a caller that does not trap exits is then
// killed by hand when init stopped or crashed (not for ignore/error). Each
// side is undone by its owner.
OTPP_FUNC void unlink_parent_side(process_base* parent, process_base* child) noexcept {
  if (process_cold* pc = parent->cold_if_any()) remove_link(*pc, child);
}
OTPP_FUNC void unlink_child_side(process_base* parent, process_base* child) noexcept {
  process_cold& cc = *child->cold_if_any();
  remove_link(cc, parent);
  if (cc.parent) {
    cc.parent->release();
    cc.parent = nullptr;
  }
}
OTPP_FUNC void unlink_parent(process_base* parent, process_base* child) noexcept {
  unlink_parent_side(parent, child);
  unlink_child_side(parent, child);
}

// The starter's side of a failed init: OTP kills a linked caller that does
// not trap exits when init stopped or crashed.
OTPP_FUNC exit_reason init_failed(process_base* parent, process_base* child, const init_outcome& out) noexcept {
  if (parent != nullptr) {
    unlink_parent_side(parent, child);
    if (out.kind == init_result::kind::stop && !parent->traps_exits() && !out.reason.is_normal()) {
      try {
        parent->request_exit(out.reason, false);
      } catch (...) {
      }
    }
  }
  return out.reason;
}

OTPP_FUNC void throw_call_error(const exit_reason& reason, const pid& target, std::string_view server_type,
                                std::string_view request_type, steady::duration timeout) {
  throw exit_error{reason, fmt::format("otpp::call({} {}, {}, {})", target, server_type, request_type,
                                       describe_timeout(timeout))};
}

}  // namespace detail

OTPP_FUNC void stop(const pid& p, exit_reason reason, std::chrono::steady_clock::duration timeout) {
  auto r = try_stop(p, reason, timeout);
  if (!r) [[unlikely]] {
    throw exit_error{r.error(), fmt::format("otpp::stop({}, {}, {})", p, reason, detail::describe_timeout(timeout))};
  }
}

}  // namespace otpp
