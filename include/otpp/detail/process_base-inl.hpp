#pragma once
// process_base's out-of-line code that needs nothing above it: exit
// requests, crashes, deferred replies (the parts that need the runtime are in
// runtime_core-inl.hpp).

#include <algorithm>

#include "../log.hpp"
#include "process_base.hpp"

namespace otpp::detail {

// An exit is never lost for want of memory: where no cold part can be had
// to keep its reason, a flag in local_ stands for it (killed or
// out_of_memory; see finish_exit).
OTPP_FUNC void process_base::request_exit(exit_reason r, bool with_terminate) noexcept {
  if (local_ & exit_pending) return;  // first request wins
  std::uint32_t bare = 0;
  try {
    cold().exit = std::move(r);
  } catch (...) {
    bare = exit_oom_bare;
  }
  local_ |= exit_pending | bare | (with_terminate ? call_terminate : 0);
}

OTPP_FUNC void process_base::request_kill() noexcept {
  try {
    cold().exit = exit_reason::killed();
    local_ &= ~exit_oom_bare;
  } catch (...) {
    local_ |= exit_killed_bare;
  }
  local_ = (local_ | exit_pending) & ~call_terminate;
}

OTPP_FUNC void process_base::crash(std::exception_ptr e, std::string_view msg_type, std::string_view kind) noexcept {
  try {
    auto& c = cold();
    c.crash_message = msg_type;
    c.crash_kind = kind;
    local_ &= ~(exit_pending | exit_oom_bare);  // a crash overrides a stop asked for in the same callback
    request_exit(exit_reason::of_exception(std::move(e)), true);
  } catch (...) {
    // No memory to describe the crash: it ends the process all the same,
    // with out_of_memory rather than a reason asked for before it.
    local_ = (local_ & ~exit_pending) | exit_oom_bare;
    request_exit(exit_reason::out_of_memory(), true);
  }
}

OTPP_FUNC void process_base::call_crashed(std::exception_ptr e, std::string_view req_type,
                                         reply_slot_base* slot) noexcept {
  crash(std::move(e), req_type, "call");
  try {
    track_deferred(slot);  // failed with the final reason at exit
  } catch (...) {
    slot->fail(exit_reason::out_of_memory());
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
