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
// the caller is running this code and the child is not published yet. The
// parent's link set takes a reference the child was born with (start_in).
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
  parent->add_refs(2);  // the child's link set's and cc.parent's
  cc.parent = parent;
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
    if (out.kind == init_result::kind::stop && !parent->traps_exits() && !out.reason.is_normal())
      parent->request_exit(out.reason, false);
  }
  return out.reason;
}

// init nested in init runs on one stack: past this depth, start fails
// cleanly instead of overflowing it.
inline constexpr unsigned max_start_depth = 1000;

/// init run on a worker, as the process's first turn (the start_timeout
/// option): the starter waits for this node's answer with a deadline.
struct init_node final : message_node {
  init_node(reply_slot<init_outcome>* s, process_base* parent_process, init_fn f)
      : slot{s}, parent{parent_process}, init{f} {
    fn = &handle;
  }
  reply_slot<init_outcome>* slot;
  process_base* parent;  // no reference: the link holds one
  init_fn init;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason* why) noexcept {
    auto* self = static_cast<init_node*>(n);
    if (op == msg_op::invoke) {
      self->slot->set_value(self->init(&p, self->parent));
    } else {
      self->slot->fail(*why);  // killed before init ran (the starter gave up)
    }
    self->slot->release();
    free_node(self);
  }
};

OTPP_FUNC void discard_unstarted(process_base* p) noexcept {
  p->request_exit(exit_reason::normal(), false);
  p->finish_exit();
}

// start with a start_timeout: init runs as the process's first turn.
OTPP_FUNC bool start_async(process_base* p, process_base* parent, init_fn init, steady::duration timeout,
                           exit_reason& failure) {
  auto* slot = reply_slot<init_outcome>::make();
  try {
    p->set_continuation(make_node<init_node>(slot, parent, init));
  } catch (...) {
    slot->release();
    slot->release();
    if (parent != nullptr) unlink_parent(parent, p);
    p->request_exit(exit_reason::out_of_memory(), false);
    failure = p->finish_exit();
    return false;
  }
  p->publish_started();
  const std::uint32_t st = await_reply(slot, deadline_after(timeout), p);
  if (st == reply_slot_base::ready) {
    init_outcome out = slot->take();
    slot->release();
    if (out.kind == init_result::kind::ok) return true;
    failure = init_failed(parent, p, out);
    return false;
  }
  failure = st == reply_slot_base::failed ? slot->error() : exit_reason::timeout();
  slot->release();
  if (parent != nullptr) unlink_parent_side(parent, p);
  // Too slow: killed (its name is released as it dies; init still runs to its end).
  if (st != reply_slot_base::failed) {
    process_base* const from = tls().current;
    p->enqueue_signal(make_owed_node<exit_signal_node>("kill", from != nullptr ? from->id() : 0, p->id(), from,
                                                       exit_reason::kill(), false));
  }
  return false;
}

OTPP_FUNC bool settle_start(process_base* p, process_base* parent, steady::duration start_timeout, init_fn init,
                            exit_reason& failure) {
  if (parent != nullptr) {
    try {
      link_parent(parent, p);
    } catch (...) {
      p->release_refs(1);  // the link's, never handed out
      discard_unstarted(p);   // out of memory: the starter gets bad_alloc and nothing is left behind
      throw;
    }
  }
  if (start_timeout != steady::duration::max()) return start_async(p, parent, init, start_timeout, failure);
  if (tls().start_depth >= max_start_depth) {
    // Refused before init runs: a start nested this deep would overflow the stack.
    if (parent != nullptr) unlink_parent(parent, p);
    discard_unstarted(p);
    failure = exit_reason::error(fmt::format("start nested too deep: {} levels of start inside init", max_start_depth));
    return false;
  }
  {
    current_scope scope{p};
    ++tls().start_depth;
    const init_outcome out = init(p, parent);
    --tls().start_depth;  // init may have blocked and resumed on another thread
    if (out.kind != init_result::kind::ok) {
      p->finish_exit();
      failure = init_failed(parent, p, out);
      return false;
    }
  }
  p->publish_started();
  return true;
}

OTPP_FUNC exit_reason exit_after_inline_call(process_base* p) noexcept {
  p->add_ref();  // keep the memory while we read the outcome
  exit_reason final = p->finish_exit();
  p->release();
  return final;
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
