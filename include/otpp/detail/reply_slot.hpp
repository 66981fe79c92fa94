#pragma once
// The rendezvous between a blocked caller and whoever replies to it.
//
// Two references from birth: the caller's and the reply side's (the call
// message, later a reply_to). Exactly one resolution wins, through a CAS from
// pending/waiting to `claimed`; the winner writes the value or error and then
// publishes with a release store of `ready`/`failed`. A caller that gives up
// (timeout) CASes to `abandoned`, so a late reply finds the slot closed and is
// dropped: late replies never reach anyone (OTP 24+ alias semantics).
// `waiting` tells the resolver that the caller sleeps on the futex, so a wake
// system call is made only then.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <thread>
#include <utility>

#include "../exit_reason.hpp"
#include "config.hpp"
#include "node_pool.hpp"
#include "parking.hpp"
#include "platform.hpp"

namespace otpp::detail {

/// What a slot awaited by a process (rather than a thread parked on it)
/// calls when it is resolved: the process's wake-up (see otpp/async_call.hpp).
struct slot_waker {
  void (*wake)(slot_waker* self) noexcept = nullptr;
  /// Woken once the outcome is final, so that `wake` may read it on the
  /// resolver's thread. Only for a waker that outlives the slot's
  /// resolution on its own (not a process, which could then be freed
  /// while the wake-up is posted to it).
  bool after_publish = false;
};

class reply_slot_base {
 public:
  enum : std::uint32_t { pending = 0, waiting = 1, claimed = 2, ready = 3, failed = 4, abandoned = 5, awaited = 6 };

  reply_slot_base(const reply_slot_base&) = delete;
  reply_slot_base& operator=(const reply_slot_base&) = delete;

  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    // The only reference left is ours: nobody can add one (a reference is
    // only copied from another), so the locked subtract is skipped; the
    // acquire load, like acq_rel, shows the freeing thread every other
    // owner's writes. (A process's release measured slower this way:
    // task_async_await_ns 209 against 195 ns.)
    if (refs_.load(std::memory_order_acquire) == 1 || refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)
      destroy_(this);
  }
  /// The caller's release, once it is done waiting (answered, or given
  /// up): also drops the reference a resolver handed over with its answer
  /// (see set_value_handing).
  void release_caller() noexcept {
    std::uint32_t s = state_.load(std::memory_order_acquire);
    if (s == claimed) s = settled_state();  // an answer being written may be handed over
    if ((s == ready || s == failed) && handed_) {
      // Both references are ours unless someone else holds one (a kept
      // reply_to): then the last of us frees the block.
      if (refs_.load(std::memory_order_acquire) == 2 || refs_.fetch_sub(2, std::memory_order_acq_rel) == 2) destroy_(this);
      return;
    }
    release();
  }

  /// Resolver side: fail with `why` unless already resolved or abandoned.
  bool fail(const exit_reason& why) noexcept;

  [[nodiscard]] bool resolved() const noexcept {
    auto s = state_.load(std::memory_order_acquire);
    return s == ready || s == failed;
  }
  [[nodiscard]] bool open() const noexcept {
    auto s = state_.load(std::memory_order_acquire);
    return s == pending || s == waiting || s == awaited;
  }
  /// Once the wait is over (resolved or abandoned): the final state. A
  /// reply being written is waited for (nanoseconds).
  [[nodiscard]] std::uint32_t settled_state() const noexcept {
    std::uint32_t s = state_.load(std::memory_order_acquire);
    for (unsigned spins = 0; s == claimed; ++spins) {
      if (spins < 64) {
        cpu_relax();
      } else {
        std::this_thread::yield();  // the resolver was preempted mid-reply
      }
      s = state_.load(std::memory_order_acquire);
    }
    return s;
  }

