#pragma once
// Processes as values: untyped sends, the current process, links, monitors
// and exit signals (the values themselves, pid and down, are in pid.hpp).
//
// Links, monitors and exit signals follow Erlang (the table in
// docs/semantics.md §3): a process that dies sends its reason to every
// linked process; one that does not trap exits dies with it (unless it is
// `normal`), one that traps receives handle_info(const otpp::exit_signal&);
// `kill` sent with otpp::exit cannot be trapped and makes the target die with
// `killed`. Signals are handled before the target's next queued message, but
// a running handler is never interrupted: C++ cannot stop a thread, so a
// process stuck in a handler dies when that handler returns.
// Differences from Erlang: a plain thread (main, a test) is not a process; it
// cannot be linked or killed, and it watches a process with await_exit
// instead of monitor.
//
//   otpp::send(some_pid, tick{});   // delivered to handle_info, see gen_server.hpp

#include <algorithm>
#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
#include <string_view>
#include <utility>

#include <fmt/core.h>

#include "detail/links.hpp"
#include "detail/process_base.hpp"
#include "detail/runtime_core.hpp"
#include "log.hpp"
#include "pid.hpp"

namespace otpp {
namespace detail {
struct handle_access;

/// An untyped message: matched at run time against the receiver's declared
/// info types (see gen_server.hpp), so it records its type's identity.
struct untyped_node_base : message_node {
  const void* type = nullptr;
  std::string_view name;
  void* value = nullptr;
};

template <class T>
struct untyped_node final : untyped_node_base {
  template <class U>
  explicit untyped_node(U&& v) : payload{std::forward<U>(v)} {
    fn = &handle;
    type = type_id<T>;
    name = type_name<T>();
    value = &payload;
  }
  T payload;

  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<untyped_node*>(n);
    if (op == msg_op::invoke && !p.evict_taken(false)) p.dispatch_untyped(self);  // else overflow::drop_oldest
    free_node(self);
  }
};
}  // namespace detail

namespace detail {
/// Puts `msg` in the mailbox of `to` as a Node; dropped if `to` is empty.
template <class Node, class Msg>
void post(const pid& to, Msg&& msg) {
  process_base* p = pid_access::get(to);
  if (p == nullptr) return;
  (void)p->offer(make_node<Node>(std::forward<Msg>(msg)), false);
}
/// As post, reporting the outcome: ok, mailbox_full or noproc.
template <class Node, class Msg>
result<void> try_post(const pid& to, Msg&& msg) {
  process_base* p = pid_access::get(to);
  if (p == nullptr) return exit_reason::noproc();
  switch (p->offer(make_node<Node>(std::forward<Msg>(msg)), false)) {
    case offer_result::queued: return {};
    case offer_result::full: return exit_reason::mailbox_full();
    case offer_result::dead: break;
  }
  return exit_reason::noproc();
}
}  // namespace detail

/// The current process, or an empty pid outside any process.
[[nodiscard]] inline pid self() noexcept { return detail::pid_access::make(detail::tls().current); }

/// A view of an untyped message, for a catch-all `handle_info(const otpp::message&)`.
class message {
 public:
  /// The payload's type, as the compiler spells it.
  [[nodiscard]] std::string_view type_name() const noexcept { return n_->name; }
  /// Whether the payload is a T.
  template <class T>
  [[nodiscard]] bool is() const noexcept {
    return n_->type == detail::type_id<T>;
  }
  /// The payload if it is a T, else nullptr.
  template <class T>
  [[nodiscard]] const T* get_if() const noexcept {
    return is<T>() ? static_cast<const T*>(n_->value) : nullptr;
  }


 private:
  friend struct detail::handle_access;
  explicit message(const detail::untyped_node_base* n) noexcept : n_{n} {}
  const detail::untyped_node_base* n_;
};

