#pragma once
// Links, monitors and exit signals: the signal messages and what a process
// does when it receives one.
//
// Every operation is a signal to the other side, delivered through its signal
// queue (handled before its next message). A signal to a dead process is
// discarded, and its discard answers as Erlang does: a link to a dead process
// yields an exit signal `noproc` (or the reason it died with while the link
// was in flight); a monitor of a dead process yields a `down` with the same.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "../pid.hpp"
#include "config.hpp"
#include "process_base.hpp"

namespace otpp::detail {

// Signals that may not be dropped: the exit signals and DOWNs an exit owes
// its links and monitors, the answer to a link that cannot be kept, the
// kill a start owes the process it gave up on, a table passing to its heir
// (table_ownership.hpp). Dropped, a supervisor would never restart the
// child, a watcher would never hear, a linked process would live on alone,
// a table kept for its heir would be deleted. Without memory for one, the thread that owes it
// waits for memory to come back: it yields 16 times, then sleeps 1 us,
// doubling to 1 ms, for about owed_signal_wait in all; then the program
// aborts with a message naming the signal and its two processes (the BEAM
// aborts at once when an allocation fails).
inline constexpr std::chrono::seconds owed_signal_wait{5};

[[gnu::noinline, gnu::cold]] inline void wait_for_owed_memory(std::string_view what, std::uint64_t from, std::uint64_t to,
                                                             unsigned refusals) noexcept {
  constexpr unsigned yields = 16;
  constexpr unsigned doublings = 10;  // 1 us .. 512 us
  constexpr unsigned ms_sleeps = static_cast<unsigned>(std::chrono::milliseconds{owed_signal_wait}.count());
  if (refusals < yields) {
    std::this_thread::yield();
  } else if (refusals < yields + doublings) {
    std::this_thread::sleep_for(std::chrono::microseconds{1u << (refusals - yields)});
  } else if (refusals < yields + doublings + ms_sleeps) {
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  } else {
    // Nothing here allocates: the texts are on the stack, stderr unbuffered.
    const pid_text a{from};
    const pid_text b{to};
    std::fprintf(stderr,
                 "otpp: no memory for the %.*s from %.*s to %.*s for %lld s; what a link, a monitor, a start or "
                 "a table's heir is owed may not be dropped. Aborting.\n",
                 static_cast<int>(what.size()), what.data(), static_cast<int>(a.view().size()), a.view().data(),
                 static_cast<int>(b.view().size()), b.view().data(), static_cast<long long>(owed_signal_wait.count()));
    std::abort();
  }
}

/// A node for a signal that may not be dropped (see above), from the
/// process numbered `from` (0: a plain thread) to `to`: made from copies of
/// `args`, waiting for memory for up to owed_signal_wait, then aborting.
template <class Node, class... A>
Node* make_owed_node(std::string_view what, std::uint64_t from, std::uint64_t to, const A&... args) noexcept {
  for (unsigned refusals = 0;; ++refusals) {
    try {
      return make_node<Node>(args...);
    } catch (...) {  // std::bad_alloc: a signal's constructor throws nothing else
      wait_for_owed_memory(what, from, to, refusals);
    }
  }
}

inline bool remove_link(process_cold& c, process_base* other) noexcept {
  if (c.links.erase(other) == 0) return false;
  other->release();
  return true;
}

/// A trapped exit, turned into a message at the end of the mailbox.
struct exit_info_node final : message_node {
  exit_info_node(pid f, exit_reason r) : value{std::move(f), std::move(r)} { fn = &handle; }
  exit_signal value;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<exit_info_node*>(n);
    if (op == msg_op::invoke) p.dispatch_info(self->value);
    free_node(self);
  }
};

/// An exit signal from `from` (empty for a plain thread), through a link or
/// sent with otpp::exit.
struct exit_signal_node final : message_node {
  exit_signal_node(process_base* f, exit_reason r, bool link) : from{f}, reason{std::move(r)}, via_link{link} {
    fn = &handle;
    if (from) from->add_ref();
  }
  process_base* from;
  exit_reason reason;
  bool via_link;

  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<exit_signal_node*>(n);
    // The link's reference to the sender, if the signal ended the link, goes
    // with the node's own: one locked subtract for the two.
    std::uint32_t refs = 1;
    if (op == msg_op::invoke) receive(p, self->from, std::move(self->reason), self->via_link, refs);
    if (self->from) self->from->release_refs(refs);
    free_node(self);
  }

  // The table of docs/semantics.md §3, and §1.1 (terminate) for the parent's
  // signal. A link it ends leaves its reference to `from` for the caller to
  // drop (`refs` counts it).
  static void receive(process_base& p, process_base* from, exit_reason reason, bool via_link,
                      std::uint32_t& refs) noexcept {
    try {
      process_cold* c = p.cold_if_any();
      if (via_link) {
        if (c == nullptr || c->links.erase(from) == 0) return;  // unlinked meanwhile
        ++refs;
      }
      if (!via_link && reason.kind() == exit_kind::kill) {
        p.request_kill();  // untrappable, and it overrides an exit already pending
        return;
      }
      if (p.traps_exits()) {
        if (from != nullptr && c != nullptr && from == c->parent) {
          p.request_exit(std::move(reason), true);  // the parent went: terminate runs
          return;
        }
        // Owed as the signal was: a trapping process (a supervisor) that
        // died of this shortage would take its children with it.
        p.enqueue(make_owed_node<exit_info_node>("trapped exit message", from != nullptr ? from->id() : 0, p.id(),
                                                 pid_access::make(from), reason));
        return;
      }
      if (reason.is_normal() && from != &p) return;
      p.request_exit(std::move(reason), false);
    } catch (...) {
      p.request_exit(exit_reason::out_of_memory(), false);
    }
  }
};

