#pragma once
// The out-of-line half of links.hpp: what a process's exit tells the others.

#include "links.hpp"

namespace otpp::detail {

OTPP_FUNC process_waits::~process_waits() {
  // Reentrant wait records: any still listed lost their frames at the exit.
  for (reentrant_wait* lists : {reentrant_head, reentrant_spare}) {
    while (reentrant_wait* w = lists) {
      lists = w->next;
      delete w;
    }
  }
}

OTPP_FUNC process_cold::~process_cold() {
  delete waits;
  links.for_each([](process_base* l) { l->release(); });
  if (parent) parent->release();
  if (mon) {
    for (auto& [ref, m] : mon->monitors) {
      if (m.watcher) m.watcher->release();
      if (m.waiter) m.waiter->release();
    }
  }
}

OTPP_FUNC void signal_exit(process_base& p, process_cold& c, const exit_reason& reason) noexcept {
  c.links.for_each([&](process_base* l) {
    l->enqueue_signal(make_owed_node<exit_signal_node>("exit signal", p.id(), l->id(), &p, reason, true));
    if (l == c.parent) {
      l->release_refs(2);  // the link's and the parent's, in one instruction
      c.parent = nullptr;
    } else {
      l->release();
    }
  });
  c.links.clear();
  if (c.parent) {
    c.parent->release();
    c.parent = nullptr;
  }
  if (c.mon) {
    for (auto& [ref, m] : c.mon->monitors) deliver_down(p, m, reason);
    c.mon.reset();
  }
}

}  // namespace otpp::detail
