#pragma once
// Processes as values: pid handles, untyped sends, and the current process.
//
// A pid is a counted handle. It stays valid after the process dies (it then
// answers alive() == false, sends to it are dropped and calls fail with
// noproc), so holding a pid never dangles. Equality and ordering follow the
// process identity; pids format as Erlang's `<0.ID.0>`.
//
//   otpp::send(some_pid, tick{});   // delivered to handle_info, see gen_server.hpp

#include <compare>
#include <cstdint>
#include <functional>
#include <string_view>
#include <utility>

#include <fmt/core.h>

#include "detail/process_base.hpp"
#include "detail/runtime_core.hpp"
#include "log.hpp"

namespace otpp {

class pid;

namespace detail {
struct pid_access;
}

class pid {
 public:
  pid() noexcept = default;
  pid(const pid& o) noexcept : p_{o.p_} {
    if (p_) p_->add_ref();
  }
  pid(pid&& o) noexcept : p_{std::exchange(o.p_, nullptr)} {}
  pid& operator=(pid o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~pid() {
    if (p_) p_->release();
  }

  /// False for a default-constructed pid.
  explicit operator bool() const noexcept { return p_ != nullptr; }
  /// Whether the process is still running (a snapshot: it may die right after).
  [[nodiscard]] bool alive() const noexcept { return p_ != nullptr && p_->alive(); }
  /// Unique for the life of the program; 0 for an empty pid.
  [[nodiscard]] std::uint64_t id() const noexcept { return p_ ? p_->id() : 0; }

  friend bool operator==(const pid& a, const pid& b) noexcept { return a.p_ == b.p_; }
  friend std::strong_ordering operator<=>(const pid& a, const pid& b) noexcept { return a.id() <=> b.id(); }

 private:
  friend struct detail::pid_access;
  struct adopt_t {};
  pid(detail::process_base* p, adopt_t) noexcept : p_{p} {}
  detail::process_base* p_ = nullptr;
};

namespace detail {
struct pid_access {
  static process_base* get(const pid& p) noexcept { return p.p_; }
  /// A new handle to `p` (takes a reference).
  static pid make(process_base* p) noexcept {
    if (p) p->add_ref();
    return pid{p, pid::adopt_t{}};
  }
};

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
    if (op == msg_op::invoke) p.dispatch_untyped(self);
    free_node(self);
  }
};
}  // namespace detail

/// The current process, or an empty pid outside any process.
[[nodiscard]] inline pid self() noexcept { return detail::pid_access::make(detail::tls.current); }

/// A view of an untyped message, for a catch-all `handle_info(const otpp::message&)`.
class message {
 public:
  [[nodiscard]] std::string_view type_name() const noexcept { return n_->name; }
  template <class T>
  [[nodiscard]] bool is() const noexcept {
    return n_->type == detail::type_id<T>;
  }
  /// The payload if it is a T, else nullptr.
  template <class T>
  [[nodiscard]] const T* get_if() const noexcept {
    return is<T>() ? static_cast<const T*>(n_->value) : nullptr;
  }

  explicit message(const detail::untyped_node_base* n) noexcept : n_{n} {}

 private:
  const detail::untyped_node_base* n_;
};

/// Sends `msg` to a process's handle_info, matched by type at run time
/// against the info types it declares. Never fails: a message to a dead or
/// empty pid is dropped, as in Erlang.
template <class Msg>
void send(const pid& to, Msg&& msg) {
  detail::process_base* p = detail::pid_access::get(to);
  if (p == nullptr) return;
  using T = std::remove_cvref_t<Msg>;
  p->enqueue(detail::make_node<detail::untyped_node<T>>(std::forward<Msg>(msg)));
}

}  // namespace otpp

template <>
struct std::hash<otpp::pid> {
  std::size_t operator()(const otpp::pid& p) const noexcept { return std::hash<std::uint64_t>{}(p.id()); }
};

template <>
struct fmt::formatter<otpp::pid> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const otpp::pid& p, Ctx& ctx) const {
    char buf[40];
    auto r = fmt::format_to_n(buf, sizeof buf, "<0.{}.0>", p.id());
    return fmt::formatter<std::string_view>::format(std::string_view{buf, r.size}, ctx);
  }
};
