#pragma once
// Intrusive multi-producer single-consumer queue (Dmitry Vyukov, "Intrusive
// MPSC node-based queue", 1024cores.net).
//
// push: one atomic exchange plus one release store, wait-free for producers.
// pop: loads only, single consumer. A producer preempted between its exchange
// and its link store makes the queue look momentarily empty to the consumer
// even though `tail_ != head_`; `empty()` reports such a queue as non-empty,
// which is what the mailbox's go-idle handshake needs (the consumer must not
// go idle while a push is half done, or it would never be rescheduled).
//
// The queue can also carry its consumer's run right (a process's mailbox,
// Pony's shape): the consumer marks an empty queue idle by tagging its tail
// (mark_idle), and the push whose exchange finds the tag took the right
// with it (push returns true): one atomic exchange both queues the message
// and tells its sender to schedule the process, where a separate run-state
// word cost the sender a second locked instruction. take_idle takes the
// right without a message (a signal's sender, an inline call).
//
// The consumer's cursor (`head`, kept by the consumer) points at the next
// node to take, or at a dummy: the stub, or a node taken in place. A node
// the consumer owns for good (a process's resume node) may be taken while it
// is the last one without pushing the stub behind it: it stays as the dummy
// (the cursor's low bit says so) until a later push links past it. It must
// not be pushed again while it is the dummy.
//
// Two words here plus the consumer's head pointer, kept by the consumer: a
// process must stay a few words when idle (a million mailboxes padded to
// cache lines would cost 200 MB), so instead of padding, the process object
// is laid out with the producers' word and the consumer's words on different
// cache lines.

#include <atomic>
#include <cstdint>

namespace otpp::detail {

struct mpsc_node {
  std::atomic<mpsc_node*> next_{nullptr};
};

class mpsc_queue {
 public:
  /// The consumer keeps the head pointer itself (see `consumer_head`), so
  /// that it can live on a different cache line than `tail_`: the producers
  /// write `tail_` on every push and the consumer `head` on every pop, and on
  /// one shared line each message would cost two cache-line transfers.
  mpsc_queue() noexcept : tail_{&stub_} {}
  mpsc_queue(const mpsc_queue&) = delete;
  mpsc_queue& operator=(const mpsc_queue&) = delete;

  /// The initial value of the consumer's head pointer.
  [[nodiscard]] mpsc_node* consumer_head() noexcept { return &stub_; }

  /// Any thread. True if the queue was marked idle: the caller now holds
  /// the consumer's run right. seq_cst on the exchange: a signal queue's
  /// sender loads the run state right after, and that load must not be
  /// ordered before the push becomes visible (Dekker pattern with the
  /// consumer's go-idle).
  bool push(mpsc_node* n) noexcept {
    n->next_.store(nullptr, std::memory_order_relaxed);
    mpsc_node* prev = tail_.exchange(n, std::memory_order_seq_cst);
    // release: the consumer's acquire load of `next_` sees the node's payload.
    untagged(prev)->next_.store(n, std::memory_order_release);
    return tagged(prev);
  }

  /// Consumer only. Returns nullptr when empty or when the newest push is not
  /// linked yet. `keep_in_place(n)`: n may stay as the dummy when it is the
  /// last node (the consumer owns it; see above).
  template <class KeepInPlace>
  [[nodiscard]] mpsc_node* pop(mpsc_node*& cursor, KeepInPlace&& keep_in_place) noexcept {
    mpsc_node* head = untagged(cursor);
    mpsc_node* next = head->next_.load(std::memory_order_acquire);
    if (head == &stub_ || tagged(cursor)) {  // a dummy: its successor is the first node
      if (next == nullptr) return nullptr;
      cursor = next;
      head = next;
      next = next->next_.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      cursor = next;
      return head;
    }
    // (The consumer holds the run right: the tail carries no mark.)
    if (head != tail_.load(std::memory_order_acquire)) return nullptr;  // push in flight
    if (keep_in_place(head)) {
      cursor = tag(head);
      return head;
    }
    push(&stub_);
    next = head->next_.load(std::memory_order_acquire);
    if (next != nullptr) {
      cursor = next;
      return head;
    }
    return nullptr;
  }
  [[nodiscard]] mpsc_node* pop(mpsc_node*& cursor) noexcept {
    return pop(cursor, [](const mpsc_node*) { return false; });
  }

  /// Consumer only (holding the run right, if the queue carries it).
  /// seq_cst pairs with the producers' exchange (see push).
  [[nodiscard]] bool empty(const mpsc_node* cursor) const noexcept {
    const mpsc_node* head = untagged(cursor);
    if (head->next_.load(std::memory_order_acquire) != nullptr) return false;
    if (head != &stub_ && !tagged(cursor)) return false;  // a node not yet taken
    return tail_.load(std::memory_order_seq_cst) == head;
  }

  /// Any thread, typically a consumer that has just given up the consumer
  /// role: reads only `tail`, never a node (which the next consumer may free).
  /// At rest an empty queue has tail == stub; if a new consumer is mid-pop the
  /// answer may be wrong, but then the caller's claim CAS fails anyway.
  /// (For a queue that never carries the run right.)
  [[nodiscard]] bool empty_after_release() const noexcept {
    return tail_.load(std::memory_order_seq_cst) == &stub_;
  }

  /// Consumer only: gives up the run right if the queue is empty. False if
  /// it is not, or a push came first (the consumer keeps the right).
  /// seq_cst: the consumer's re-check of its other queue comes after it.
  [[nodiscard]] bool mark_idle(mpsc_node* cursor) noexcept {
    mpsc_node* expected = untagged(cursor);
    if (expected != &stub_ && !tagged(cursor)) return false;  // a node not yet taken: not empty
    return tail_.compare_exchange_strong(expected, tag(expected), std::memory_order_seq_cst, std::memory_order_relaxed);
  }
  /// Any thread: takes the run right of an idle queue (still empty), without
  /// a message. acquire: the taker sees what the last holder did.
  [[nodiscard]] bool take_idle() noexcept {
    mpsc_node* t = tail_.load(std::memory_order_seq_cst);
    if (!tagged(t)) return false;
    return tail_.compare_exchange_strong(t, untagged(t), std::memory_order_seq_cst, std::memory_order_relaxed);
  }
  /// Any thread: whether the run right is given up (a snapshot).
  [[nodiscard]] bool idle() const noexcept { return tagged(tail_.load(std::memory_order_acquire)); }

  /// The node a cursor points at (a dummy's mark cleared).
  [[nodiscard]] static mpsc_node* at(mpsc_node* cursor) noexcept { return untagged(cursor); }
  /// Whether the cursor's node was taken in place (a dummy now).
  [[nodiscard]] static bool taken_in_place(const mpsc_node* cursor) noexcept { return tagged(cursor); }

 private:
  static constexpr std::uintptr_t mark = 1;  // nodes are pointer-aligned: bit 0 is free
  static bool tagged(const mpsc_node* p) noexcept { return (reinterpret_cast<std::uintptr_t>(p) & mark) != 0; }
  static mpsc_node* tag(mpsc_node* p) noexcept {
    return reinterpret_cast<mpsc_node*>(reinterpret_cast<std::uintptr_t>(p) | mark);
  }
  template <class P>
  static P* untagged(P* p) noexcept {
    return reinterpret_cast<P*>(reinterpret_cast<std::uintptr_t>(p) & ~mark);
  }

  std::atomic<mpsc_node*> tail_;
  mpsc_node stub_;
};

}  // namespace otpp::detail
