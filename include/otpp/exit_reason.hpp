#pragma once
// Why a process ended, or why an operation on one failed.
//
// exit_reason mirrors Erlang's exit reasons: normal, shutdown (optionally with
// a detail, Elixir's {:shutdown, term}), kill (the untrappable signal),
// killed (what a killed process's links see), noproc, timeout, calling_self,
// an exception that escaped a callback, and custom reasons. Erlang reasons are
// arbitrary terms; ours carry a string detail, which is what logs and tests
// read. "Sane" reasons (normal and shutdown) are not crash-logged.
//
//   auto r = otpp::try_call(srv, get{});
//   if (!r && r.error().kind() == otpp::exit_kind::noproc) { ... }

#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include <fmt/core.h>

#include "detail/config.hpp"

namespace otpp {

/// What kind of reason an exit_reason is (Erlang's reason terms, sorted).
enum class exit_kind : std::uint8_t {
  normal,           ///< a clean exit
  shutdown,         ///< stopped by its supervisor or runtime, optionally with a detail
  kill,             ///< the untrappable signal, as sent
  killed,           ///< what a killed process exits with
  noproc,           ///< no such process: dead, empty handle, unknown name
  timeout,          ///< an operation ran out of time
  calling_self,     ///< a process called or stopped itself
  exception,        ///< an exception escaped a callback
  custom,           ///< exit_reason::error(text)
  ignore,           ///< init asked not to start
  already_started,  ///< the name was taken
  mailbox_full,     ///< a bounded mailbox had no room for the message
  noconnection,     ///< the process's node is not connected, or the connection went down
  out_of_memory,    ///< the runtime could not allocate what the process or operation needed
};

/// Why a process ended, or why an operation on one failed: a value that
/// compares, prints (`fmt::format("{}", r)`), and carries a detail.
class exit_reason {
 public:
  /// A default reason is `normal`.
  exit_reason() noexcept = default;

  /// A clean exit.
  static exit_reason normal() noexcept { return {}; }
  /// Stopped by its supervisor or runtime: sane, like normal.
  static exit_reason shutdown() noexcept { return exit_reason{exit_kind::shutdown}; }
  /// Elixir's {:shutdown, detail}: sane, so not logged and no transient restart.
  static exit_reason shutdown(std::string detail) { return exit_reason{exit_kind::shutdown, std::move(detail)}; }
  /// The untrappable signal: send it with otpp::exit(pid, kill()).
  static exit_reason kill() noexcept { return exit_reason{exit_kind::kill}; }
  /// What a killed process exits with (and its links see).
  static exit_reason killed() noexcept { return exit_reason{exit_kind::killed}; }
  /// No such process.
  static exit_reason noproc() noexcept { return exit_reason{exit_kind::noproc}; }
  /// An operation ran out of time.
  static exit_reason timeout() noexcept { return exit_reason{exit_kind::timeout}; }
  /// A process called, or stopped, itself.
  static exit_reason calling_self() noexcept { return exit_reason{exit_kind::calling_self}; }
  /// The target's bounded mailbox had no room: the message was not queued.
  static exit_reason mailbox_full() noexcept { return exit_reason{exit_kind::mailbox_full}; }
  /// The remote process's node went away (see <otpp/node.hpp>).
  static exit_reason noconnection() noexcept { return exit_reason{exit_kind::noconnection}; }
  /// No memory for what a process or an operation needed (a link it was
  /// asked to keep, the message a trapped exit becomes). Made without
  /// allocating, so that it can be reported when nothing can be allocated.
  static exit_reason out_of_memory() noexcept { return exit_reason{exit_kind::out_of_memory}; }
  /// init() asked not to start (start returns this as its error).
  static exit_reason ignore() noexcept { return exit_reason{exit_kind::ignore}; }
  /// A custom reason; `what` is what logs and comparisons see.
  static exit_reason error(std::string what) { return exit_reason{exit_kind::custom, std::move(what)}; }
  /// The reason of a process whose callback threw `e`.
  static exit_reason from_exception(std::exception_ptr e) {
    exit_reason r{exit_kind::exception};
    r.payload_ = std::make_shared<payload>(payload{describe(e), std::move(e), nullptr});
    return r;
  }
  /// The reason a process ends with when `e` escapes one of its callbacks:
  /// an exit_error's own reason (otpp::exit), else from_exception(e).
  static exit_reason of_exception(std::exception_ptr e);
  /// Used by start when the name is taken: detail names the holder, and
  /// `holder` (see otpp::holder in process.hpp) is a handle to it.
  static exit_reason already_started(std::string holder_text, std::shared_ptr<const void> holder = nullptr) {
    exit_reason r{exit_kind::already_started};
    r.payload_ = std::make_shared<payload>(payload{std::move(holder_text), nullptr, std::move(holder)});
    return r;
  }