  /// Awaiting side (a process): from now on, resolving the slot calls
  /// `w->wake`. False if it is already resolved or abandoned (if a reply is
  /// being written, waits the nanoseconds until it is).
  bool await(slot_waker* w) noexcept {
    waker_ = w;
    std::uint32_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (s == pending) {
        // release: the resolver's claim sees waker_.
        if (state_.compare_exchange_weak(s, awaited, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
      } else if (s == claimed) {
        cpu_relax();
        s = state_.load(std::memory_order_acquire);
      } else {
        return false;
      }
    }
  }
  /// Awaiting side: stop awaiting without giving up (the slot is pending
  /// again). If it is being resolved, waits until it is (the resolver has
  /// then finished with the waker). True if it is still open.
  bool unawait() noexcept {
    std::uint32_t s = awaited;
    if (state_.compare_exchange_strong(s, pending, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
    const std::uint32_t final_state = settled_state();
    return final_state == pending || final_state == waiting;
  }
  /// Gives up on the answer: a reply after this is dropped. True if this
  /// call ended the wait (for an awaited slot: no wake-up will come).
  bool abandon() noexcept {
    std::uint32_t s = state_.load(std::memory_order_acquire);
    while (s == pending || s == waiting || s == awaited) {
      if (state_.compare_exchange_weak(s, abandoned, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
    }
    return false;
  }

  /// Caller side: wait until resolved or the deadline passes. Returns the
  /// final state: ready, failed, or abandoned (timed out).
  std::uint32_t wait_until(steady::time_point deadline) noexcept {
    for (;;) {
      std::uint32_t s = state_.load(std::memory_order_acquire);
      if (s == ready || s == failed) return s;
      if (s == claimed) {  // a reply is being written: it is a matter of nanoseconds
        cpu_relax();
        continue;
      }
      if (steady::now() >= deadline) {
        if (state_.compare_exchange_strong(s, abandoned, std::memory_order_acq_rel)) return abandoned;
        continue;
      }
      if (s == pending) {
        if (!state_.compare_exchange_weak(s, waiting, std::memory_order_acq_rel)) continue;
      }
      park(state_, waiting, deadline);
    }
  }

  /// Caller side: sleeps until resolved or `until`, without giving up.
  /// Returns whether the slot is resolved.
  bool wait_for(steady::time_point until) noexcept {
    for (;;) {
      std::uint32_t s = state_.load(std::memory_order_acquire);
      if (s == ready || s == failed) return true;
      if (s == claimed) {
        cpu_relax();
        continue;
      }
      if (steady::now() >= until) return false;
      if (s == pending && !state_.compare_exchange_weak(s, waiting, std::memory_order_acq_rel)) continue;
      park(state_, waiting, until);
    }
  }

  [[nodiscard]] const exit_reason& error() const noexcept { return error_; }

 protected:
  using destroy_fn = void (*)(reply_slot_base*) noexcept;
  explicit reply_slot_base(destroy_fn d) noexcept : destroy_{d} {}

  bool claim(std::uint32_t& prev) noexcept {
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    while (s == pending || s == waiting || s == awaited) {
      // acquire: nothing; release: nothing yet. The publish below is the edge.
      if (state_.compare_exchange_weak(s, claimed, std::memory_order_acquire, std::memory_order_relaxed)) {
        prev = s;
        return true;
      }
    }
    return false;
  }

  /// Returns whether the resolver's reference went with the answer, if
  /// `may_hand`: so it does when nothing here touches the slot after the
  /// final store (no thread to unpark, no wake-up after it).
  bool publish(std::uint32_t final_state, std::uint32_t prev, bool may_hand = false) noexcept {
    // An awaiting process is woken before the state is final: until then it
    // waits in settled_state, and so does its exit, so the process cannot
    // be freed while the wake-up is being posted to it.
    const bool late = prev == awaited && waker_->after_publish;
    const bool hand = may_hand && prev != waiting && !late;
    handed_ = hand;
    if (prev == awaited && !late) waker_->wake(waker_);
    // release: the caller's acquire load of the state sees the value/error.
    state_.store(final_state, std::memory_order_release);
    if (prev == waiting) unpark_one(state_);
    if (late) waker_->wake(waker_);
    return hand;
  }

  std::atomic<std::uint32_t> state_{pending};
  std::atomic<std::uint32_t> refs_{2};
  destroy_fn destroy_ = nullptr;
  slot_waker* waker_ = nullptr;  // set before the state becomes awaited
  // Written by the resolution's winner before the final state, read by the
  // caller after it: the winner's reference went with the answer.
  bool handed_ = false;
  exit_reason error_;
};

/// Where a node made with its slot (reply_slot::make_with) sits in their
/// block, and the block's size.
template <class Slot, class Node>
struct slot_block {
  static constexpr std::size_t node_offset = (sizeof(Slot) + alignof(Node) - 1) / alignof(Node) * alignof(Node);
  static constexpr std::size_t bytes = node_offset + sizeof(Node);
};

/// A slot and the request that will answer it in one block (one allocation
/// per call instead of two): `construct(where, slot)` builds the Node at
/// `where`. The block goes with the slot's last reference, so the Node, once
/// done, is destroyed but never freed by itself (call_node). Throws what
/// allocation or construct throws (then nothing is left).
template <class Slot>
struct slot_block_maker {
  template <class Node, class F>
  static std::pair<Slot*, Node*> make_with(F&& construct) {
    using block = slot_block<Slot, Node>;
    static_assert(alignof(Node) <= pool_granule, "over-aligned requests are not supported");
    char* m = static_cast<char*>(pool_allocate(block::bytes));
    auto* slot = ::new (m) Slot{&destroy_block<Node>};
    try {
      return {slot, construct(static_cast<void*>(m + block::node_offset), slot)};
    } catch (...) {
      slot->~Slot();
      pool_deallocate(m, block::bytes);
      throw;
    }
  }
  template <class Node>
  static void destroy_block(reply_slot_base* b) noexcept {
    auto* s = static_cast<Slot*>(b);
    s->~Slot();
    pool_deallocate(s, slot_block<Slot, Node>::bytes);
  }
};

template <class R>
class reply_slot final : public reply_slot_base, public slot_block_maker<reply_slot<R>> {
 public:
  static reply_slot* make() {
    void* m = pool_allocate(sizeof(reply_slot));
    return ::new (m) reply_slot;
  }
  template <class... A>
  bool set_value(A&&... a) noexcept(std::is_nothrow_constructible_v<R, A&&...>) {
    std::uint32_t prev;
    if (!claim(prev)) return false;
    ::new (static_cast<void*>(&value_)) R(std::forward<A>(a)...);
    publish(ready, prev);
    return true;
  }
  /// Answers for a resolver done with the slot whatever happens: true if
  /// its reference went with the answer to the caller (the slot may then
  /// be gone already), false if it must still release it. Saves the
  /// resolver's locked release, and usually the caller's (release_caller).
  template <class... A>
  bool set_value_handing(A&&... a) noexcept(std::is_nothrow_constructible_v<R, A&&...>) {
    std::uint32_t prev;
    if (!claim(prev)) return false;
    ::new (static_cast<void*>(&value_)) R(std::forward<A>(a)...);
    return publish(ready, prev, true);
  }

  /// Precondition: the state is ready; called once, by the caller.
  R take() noexcept(std::is_nothrow_move_constructible_v<R>) { return std::move(value_); }

 private:
  reply_slot() noexcept : reply_slot_base{&destroy} {}
  friend struct slot_block_maker<reply_slot>;
  explicit reply_slot(destroy_fn d) noexcept : reply_slot_base{d} {}
  ~reply_slot() {
    if (state_.load(std::memory_order_relaxed) == ready) value_.~R();
  }
  static void destroy(reply_slot_base* b) noexcept {
    auto* s = static_cast<reply_slot*>(b);
    s->~reply_slot();
    pool_deallocate(s, sizeof(reply_slot));
  }
  union {
    R value_;
  };
};

template <>
class reply_slot<void> final : public reply_slot_base, public slot_block_maker<reply_slot<void>> {
 public:
  static reply_slot* make() {
    void* m = pool_allocate(sizeof(reply_slot));
    return ::new (m) reply_slot;
  }
  bool set_value() noexcept {
    std::uint32_t prev;
    if (!claim(prev)) return false;
    publish(ready, prev);
    return true;
  }
  /// As reply_slot<R>::set_value_handing.
  bool set_value_handing() noexcept {
    std::uint32_t prev;
    if (!claim(prev)) return false;
    return publish(ready, prev, true);
  }
  void take() noexcept {}

 private:
  reply_slot() noexcept : reply_slot_base{&destroy} {}
  friend struct slot_block_maker<reply_slot>;
  explicit reply_slot(destroy_fn d) noexcept : reply_slot_base{d} {}
  static void destroy(reply_slot_base* b) noexcept {
    auto* s = static_cast<reply_slot*>(b);
    s->~reply_slot();
    pool_deallocate(s, sizeof(reply_slot));
  }
};

}  // namespace otpp::detail

#if OTPP_HEADER_ONLY
#include "reply_slot-inl.hpp"
#endif