/// Sends `msg` to a process's handle_info, matched by type at run time
/// against the info types it declares. A message to a dead or empty pid is
/// dropped, as in Erlang; without memory for it, std::bad_alloc is thrown
/// and nothing is sent.
template <class Msg>
void send(const pid& to, Msg&& msg) {
  detail::post<detail::untyped_node<std::remove_cvref_t<Msg>>>(to, std::forward<Msg>(msg));
}

/// As send, and says whether the message was queued: mailbox_full when the
/// process's bounded mailbox refused it (otpp::bounded_mailbox), noproc when
/// the pid is empty or the process is dead.
template <class Msg>
result<void> try_send(const pid& to, Msg&& msg) {
  return detail::try_post<detail::untyped_node<std::remove_cvref_t<Msg>>>(to, std::forward<Msg>(msg));
}

/// The process holding a name, from an already_started start error (empty
/// for any other reason).
[[nodiscard]] inline pid holder(const exit_reason& r) {
  if (r.kind() != exit_kind::already_started || !r.related()) return {};
  return *static_cast<const pid*>(r.related().get());
}


}  // namespace otpp


namespace otpp {

/// Links the calling process with `other`, both ways (idempotent). If `other`
/// is already gone (or empty), a caller that traps exits receives
/// exit_signal{other, noproc}; one that does not trap exits gets
/// exit_error(noproc) thrown here, as Erlang's link/1 raises. If `other`
/// dies while the link is being made, the caller hears its reason through
/// the link. Returns false outside a process (a thread cannot be linked).
inline bool link(const pid& other) {
  detail::process_base* me = detail::tls().current;
  detail::process_base* o = detail::pid_access::get(other);
  if (me == nullptr) return false;
  if (o == me) return true;
  if (o == nullptr || !o->alive()) {
    if (!me->traps_exits()) throw exit_error{exit_reason::noproc(), fmt::format("otpp::link({})", other)};
    me->enqueue(detail::make_node<detail::exit_info_node>(other, exit_reason::noproc()));
    return true;
  }
  auto& c = me->cold_state();
  if (c.links.contains(o)) return true;
  auto* node = detail::make_node<detail::link_node>(me);
  try {
    c.links.insert(o);
  } catch (...) {
    detail::free_node(node);
    throw;
  }
  o->add_ref();
  o->enqueue_signal(node);
  return true;
}

/// Removes the link between the calling process and `other`, if any. After
/// it returns, no exit signal through that link reaches the caller.
inline void unlink(const pid& other) {
  detail::process_base* me = detail::tls().current;
  detail::process_base* o = detail::pid_access::get(other);
  if (me == nullptr || o == nullptr || o == me) return;
  detail::process_cold* c = me->cold_if_any();
  if (c == nullptr || !detail::remove_link(*c, o)) return;
  o->enqueue_signal(detail::make_node<detail::unlink_node>(me));
}

/// Sends an exit signal with `reason` to `target` (Process.exit/2): `kill`
/// cannot be trapped; `normal` is ignored by a process that does not trap
/// exits (unless it is the caller itself). Never fails, but for want of
/// memory for the signal (std::bad_alloc, nothing sent).
inline void exit(const pid& target, exit_reason reason) {
  detail::process_base* t = detail::pid_access::get(target);
  if (t == nullptr) return;
  t->enqueue_signal(detail::make_node<detail::exit_signal_node>(detail::tls().current, std::move(reason), false));
}

/// Monitors `target` from the calling process: when it exits (or at once, if
/// it is already gone) the caller receives handle_info(const otpp::down&).
/// Monitors stack: each call makes a new one. Outside a process, returns an
/// empty ref (use await_exit).
[[nodiscard]] inline monitor_ref monitor(const pid& target) {
  detail::process_base* me = detail::tls().current;
  if (me == nullptr) return {};
  const std::uint64_t id = detail::next_monitor_ref.fetch_add(1, std::memory_order_relaxed);
  auto& watching = me->cold_state().monitor_state().watching;
  watching.insert(id);
  detail::process_base* t = detail::pid_access::get(target);
  try {
    if (t == nullptr) {
      me->enqueue(detail::make_node<detail::down_node>(id, pid{}, exit_reason::noproc()));
    } else {
      t->enqueue_signal(detail::make_node<detail::monitor_node>(id, me, nullptr));
    }
  } catch (...) {
    watching.erase(id);  // no memory for the signal: no monitor, half made or not
    throw;
  }
  return monitor_ref{id, target};
}

/// Removes a monitor of the calling process. A down message for it that is
/// already queued is dropped too (Erlang's demonitor with flush). Returns
/// whether the monitor was still active.
inline bool demonitor(const monitor_ref& ref) {
  detail::process_base* me = detail::tls().current;
  if (me == nullptr || !ref) return false;
  detail::process_cold* c = me->cold_if_any();
  if (c == nullptr) return false;
  if (c->mon == nullptr || c->mon->watching.erase(ref.id()) == 0) return false;
  if (detail::process_base* t = detail::pid_access::get(ref.target()))
    t->enqueue_signal(detail::make_node<detail::demonitor_node>(ref.id()));
  return true;
}

/// A plain thread's monitor: watches `target` from construction on, so a
/// death that happens after construction is reported with its reason (a
/// target already gone reports noproc). Waiting works from any thread.
///
///   otpp::exit_watch w{srv};
///   otpp::exit(srv, otpp::exit_reason::kill());
///   assert(w.wait()->kind() == otpp::exit_kind::killed);
class exit_watch {
 public:
  /// Starts watching `target` (a dead or empty one answers noproc).
  explicit exit_watch(const pid& target) : target_{target} {
    detail::process_base* t = detail::pid_access::get(target_);
    if (t == nullptr) return;
    slot_ = detail::reply_slot<exit_reason>::make();
    id_ = detail::next_monitor_ref.fetch_add(1, std::memory_order_relaxed);
    t->enqueue_signal(detail::make_node<detail::monitor_node>(id_, nullptr, slot_));
  }
  exit_watch(const exit_watch&) = delete;
  exit_watch& operator=(const exit_watch&) = delete;
  ~exit_watch() {
    if (slot_ == nullptr) return;
    if (!slot_->resolved())
      detail::pid_access::get(target_)->enqueue_signal(detail::make_node<detail::demonitor_node>(id_));
    slot_->release();
  }