  /// Which kind of reason this is.
  [[nodiscard]] exit_kind kind() const noexcept { return kind_; }
  /// Whether this is `normal`.
  [[nodiscard]] bool is_normal() const noexcept { return kind_ == exit_kind::normal; }
  /// normal and shutdown: not crash-logged, no restart of transient children.
  [[nodiscard]] bool is_sane() const noexcept { return kind_ == exit_kind::normal || kind_ == exit_kind::shutdown; }
  /// shutdown detail, custom text, or the exception's type and message.
  [[nodiscard]] std::string_view detail() const noexcept { return payload_ ? std::string_view{payload_->detail} : std::string_view{}; }
  /// The exception an `exception` reason holds (rethrow it to inspect it).
  [[nodiscard]] std::exception_ptr exception() const noexcept { return payload_ ? payload_->error : nullptr; }
  /// Extra data some reasons carry (the holder of a taken name).
  [[nodiscard]] const std::shared_ptr<const void>& related() const noexcept {
    static const std::shared_ptr<const void> none;
    return payload_ ? payload_->related : none;
  }

  /// "shutdown(detail)", "noproc", "exception(std::runtime_error: boom)"...
  [[nodiscard]] std::string to_string() const;

  /// Same kind and detail (the same exception object, for exceptions).
  friend bool operator==(const exit_reason& a, const exit_reason& b) noexcept {
    if (a.kind_ != b.kind_) return false;
    if (a.kind_ == exit_kind::exception) return a.exception() == b.exception();
    return a.detail() == b.detail();
  }

  /// The name a kind prints as.
  static constexpr std::string_view kind_name(exit_kind k) noexcept {
    switch (k) {
      case exit_kind::normal: return "normal";
      case exit_kind::shutdown: return "shutdown";
      case exit_kind::kill: return "kill";
      case exit_kind::killed: return "killed";
      case exit_kind::noproc: return "noproc";
      case exit_kind::timeout: return "timeout";
      case exit_kind::calling_self: return "calling_self";
      case exit_kind::exception: return "exception";
      case exit_kind::custom: return "error";
      case exit_kind::ignore: return "ignore";
      case exit_kind::already_started: return "already_started";
      case exit_kind::mailbox_full: return "mailbox_full";
      case exit_kind::noconnection: return "noconnection";
      case exit_kind::out_of_memory: return "out_of_memory";
    }
    return "?";
  }

 private:
  struct payload {
    std::string detail;
    std::exception_ptr error;
    std::shared_ptr<const void> related;
  };

  explicit exit_reason(exit_kind k) noexcept : kind_{k} {}
  exit_reason(exit_kind k, std::string detail);

  static std::string describe(const std::exception_ptr& e);

  static std::string demangle(const char* mangled);

  exit_kind kind_ = exit_kind::normal;
  std::shared_ptr<const payload> payload_;
};

/// Thrown by call, stop and result::value when the operation failed; carries
/// the reason (Erlang's `exit({Reason, {gen_server, call, ...}})`), and
/// what() names the operation that failed when one is known:
/// `otpp::call(<0.5.0> counter, counter::increment, 5000 ms): noproc`.
/// Thrown from a callback (see otpp::exit(reason)), it ends the process with
/// exactly its reason, as Erlang's exit/1 does.
class exit_error : public std::runtime_error {
 public:
  /// what() is "otpp exit: reason".
  explicit exit_error(exit_reason r);
  /// `operation` describes what failed; what() is "operation: reason".
  exit_error(exit_reason r, std::string_view operation);
  /// Copies (as throwing does).
  exit_error(const exit_error&) = default;
  /// Copies.
  exit_error& operator=(const exit_error&) = default;
  ~exit_error() override;
  /// The reason the operation failed.
  [[nodiscard]] const exit_reason& reason() const noexcept { return reason_; }

