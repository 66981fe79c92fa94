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
// Two words here plus the consumer's head pointer, kept by the consumer: a
// process must stay a few words when idle (a million mailboxes padded to
// cache lines would cost 200 MB), so instead of padding, the process object
// is laid out with the producers' word and the consumer's words on different
// cache lines.

#include <atomic>

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

  /// Any thread. seq_cst on the exchange: the mailbox's wake-up check loads the
  /// process state right after, and that load must not be ordered before the
  /// push becomes visible (Dekker pattern with the consumer's go-idle store).
  void push(mpsc_node* n) noexcept {
    n->next_.store(nullptr, std::memory_order_relaxed);
    mpsc_node* prev = tail_.exchange(n, std::memory_order_seq_cst);
    // release: the consumer's acquire load of `next_` sees the node's payload.
    prev->next_.store(n, std::memory_order_release);
  }

  /// Consumer only. Returns nullptr when empty or when the newest push is not
  /// linked yet.
  [[nodiscard]] mpsc_node* pop(mpsc_node*& head_) noexcept {
    mpsc_node* head = head_;
    mpsc_node* next = head->next_.load(std::memory_order_acquire);
    if (head == &stub_) {
      if (next == nullptr) return nullptr;
      head_ = next;
      head = next;
      next = next->next_.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      head_ = next;
      return head;
    }
    if (head != tail_.load(std::memory_order_acquire)) return nullptr;  // push in flight
    push(&stub_);
    next = head->next_.load(std::memory_order_acquire);
    if (next != nullptr) {
      head_ = next;
      return head;
    }
    return nullptr;
  }

  /// Consumer only. seq_cst pairs with the producers' exchange (see push).
  [[nodiscard]] bool empty(const mpsc_node* head) const noexcept {
    if (head->next_.load(std::memory_order_acquire) != nullptr) return false;
    return tail_.load(std::memory_order_seq_cst) == head && head == &stub_;
  }

  /// Any thread, typically a consumer that has just given up the consumer
  /// role: reads only `tail`, never a node (which the next consumer may free).
  /// At rest an empty queue has tail == stub; if a new consumer is mid-pop the
  /// answer may be wrong, but then the caller's claim CAS fails anyway.
  [[nodiscard]] bool empty_after_release() const noexcept {
    return tail_.load(std::memory_order_seq_cst) == &stub_;
  }

 private:
  std::atomic<mpsc_node*> tail_;
  mpsc_node stub_;
};

}  // namespace otpp::detail