struct link_node final : message_node {
  explicit link_node(process_base* f) : from{f} {
    fn = &handle;
    from->add_ref();
  }
  process_base* from;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason* why) noexcept {
    auto* self = static_cast<link_node*>(n);
    if (op == msg_op::invoke) {
      try {
        auto& c = p.cold_state();
        if (c.links.insert(self->from)) self->from = nullptr;  // the reference moved into the link set
      } catch (...) {
        // No memory to keep the link: this process exits, and the linker,
        // whose side is recorded, hears why through it, as if it had been
        // kept (a link only one side knows would never signal).
        p.request_exit(exit_reason::out_of_memory(), false);
        self->from->enqueue_signal(
            make_owed_node<exit_signal_node>("exit signal", p.id(), self->from->id(), &p, exit_reason::out_of_memory(), true));
      }
    } else {
      // Linked to a process that is gone: the linker hears why, as an exit
      // signal through the link it already recorded.
      self->from->enqueue_signal(make_owed_node<exit_signal_node>("exit signal", p.id(), self->from->id(), &p, *why, true));
    }
    if (self->from) self->from->release();
    free_node(self);
  }
};

struct unlink_node final : message_node {
  explicit unlink_node(process_base* f) : from{f} {
    fn = &handle;
    from->add_ref();
  }
  process_base* from;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<unlink_node*>(n);
    if (op == msg_op::invoke) {
      if (process_cold* c = p.cold_if_any()) remove_link(*c, self->from);
    }
    self->from->release();
    free_node(self);
  }
};

/// A down message for a watcher process; dropped if the watcher has
/// demonitored meanwhile (so demonitor also flushes).
struct down_node final : message_node {
  down_node(std::uint64_t ref, pid target, exit_reason r) : value{monitor_ref{ref, target}, target, std::move(r)} {
    fn = &handle;
  }
  down value;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<down_node*>(n);
    if (op == msg_op::invoke) {
      if (process_cold* c = p.cold_if_any()) {
        if (c->mon && c->mon->watching.erase(self->value.ref.id()) != 0) p.dispatch_info(self->value);
      }
    }
    free_node(self);
  }
};

inline void deliver_down(process_base& target, const process_cold::monitor_entry& m, const exit_reason& reason) noexcept {
  if (m.watcher) {
    m.watcher->enqueue(make_owed_node<down_node>("DOWN message", target.id(), m.watcher->id(), m.ref, pid_access::make(&target), reason));
    m.watcher->release();
  }
  if (m.waiter) {
    m.waiter->set_value(reason);  // copies the reason: a reference count, no allocation
    m.waiter->release();
  }
}

struct monitor_node final : message_node {
  // Takes a reference on the watcher; adopts the waiter slot's reply-side one.
  monitor_node(std::uint64_t r, process_base* w, reply_slot<exit_reason>* s) : entry{r, w, s} {
    fn = &handle;
    if (w) w->add_ref();
  }
  process_cold::monitor_entry entry;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason* why) noexcept {
    auto* self = static_cast<monitor_node*>(n);
    bool kept = false;
    if (op == msg_op::invoke) {
      try {
        kept = p.cold_state().monitor_state().monitors.emplace(self->entry.ref, self->entry).second;
      } catch (...) {
      }
    }
    if (!kept) deliver_down(p, self->entry, op == msg_op::invoke ? exit_reason::out_of_memory() : *why);
    free_node(self);
  }
};

struct demonitor_node final : message_node {
  explicit demonitor_node(std::uint64_t r) : ref{r} { fn = &handle; }
  std::uint64_t ref;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<demonitor_node*>(n);
    if (op == msg_op::invoke) {
      if (process_cold* c = p.cold_if_any(); c && c->mon) {
        auto it = c->mon->monitors.find(self->ref);
        if (it != c->mon->monitors.end()) {
          if (it->second.watcher) it->second.watcher->release();
          if (it->second.waiter) {
            it->second.waiter->fail(exit_reason::timeout());
            it->second.waiter->release();
          }
          c->mon->monitors.erase(it);
        }
      }
    }
    free_node(self);
  }
};

inline std::atomic<std::uint64_t> next_monitor_ref{1};

}  // namespace otpp::detail

#if OTPP_HEADER_ONLY
#include "links-inl.hpp"
#endif