 private:
  exit_reason reason_;
};

/// Ends the calling process with `reason` (Erlang's exit/1): throws
/// exit_error, which no callback should catch. `normal` and `shutdown` end
/// it quietly (no crash report, no transient restart); terminate runs as
/// after a crash. Outside a process it is an exception like any other.
[[noreturn]] inline void exit(exit_reason reason) { throw exit_error{std::move(reason)}; }

/// A value or the exit_reason that prevented it (std::expected-like, C++20).
template <class T>
class [[nodiscard]] result {
 public:
  /// A value. (An exit_reason always converts to the error; to hold an
  /// exit_reason as the value, as await_exit does, use std::in_place.)
  template <class U = T>
    requires(!std::is_same_v<std::remove_cvref_t<U>, exit_reason> && !std::is_same_v<std::remove_cvref_t<U>, result> &&
             std::is_constructible_v<T, U &&>)
  result(U&& v) : v_{std::in_place_index<0>, std::forward<U>(v)} {}  // NOLINT: implicit like expected
  /// A value made from `a...` in place.
  template <class... A>
  explicit result(std::in_place_t, A&&... a) : v_{std::in_place_index<0>, std::forward<A>(a)...} {}
  /// The error.
  result(exit_reason e) : v_{std::in_place_index<1>, std::move(e)} {}  // NOLINT

  /// Whether it holds a value.
  [[nodiscard]] bool has_value() const noexcept { return v_.index() == 0; }
  /// has_value().
  explicit operator bool() const noexcept { return has_value(); }
  /// The value, or throws exit_error with the reason.
  T& value() & {
    if (!has_value()) throw exit_error{std::get<1>(v_)};
    return std::get<0>(v_);
  }
  /// By value: `for (auto& x : f().value())` must not dangle.
  T value() && {
    if (!has_value()) throw exit_error{std::get<1>(v_)};
    return std::move(std::get<0>(v_));
  }
  /// The value, or throws exit_error with the reason.
  const T& value() const& {
    if (!has_value()) throw exit_error{std::get<1>(v_)};
    return std::get<0>(v_);
  }
  /// @{
  /// The value. Precondition: has_value().
  T& operator*() & noexcept { return std::get<0>(v_); }
  const T& operator*() const& noexcept { return std::get<0>(v_); }
  T* operator->() noexcept { return &std::get<0>(v_); }
  const T* operator->() const noexcept { return &std::get<0>(v_); }
  /// @}
  /// Precondition: !has_value().
  [[nodiscard]] const exit_reason& error() const noexcept { return std::get<1>(v_); }

 private:
  std::variant<T, exit_reason> v_;
};

/// Success, or the exit_reason of a failure (for operations with no value).
template <>
class [[nodiscard]] result<void> {
 public:
  /// Success.
  result() = default;
  /// The error.
  result(exit_reason e) : error_{std::move(e)}, failed_{true} {}  // NOLINT
  /// Whether it succeeded.
  [[nodiscard]] bool has_value() const noexcept { return !failed_; }
  /// has_value().
  explicit operator bool() const noexcept { return !failed_; }
  /// Returns if it succeeded, else throws exit_error with the reason.
  void value() const {
    if (failed_) throw exit_error{error_};
  }
  /// Precondition: !has_value().
  [[nodiscard]] const exit_reason& error() const noexcept { return error_; }

 private:
  exit_reason error_;
  bool failed_ = false;
};

}  // namespace otpp

/// @cond OTPP_INTERNAL
namespace otpp::detail {
// The formatters of otpp's values take "{}" only and write their text as it
// is: a spec-aware formatter would make every translation unit instantiate
// fmt's whole writer (seconds of build time).
struct text_formatter {
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  template <class Ctx>
  static auto write(std::string_view text, Ctx& ctx) {
    auto out = ctx.out();
    for (char c : text) *out++ = c;
    return out;
  }
};
}  // namespace otpp::detail

template <>
struct fmt::formatter<otpp::exit_reason> : otpp::detail::text_formatter {
  template <class Ctx>
  auto format(const otpp::exit_reason& r, Ctx& ctx) const {
    return write(r.to_string(), ctx);
  }
};

/// @endcond

#if OTPP_HEADER_ONLY
#include "detail/exit_reason-inl.hpp"
#endif