  /// The target's exit reason once it has exited, or timeout. May be called
  /// again after a timeout.
  [[nodiscard]] result<exit_reason> wait(std::chrono::steady_clock::duration timeout = infinity) {
    detail::process_base* t = detail::pid_access::get(target_);
    if (t == nullptr) return exit_reason::noproc();
    if (t == detail::tls().current) return exit_reason::calling_self();
    if (!detail::await_resolution(slot_, detail::deadline_after(timeout), t)) return exit_reason::timeout();
    if (!taken_) {
      reason_ = slot_->take();
      taken_ = true;
    }
    return result<exit_reason>{std::in_place, reason_};
  }

 private:
  pid target_;
  detail::reply_slot<exit_reason>* slot_ = nullptr;
  std::uint64_t id_ = 0;
  exit_reason reason_;
  bool taken_ = false;
};

/// Waits until `target` exits and returns its exit reason (noproc if it is
/// already gone), or fails with timeout. To catch a death you are about to
/// cause, create an exit_watch first.
inline result<exit_reason> await_exit(const pid& target, std::chrono::steady_clock::duration timeout = infinity) {
  exit_watch w{target};
  return w.wait(timeout);
}

}  // namespace otpp

/// @cond OTPP_INTERNAL
template <>
struct std::hash<otpp::pid> {
  std::size_t operator()(const otpp::pid& p) const noexcept { return std::hash<std::uint64_t>{}(p.id()); }
};
/// @endcond

