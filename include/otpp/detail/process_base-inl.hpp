#pragma once
// process_base's out-of-line code that needs nothing above it: exit
// requests, crashes, deferred replies (the parts that need the runtime are in
// runtime_core-inl.hpp).

#include <algorithm>

#include "../log.hpp"
#include "process_base.hpp"

namespace otpp::detail {

OTPP_FUNC void process_base::request_exit(exit_reason r, bool with_terminate) {
  auto& c = cold();
  if (local_ & exit_pending) return;  // first request wins
  c.exit = std::move(r);
  local_ |= exit_pending | (with_terminate ? call_terminate : 0);
}

OTPP_FUNC void process_base::request_kill() noexcept {
  try {
    cold().exit = exit_reason::killed();
  } catch (...) {
    return;  // no cold state to be had: the exit requested before stands
  }
  local_ = (local_ | exit_pending) & ~call_terminate;
}

OTPP_FUNC void process_base::crash(std::exception_ptr e, std::string_view msg_type, std::string_view kind) noexcept {
  try {
    auto& c = cold();
    c.crash_message = msg_type;
    c.crash_kind = kind;
    local_ &= ~exit_pending;  // a crash overrides a stop asked for in the same callback
    request_exit(exit_reason::of_exception(std::move(e)), true);
  } catch (...) {
    local_ |= exit_pending | call_terminate;
  }
}

OTPP_FUNC void process_base::call_crashed(std::exception_ptr e, std::string_view req_type,
                                         reply_slot_base* slot) noexcept {
  crash(std::move(e), req_type, "call");
  try {
    track_deferred(slot);  // failed with the final reason at exit
  } catch (...) {
    slot->fail(exit_reason::error("out of memory"));
  }
}

OTPP_FUNC void process_base::log_dropped(std::string_view message_type) const noexcept {
  detail::log_rt(log_level::warning, "otpp: process {} ({}) dropped an unexpected message of type {}", pid_text{id()}.view(),
                 type_name(), message_type);
}

OTPP_FUNC void process_base::set_continuation(message_node* n) {
  auto& c = cold();
  if (c.continuation) c.continuation->fn(*this, c.continuation, msg_op::discard, nullptr);
  c.continuation = n;
  local_ |= has_continue;
}

OTPP_FUNC void process_base::track_deferred(reply_slot_base* s) {
  adopt_deferred(s);  // may throw: before the reference is taken
  s->add_ref();
}

OTPP_FUNC void process_base::adopt_deferred(reply_slot_base* s) {
  auto& c = cold();
  if (c.deferred.size() >= c.deferred_prune_at) {
    c.deferred.prune([](reply_slot_base* d) {
      if (d->open()) return false;
      d->release();
      return true;
    });
    c.deferred_prune_at = c.deferred.size() * 2 + 16;
  }
  c.deferred.push(s);
}

}  // namespace otpp::detail
