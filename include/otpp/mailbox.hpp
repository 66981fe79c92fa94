#pragma once
// Bounded mailboxes: a start option that caps how many messages wait for a
// process, and what happens to the ones that do not fit.
//
//   auto s = otpp::start<worker>(otpp::bounded_mailbox(10'000, otpp::overflow::drop_oldest));
//   if (auto r = otpp::try_cast(s, job{...}); !r) { /* r.error().kind() == otpp::exit_kind::mailbox_full */ }
//
// Unbounded stays the default, as in OTP. A bound counts the messages in the
// mailbox, handled or not yet taken (and those held back while a handler
// awaits). What it refuses:
// - a cast, a send or a timer's message that does not fit is dropped and
//   counted: plain cast and send keep "never fails"; try_cast and try_send
//   say mailbox_full;
// - a call to a full mailbox fails at once with mailbox_full, whatever the
//   policy, instead of waiting in line for its timeout;
// - system messages (stop, sys requests), exit signals, monitors and the
//   runtime's own messages (timeouts, resumed handlers) are never refused.
// Every drop is counted (sys::peek's `dropped`) and emitted as telemetry
// (mailbox_events::dropped). Senders pay one atomic add per message for a
// bounded process; an unbounded one pays one test.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "telemetry.hpp"

namespace otpp {

/// What a full bounded mailbox does with a message that does not fit.
enum class overflow : std::uint8_t {
  /// The new message is dropped.
  drop_newest,
  /// The new message is queued and the oldest waiting one is dropped (when
  /// the process takes it: a queued call fails with mailbox_full). While the
  /// process is inside one long handler the mailbox holds at most twice its
  /// capacity; beyond that new messages are dropped too.
  drop_oldest,
  /// As drop_newest at the sender: the policy for senders that use
  /// try_cast / try_send and handle mailbox_full themselves.
  reject,
  /// A plain thread that sends waits for room, up to the bound's
  /// block_timeout, then the message is dropped (try_cast: mailbox_full).
  /// A process never blocks its worker: it is refused at once.
  block,
};

/// The name an overflow policy prints as ("drop_oldest"...).
[[nodiscard]] constexpr const char* overflow_name(overflow o) noexcept {
  switch (o) {
    case overflow::drop_newest: return "drop_newest";
    case overflow::drop_oldest: return "drop_oldest";
    case overflow::reject: return "reject";
    case overflow::block: return "block";
  }
  return "?";
}

/// The bounded_mailbox start option.
struct bounded_mailbox_t {
  std::size_t capacity;                          ///< Messages that may wait.
  overflow policy;                               ///< What happens to one that does not fit.
  std::chrono::steady_clock::duration block_timeout;  ///< overflow::block: how long a plain thread waits.
};

/// Start option: at most `capacity` messages wait for the process; `policy`
/// says what happens to the others. Pass it after the name, if any:
/// `otpp::start<worker>(otpp::name("w"), otpp::bounded_mailbox(1000), args...)`.
/// Throws std::invalid_argument for a zero capacity or a negative timeout.
[[nodiscard]] inline bounded_mailbox_t bounded_mailbox(
    std::size_t capacity, overflow policy = overflow::drop_newest,
    std::chrono::steady_clock::duration block_timeout = std::chrono::seconds(5)) {
  if (capacity == 0) throw std::invalid_argument("otpp::bounded_mailbox: the capacity must be at least 1");
  if (capacity > (std::size_t{1} << 40)) throw std::invalid_argument("otpp::bounded_mailbox: the capacity is too large");
  if (block_timeout < std::chrono::steady_clock::duration::zero())
    throw std::invalid_argument("otpp::bounded_mailbox: negative block timeout");
  return {capacity, policy, block_timeout};
}

/// Telemetry of bounded mailboxes.
namespace mailbox_events {
/// A message was dropped by a bounded mailbox (or a call refused).
/// Measurements: count (1), queue_length (messages waiting then), capacity.
/// Metadata: pid (the receiver), policy ("drop_oldest"...), call (whether
/// it was a call, failed with mailbox_full).
inline const telemetry::event dropped{"otpp", "process", "dropped"};
}  // namespace mailbox_events

}  // namespace otpp
