#pragma once
// The values a process is known by and what it is told when another dies:
// pid, monitor_ref, exit_signal, down. They sit below the runtime (this
// header includes no scheduler, timer or mailbox code), so anything that only
// holds or prints them (telemetry metadata, a registry key) stays cheap.
//
// A pid is a counted handle. It stays valid after the process dies (it then
// answers alive() == false, sends to it are dropped and calls fail with
// noproc), so holding a pid never dangles. Equality and ordering follow the
// process identity; pids format as Erlang's `<0.ID.0>`.

#include <atomic>
#include <charconv>
#include <chrono>
#include <compare>
#include <cstdint>
#include <string_view>
#include <utility>

#include <fmt/core.h>

#include "detail/config.hpp"
#include "detail/counted.hpp"
#include "exit_reason.hpp"

namespace otpp {

class pid;

namespace detail {
struct pid_access;

/// What every handle to a process needs: its identity, whether it lives, and
/// the reference count that keeps its memory. The rest of the process
/// (mailbox, run state, the Impl) derives from this (detail/process_base.hpp).
class process_identity {
 public:
  /// In run_state() (process_base): someone holds the right to run it.
  static constexpr std::uint32_t scheduled = 1;
  static constexpr std::uint32_t dead = 2;

  process_identity() noexcept = default;
  process_identity(const process_identity&) = delete;
  process_identity& operator=(const process_identity&) = delete;

  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    // acq_rel: the freeing thread must see all writes of the other owners.
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) last_reference_gone();
  }
  [[nodiscard]] std::uint64_t id() const noexcept { return id_ & ~bounded_flag; }
  /// Whether the process has a bounded mailbox: senders read it on the line
  /// they touch anyway, so an unbounded send pays one test for the feature.
  [[nodiscard]] bool bounded() const noexcept { return (id_ & bounded_flag) != 0; }
  [[nodiscard]] bool alive() const noexcept { return (state_.load(std::memory_order_acquire) & dead) == 0; }

 protected:
  // Virtual only to keep -Wnon-virtual-dtor quiet: a process is destroyed by
  // its typed half (process_of::deallocate_self), never through a base pointer.
  virtual ~process_identity() = default;
  /// Destroys the process and gives its memory back.
  virtual void last_reference_gone() noexcept = 0;

  // Layout: the vptr, then what senders touch, on the object's first line
  // (see process_base for the rest).
  std::atomic<std::uint32_t> state_{0};          // 8: dead, once it exits (the run right is the mailbox's)
  std::atomic<std::uint32_t> refs_{1};           // 12
  std::uint64_t id_ = 0;                         // 16: set when the runtime registers it; top bit: bounded
  static constexpr std::uint64_t bounded_flag = std::uint64_t{1} << 63;
};

/// Erlang's `<0.ID.0>`, without going through fmt (one formatter for pids,
/// whatever prints them).
struct pid_text {
  explicit pid_text(std::uint64_t id) noexcept {
    chars_[0] = '<';
    chars_[1] = '0';
    chars_[2] = '.';
    char* end = std::to_chars(chars_ + 3, chars_ + sizeof chars_ - 3, id).ptr;
    *end++ = '.';
    *end++ = '0';
    *end++ = '>';
    size_ = static_cast<std::size_t>(end - chars_);
  }
  [[nodiscard]] std::string_view view() const noexcept { return {chars_, size_}; }

 private:
  char chars_[32];
  std::size_t size_;
};
}  // namespace detail

/// A handle to a process (Erlang's pid): copyable, comparable, hashable,
/// printable as `<0.ID.0>`; valid after the process dies.
class pid {
 public:
  /// An empty pid, naming no process.
  pid() noexcept = default;

  /// False for a default-constructed pid.
  explicit operator bool() const noexcept { return static_cast<bool>(p_); }
  /// Whether the process is still running (a snapshot: it may die right after).
  [[nodiscard]] bool alive() const noexcept { return p_ && p_.get()->alive(); }
  /// Unique for the life of the program; 0 for an empty pid.
  [[nodiscard]] std::uint64_t id() const noexcept { return p_ ? p_.get()->id() : 0; }

  friend bool operator==(const pid& a, const pid& b) noexcept { return a.p_ == b.p_; }
  friend std::strong_ordering operator<=>(const pid& a, const pid& b) noexcept { return a.id() <=> b.id(); }

 private:
  friend struct detail::pid_access;
  explicit pid(detail::counted<detail::process_identity> p) noexcept : p_{std::move(p)} {}
  detail::counted<detail::process_identity> p_;
};

/// Wait forever.
inline constexpr std::chrono::steady_clock::duration infinity = std::chrono::steady_clock::duration::max();

/// Names one monitor: returned by monitor(), carried by its down message.
class monitor_ref {
 public:
  /// An empty ref.
  monitor_ref() noexcept = default;
  /// The monitor numbered `id` on `target` (made by otpp::monitor).
  monitor_ref(std::uint64_t id, pid target) noexcept : id_{id}, target_{std::move(target)} {}
  /// Unique for the life of the program.
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  /// The monitored process.
  [[nodiscard]] const pid& target() const noexcept { return target_; }
  /// False for an empty ref.
  explicit operator bool() const noexcept { return id_ != 0; }
  friend bool operator==(const monitor_ref& a, const monitor_ref& b) noexcept { return a.id_ == b.id_; }

 private:
  std::uint64_t id_ = 0;
  pid target_;
};

/// A trapped exit signal, delivered to handle_info (Erlang's {'EXIT', From, Reason}).
struct exit_signal {
  pid from;            ///< The sender; empty when sent by a plain thread.
  exit_reason reason;  ///< Why.
};

/// A monitored process went away (Erlang's {'DOWN', Ref, process, Pid, Reason}).
/// Monitoring a process that is already gone gives reason noproc.
struct down {
  monitor_ref ref;     ///< The monitor that fired.
  pid process;         ///< The process that went away.
  exit_reason reason;  ///< Its exit reason (noproc if it was already gone).
};

}  // namespace otpp

/// @cond OTPP_INTERNAL
// Pids format as Erlang's `<0.ID.0>`, with "{}" only.
template <>
struct fmt::formatter<otpp::pid> : otpp::detail::text_formatter {
  template <class Ctx>
  auto format(const otpp::pid& p, Ctx& ctx) const {
    return write(otpp::detail::pid_text{p.id()}.view(), ctx);
  }
};
/// @endcond
