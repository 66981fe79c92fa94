#pragma once
// gen_server<Impl>: a process whose state is an Impl object and whose
// callbacks are Impl's member overloads, found at compile time.
//
//   class counter : public otpp::gen_server<counter> {
//    public:
//     struct increment {};   // call, replies int
//     struct reset {};       // cast
//     explicit counter(int start) : value_{start} {}
//     int  handle_call(increment, otpp::from) { return ++value_; }
//     void handle_cast(reset) { value_ = 0; }
//    private:
//     int value_;
//   };
//
//   auto c = otpp::start<counter>(10).value();   // otpp::server<counter>
//   otpp::call(c, counter::increment{});         // 11
//   otpp::cast(c, counter::reset{});
//   otpp::stop(c);
//
// Callbacks (all optional but the ones you send to; handlers must be public):
//   init()                       runs in the new process before start returns;
//                                returns void or init_result (ok, ignore(),
//                                error(r), stop(r), continue_with(x))
//   R handle_call(Req[, from])   the reply type is R (void replies too)
//   void handle_call(Req, reply_to<Req::reply_type>)
//                                deferred: reply later, from any thread
//   void handle_cast(Msg), handle_info(Msg), handle_continue(T)
//                                (or otpp::async<void>: a coroutine handler)
//   handle_info(const message&)  catch-all for untyped sends
//   handle_info(otpp::timeout)   the idle timeout of set_timeout passed
//   on_hibernate()               drop caches: the process is going to sleep
//   terminate(const exit_reason&)
// Info types matched at run time for untyped sends (send(pid, m)) are listed
// as `using info_types = otpp::type_list<A, B>;`.
//
// Directives, from inside a callback: stop(reason), continue_with(x), self(),
// set_timeout(d) (handle_info(otpp::timeout) after d without a message),
// hibernate() (on_hibernate() runs; the process sleeps till the next message).
//
// Semantics follow OTP's gen_server (docs/semantics.md §1):
// an exception escaping any callback crashes the process with a reason that
// holds it; a crash report is logged; calls pending on it fail at once with
// that reason. Where C++ differs: a call or cast with no matching handler
// does not compile; a caller that is not a process is never killed.

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "async.hpp"
#include "detail/process_base.hpp"
#include "detail/runtime_core.hpp"
#include "exit_reason.hpp"
#include "mailbox.hpp"
#include "process.hpp"
#include "runtime.hpp"

namespace otpp {

// The base of every gen_statem (gen_statem.hpp), whose init is its own. In
// a namespace of its own, with no functions: a base class's namespace joins
// argument-dependent lookup for calls on the machine's handles.
namespace tags {
struct statem {};
}  // namespace tags

template <class... T>
struct type_list {};

/// Delivered to handle_info when the time given to set_timeout passes with
/// no message arriving (Erlang's `timeout`).
struct timeout {};

/// The default call timeout, as in GenServer.call/2.
inline constexpr std::chrono::milliseconds default_call_timeout{5000};

template <class Impl>
class gen_server;
template <class Impl>
class server;

namespace detail {
struct handle_access;
}

/// Identifies the caller of a call, inside a handle_call. A borrowed view:
/// valid only during the handler.
class from {
 public:
  /// The calling process, or an empty pid when the caller is a plain thread.
  [[nodiscard]] pid caller() const noexcept { return detail::pid_access::make(caller_); }

 private:
  friend struct detail::handle_access;
  explicit from(detail::process_base* caller) noexcept : caller_{caller} {}
  detail::process_base* caller_;
};

/// The right to answer a call later, from any thread (GenServer.reply). Copy
/// it freely; the first reply wins, later ones and replies after the caller
/// gave up are no-ops. If the server dies before anyone replies, the caller
/// gets the server's exit reason at once.
template <class R>
class reply_to {
 public:
  /// Returns true if this reply reached the caller.
  template <class... A>
  bool reply(A&&... value) const {
    return slot_ && slot_.get()->set_value(std::forward<A>(value)...);
  }

 private:
  friend struct detail::handle_access;
  explicit reply_to(detail::reply_slot<R>* s) noexcept : slot_{detail::counted<detail::reply_slot<R>>::share(s)} {}
  detail::counted<detail::reply_slot<R>> slot_;
};

namespace detail {
// The runtime's side of the handles a handler receives: only it makes them.
struct handle_access {
  static from make_from(process_base* caller) noexcept { return from{caller}; }
  template <class R>
  static reply_to<R> make_reply_to(reply_slot<R>* s) noexcept {
    return reply_to<R>{s};
  }
  static message make_message(const untyped_node_base* n) noexcept { return message{n}; }
  template <class R>
  static reply_slot<R>* slot_of(const reply_to<R>& r) noexcept {
    return r.slot_.get();
  }
};
}  // namespace detail

/// What init() may return: ok (the default), ignore(), error(r), stop(r), or
/// continue_with(x); see gen_server.
class init_result {
 public:
  /// What init decided.
  enum class kind : unsigned char {
    ok,      ///< started
    ignore,  ///< do not start; start returns ignore, the process exits normal
    error,   ///< do not start; start returns the reason, the process exits normal
    stop,    ///< do not start; the process exits with the reason (a linked caller may die)
  };
  /// ok.
  init_result() noexcept = default;
  /// The outcome `k` with `r` (prefer the gen_server directives ignore(), error(r), stop(r)).
  init_result(kind k, exit_reason r) : kind_{k}, reason_{std::move(r)} {}
  /// What init decided.
  [[nodiscard]] kind outcome() const noexcept { return kind_; }
  /// The reason, for error and stop.
  [[nodiscard]] const exit_reason& reason() const noexcept { return reason_; }

 private:
  kind kind_ = kind::ok;
  exit_reason reason_;
};

// -- what a server accepts -------------------------------------------------------

namespace detail {
template <class Impl, class Req>
concept sync_call_with_from = requires(Impl& i, Req&& r, const from& f) { i.handle_call(std::move(r), f); };
template <class Impl, class Req>
concept sync_call_plain = requires(Impl& i, Req&& r) { i.handle_call(std::move(r)); };
template <class Req>
concept names_reply_type = requires { typename Req::reply_type; };
}  // namespace detail

/// Impl answers Req synchronously: `R handle_call(Req[, from])`.
template <class Impl, class Req>
concept handles_sync_call = detail::sync_call_with_from<Impl, Req> || detail::sync_call_plain<Impl, Req>;

/// Impl answers Req later: `void handle_call(Req, reply_to<Req::reply_type>)`.
template <class Impl, class Req>
concept handles_deferred_call = detail::names_reply_type<Req> &&
    requires(Impl& i, Req&& r, reply_to<typename Req::reply_type> t) { i.handle_call(std::move(r), std::move(t)); };

namespace detail {
/// A call's reply slot, lent to one handler with the call's reference to it
/// (gen_statem's calls: the machine keeps a reference of its own, and
/// tracks the call, only if it must answer later). `handed`: the reference
/// went to the caller with the reply, and the slot may be gone.
template <class R>
struct borrowed_reply {
  reply_slot<R>* slot;
  bool handed = false;
};
template <class Impl, class Req>
concept handles_borrowed_call = names_reply_type<Req> &&
    requires(Impl& i, Req&& r, borrowed_reply<typename Req::reply_type>& b) { i.handle_call(std::move(r), b); };
}  // namespace detail

template <class Impl, class Req>
concept handles_call =
    handles_sync_call<Impl, Req> || handles_deferred_call<Impl, Req> || detail::handles_borrowed_call<Impl, Req>;

/// Impl promises that none of its callbacks blocks or runs long (no sleeps,
/// no waits, no calls to other processes): `static constexpr bool
/// nonblocking_handlers = true;`. A caller may then run the server's turn on
/// its own thread whatever its timeout: a call to it while idle runs the
/// handler inline (tens of nanoseconds instead of microseconds: no hand-over
/// to another core), and a caller waiting on it may run the messages queued
/// ahead of its own. A finite timeout still bounds the wait for a server
/// that is busy elsewhere, but not the server's own running time, which the
/// promise keeps short.
template <class Impl>
concept declares_nonblocking_handlers = requires { requires static_cast<bool>(Impl::nonblocking_handlers); };

/// Impl lets its coroutine handlers be interleaved: `static constexpr bool
/// reentrant_handlers = true;`. While a handler waits (an awaited call, a
/// sleep, a task, in the handler or in any helper it awaits), the process
/// handles other messages, as if every wait were wrapped in
/// otpp::reentrant. See there for what that does to ordering.
template <class Impl>
concept declares_reentrant_handlers = requires { requires static_cast<bool>(Impl::reentrant_handlers); };

template <class Impl, class Msg>
concept handles_cast = requires(Impl& i, Msg&& m) { i.handle_cast(std::move(m)); };

template <class Impl, class Msg>
concept handles_info = requires(Impl& i, Msg&& m) { i.handle_info(std::move(m)); };

namespace detail {

template <class Impl, class Req>
decltype(auto) invoke_sync(Impl& i, Req&& r, const from& f) {
  if constexpr (sync_call_with_from<Impl, Req>) {
    return i.handle_call(std::move(r), f);
  } else {
    return i.handle_call(std::move(r));
  }
}

template <class Impl, class Req>
struct call_reply {
  using type = typename Req::reply_type;
};
template <class Impl, class Req>
  requires handles_sync_call<Impl, Req>
struct call_reply<Impl, Req> {
  // An async<R> handler (a coroutine) replies R.
  using type = unwrap_async_t<
      std::decay_t<decltype(invoke_sync(std::declval<Impl&>(), std::declval<Req>(), std::declval<const from&>()))>>;
};

/// Impl answers Req with a coroutine: `async<R> handle_call(Req[, from])`.
template <class Impl, class Req>
concept handles_async_call =
    handles_sync_call<Impl, Req> &&
    is_async_v<std::decay_t<decltype(invoke_sync(std::declval<Impl&>(), std::declval<Req>(), std::declval<const from&>()))>>;

/// A cast, info or continue handler that was a coroutine finished: an
/// exception that left it crashes the process, as any callback's.
inline void finish_async_handler(process_base& p, awaiting_handler& h) noexcept {
  auto co = std::coroutine_handle<async_promise<void>>::from_address(h.top.address());
  if (co.promise().error) p.crash(co.promise().error, h.msg_type, h.kind);
  co.destroy();
}

/// Runs a callback `f` (handle_cast, handle_info, handle_continue); one that
/// returns async<void> starts as a coroutine the process drives. A throw
/// before it first suspends reaches the caller's crash handling.
template <class F>
void run_callback(process_base& p, F&& f, std::string_view msg_type, std::string_view kind) {
  using ret = decltype(std::forward<F>(f)());
  if constexpr (is_async_v<ret>) {
    static_assert(std::is_same_v<ret, async<void>>, "a coroutine cast, info or continue handler returns otpp::async<void>");
    p.wait_state();  // where a suspended handler is kept: allocated before it starts
    ret task = std::forward<F>(f)();
    p.run_handler(awaiting_handler{async_access::release(task), &finish_async_handler, nullptr, nullptr, msg_type, kind});
  } else {
    static_assert(std::is_void_v<ret>,
                  "a cast, info or continue handler returns void (or otpp::async<void>): what it returned would be lost");
    std::forward<F>(f)();
  }
}

template <class Impl>
init_result run_statem_init(Impl& impl);
/// A state machine's mailbox ran dry: its event timeout starts counting.
template <class Impl>
void statem_mailbox_dry(Impl& impl) noexcept;
/// "state door_open": what sys::format_state shows of a state machine
/// without a formatter of its own.
template <class Impl>
std::string statem_state_label(const Impl& impl);

template <class Impl>
concept has_init = requires(Impl& i) { i.init(); };
template <class Impl>
concept has_terminate = requires(Impl& i, const exit_reason& r) { i.terminate(r); };
template <class Impl>
concept has_catch_all_info = requires(Impl& i, const message& m) { i.handle_info(m); };
template <class Impl>
concept declares_info_types = requires { typename Impl::info_types; };
template <class Impl>
concept has_on_hibernate = requires(Impl& i) { i.on_hibernate(); };

template <class Impl>
class process_of;

}  // namespace detail

/// The reply type of calling Impl with Req.
template <class Impl, class Req>
  requires handles_call<Impl, Req>
using call_reply_t = typename detail::call_reply<Impl, Req>::type;

// -- server<Impl> ----------------------------------------------------------------

namespace detail {
struct server_access;
}

/// A typed handle to a gen_server<Impl>: calls and casts to it are checked
/// against Impl's handlers at compile time. Converts to pid. Made by start,
/// self(), whereis<Impl>, or from a pid by otpp::server_cast<Impl>, which
/// checks the process's type: a handle never names a process of another type.
template <class Impl>
class server {
 public:
  /// An empty handle.
  server() noexcept = default;
  /// The process's pid.
  [[nodiscard]] const otpp::pid& pid() const noexcept { return pid_; }
  /// A server is a pid: it converts wherever a pid is expected.
  operator const otpp::pid&() const noexcept { return pid_; }  // NOLINT: a server is a pid
  /// False for an empty handle.
  explicit operator bool() const noexcept { return static_cast<bool>(pid_); }
  /// Whether the process is still running (a snapshot).
  [[nodiscard]] bool alive() const noexcept { return pid_.alive(); }
  /// The pid's id.
  [[nodiscard]] std::uint64_t id() const noexcept { return pid_.id(); }
  friend bool operator==(const server& a, const server& b) noexcept { return a.pid_ == b.pid_; }

 private:
  friend struct detail::server_access;
  explicit server(otpp::pid p) noexcept : pid_{std::move(p)} {}
  otpp::pid pid_;
};

namespace detail {
/// For otpp's own code, which knows the process's type.
struct server_access {
  template <class Impl>
  static server<Impl> make(pid p) noexcept {
    return server<Impl>{std::move(p)};
  }
  /// The handle's pid, moved out (no reference taken).
  template <class Impl>
  static pid take_pid(server<Impl>&& s) noexcept {
    return std::move(s.pid_);
  }
};
}  // namespace detail

/// The server<Impl> handle for `p`, if its process is a gen_server<Impl>
/// (dead or alive: a handle to a dead server answers noproc); noproc for an
/// empty pid; error("wrong_type: ...") naming both types otherwise.
template <class Impl>
[[nodiscard]] result<server<Impl>> server_cast(const pid& p) {
  detail::process_base* proc = detail::pid_access::get(p);
  if (proc == nullptr) return exit_reason::noproc();
  if (proc->impl_type() != detail::type_id<Impl>) {
    return exit_reason::error(fmt::format("wrong_type: {} is a {}, not a {}", p, proc->type_name(), detail::type_name<Impl>()));
  }
  return detail::server_access::make<Impl>(p);
}

// -- the typed half of a process ---------------------------------------------------

namespace detail {

template <class Impl>
class process_of final : public process_base {
 public:
  static constexpr std::size_t impl_offset =
      (sizeof(process_base) + alignof(Impl) - 1) / alignof(Impl) * alignof(Impl);
  // Rounded to whole cache lines so pooled blocks are line-aligned and the
  // header's sender line and consumer line never share (see process_base).
  static constexpr std::size_t alloc_size = (impl_offset + sizeof(Impl) + cache_line - 1) / cache_line * cache_line;
  static constexpr bool pooled = alignof(Impl) <= cache_line && alloc_size <= pool_max_size && !pool_through_new;
  static constexpr std::size_t alloc_align = alignof(Impl) > cache_line ? alignof(Impl) : cache_line;

  static process_of* allocate(runtime_core* rt) {
    static_assert(sizeof(process_of) == sizeof(process_base), "process_of adds no data members");
    void* m = pooled ? pool_allocate(alloc_size) : ::operator new(alloc_size, std::align_val_t{alloc_align});
    return ::new (m) process_of(rt);
  }

  void* impl_storage() noexcept { return reinterpret_cast<char*>(this) + impl_offset; }
  Impl& impl() noexcept { return *std::launder(static_cast<Impl*>(impl_storage())); }
  static process_of* from_impl(const Impl* i) noexcept {
    return reinterpret_cast<process_of*>(reinterpret_cast<char*>(const_cast<Impl*>(i)) - impl_offset);
  }

  void dispatch_untyped(message_node* n) noexcept override {
    auto* u = static_cast<untyped_node_base*>(n);
    try {
      bool handled = false;
      if constexpr (declares_info_types<Impl>) handled = dispatch_listed(u, typename Impl::info_types{});
      if (!handled) {
        if constexpr (has_catch_all_info<Impl>) {
          impl().handle_info(handle_access::make_message(u));
        } else {
          log_dropped(u->name);
        }
      }
    } catch (...) {
      crash(std::current_exception(), u->name, "info");
    }
  }

  void run_terminate(exit_reason& reason) noexcept override {
    if constexpr (has_terminate<Impl>) {
      try {
        impl().terminate(std::as_const(reason));
      } catch (...) {
        reason = exit_reason::of_exception(std::current_exception());
      }
    }
  }

  void destroy_state() noexcept override { impl().~Impl(); }

  void dispatch_info(exit_signal& m) noexcept override { dispatch_system(m); }
  void dispatch_info(down& m) noexcept override { dispatch_system(m); }
  void dispatch_timeout() noexcept override {
    timeout t;
    dispatch_system(t);
  }
  void run_on_hibernate() noexcept override {
    if constexpr (has_on_hibernate<Impl>) {
      try {
        impl().on_hibernate();
      } catch (...) {
        crash(std::current_exception(), "hibernate", "hibernate");
      }
    }
  }
  void run_mailbox_dry() noexcept override {
    if constexpr (std::is_base_of_v<tags::statem, Impl>) statem_mailbox_dry(impl());
  }
  [[nodiscard]] std::string_view type_name() const noexcept override { return detail::type_name<Impl>(); }
  [[nodiscard]] const void* impl_type() const noexcept override { return type_id<Impl>; }
  [[nodiscard]] std::size_t object_bytes() const noexcept override { return alloc_size; }
  bool format_state(std::string& out) override {
    if constexpr (fmt::is_formattable<Impl>::value) {
      out = fmt::format("{}", std::as_const(impl()));
      return true;
    } else if constexpr (std::is_base_of_v<tags::statem, Impl>) {
      out = statem_state_label(std::as_const(impl()));
      return true;
    } else {
      out.clear();
      return false;
    }
  }


 private:
  explicit process_of(runtime_core* rt) noexcept : process_base{rt} {
    if constexpr (declares_reentrant_handlers<Impl>) make_handlers_reentrant();
  }

  template <class... T>
  bool dispatch_listed(untyped_node_base* u, type_list<T...>) {
    static_assert((handles_info<Impl, T> && ...), "every type in Impl::info_types needs a handle_info overload");
    return ((u->type == type_id<T> ? (run_callback(
                                          *this, [&]() -> decltype(auto) { return impl().handle_info(std::move(*static_cast<T*>(u->value))); },
                                          u->name, "info"),
                                      true)
                                   : false) ||
            ...);
  }

  // Erlang's default handle_info: log and drop what nothing handles.

  template <class T>
  void dispatch_system(T& m) noexcept {
    try {
      if constexpr (handles_info<Impl, T>) {
        run_callback(*this, [&]() -> decltype(auto) { return impl().handle_info(std::move(m)); }, detail::type_name<T>(), "info");
      } else if constexpr (has_catch_all_info<Impl>) {
        untyped_node_base view;
        view.type = type_id<T>;
        view.name = detail::type_name<T>();
        view.value = &m;
        impl().handle_info(handle_access::make_message(&view));
      } else {
        log_dropped(detail::type_name<T>());
      }
    } catch (...) {
      crash(std::current_exception(), detail::type_name<T>(), "info");
    }
  }

  void deallocate_self() noexcept override {
    process_of* p = this;
    p->~process_of();
    if constexpr (pooled) {
      pool_deallocate(p, alloc_size);
    } else {
      ::operator delete(p, std::align_val_t{alloc_align});
    }
  }
};

template <class Impl>
Impl& impl_of(process_base& p) noexcept {
  return static_cast<process_of<Impl>&>(p).impl();
}

// A message for one of the server's handlers, by kind: handle_cast,
// handle_info or handle_continue. A throw from the handler crashes the
// process with the message's type in the report.
struct cast_kind {
  static constexpr std::string_view name = "cast";
  template <class Impl, class M>
  static decltype(auto) run(Impl& impl, M&& m) {
    return impl.handle_cast(std::forward<M>(m));
  }
};
struct info_kind {
  static constexpr std::string_view name = "info";
  template <class Impl, class M>
  static decltype(auto) run(Impl& impl, M&& m) {
    return impl.handle_info(std::forward<M>(m));
  }
};
struct continue_kind {
  static constexpr std::string_view name = "continue";
  template <class Impl, class M>
  static decltype(auto) run(Impl& impl, M&& m) {
    return impl.handle_continue(std::forward<M>(m));
  }
};

template <class Impl, class Kind, class Msg>
struct handler_node final : message_node {
  template <class U>
  explicit handler_node(U&& m) : msg{std::forward<U>(m)} {
    fn = &handle;
  }
  Msg msg;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<handler_node*>(n);
    if constexpr (!std::is_same_v<Kind, continue_kind>) {
      if (op == msg_op::invoke && p.evict_taken(false)) op = msg_op::discard;  // overflow::drop_oldest
    }
    if (op == msg_op::invoke) {
      try {
        run_callback(
            p, [&]() -> decltype(auto) { return Kind::run(impl_of<Impl>(p), std::move(self->msg)); }, type_name<Msg>(),
            Kind::name);
      } catch (...) {
        p.crash(std::current_exception(), type_name<Msg>(), Kind::name);
      }
    }
    free_node(self);
  }
};
template <class Impl, class Msg>
using cast_node = handler_node<Impl, cast_kind, Msg>;
template <class Impl, class Msg>
using info_node = handler_node<Impl, info_kind, Msg>;
template <class Impl, class Arg>
using continue_node = handler_node<Impl, continue_kind, Arg>;

/// A reply held back until terminate has run (handle_call returned a reply
/// and asked to stop: OTP runs terminate first, then replies).
template <class R>
struct held_reply_node final : message_node {
  template <class... A>
  explicit held_reply_node(reply_slot<R>* s, A&&... v) : slot{s}, value{std::forward<A>(v)...} {
    fn = &handle;
    slot->add_ref();
  }
  reply_slot<R>* slot;
  R value;
  static void handle(process_base&, message_node* n, msg_op, const exit_reason*) noexcept {
    auto* self = static_cast<held_reply_node*>(n);
    self->slot->set_value(std::move(self->value));
    self->slot->release();
    free_node(self);
  }
};
template <>
struct held_reply_node<void> final : message_node {
  explicit held_reply_node(reply_slot<void>* s) : slot{s} {
    fn = &handle;
    slot->add_ref();
  }
  reply_slot<void>* slot;
  static void handle(process_base&, message_node* n, msg_op, const exit_reason*) noexcept {
    auto* self = static_cast<held_reply_node*>(n);
    self->slot->set_value();
    self->slot->release();
    free_node(self);
  }
};

/// A coroutine handle_call finished: reply (after terminate if it asked to
/// stop), or crash and fail the call with the final reason.
template <class R>
void finish_call(process_base& p, awaiting_handler& h) noexcept {
  auto co = std::coroutine_handle<async_promise<R>>::from_address(h.top.address());
  auto& promise = co.promise();
  auto* slot = static_cast<reply_slot<R>*>(h.slot);
  if (promise.error) {
    p.call_crashed(promise.error, h.msg_type, slot);
  } else {
    try {
      if constexpr (std::is_void_v<R>) {
        if (p.exit_requested()) {
          p.hold_reply(make_node<held_reply_node<void>>(slot));
        } else {
          p.mark_replied();
          slot->set_value();
        }
      } else {
        if (p.exit_requested()) {
          p.hold_reply(make_node<held_reply_node<R>>(slot, std::move(*promise.value)));
        } else {
          p.mark_replied();
          slot->set_value(std::move(*promise.value));
        }
      }
    } catch (...) {
      p.call_crashed(std::current_exception(), h.msg_type, slot);
    }
  }
  co.destroy();
  slot->release();
  if (h.caller) h.caller->release();
}

template <class Impl, class Req, class R>
struct call_node final : message_node {
  template <class U>
  // The caller is kept (a reference) only for a handler that takes `from`:
  // nothing else reads it, and the reference is two atomic operations on
  // the caller's line per call.
  call_node(U&& r, reply_slot<R>* s, process_base* c)
      : req{std::forward<U>(r)}, slot{s}, caller{sync_call_with_from<Impl, Req> ? c : nullptr} {
    fn = &handle;
    if (caller) caller->add_ref();
  }
  Req req;
  reply_slot<R>* slot;
  process_base* caller;

  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason* why) noexcept {
    auto* self = static_cast<call_node*>(n);
    if (op == msg_op::invoke && p.evict_taken(true)) {  // overflow::drop_oldest
      static const exit_reason full = exit_reason::mailbox_full();
      op = msg_op::discard;
      why = &full;
    }
    if (op == msg_op::invoke) {
      Impl& impl = impl_of<Impl>(p);
      try {
        if constexpr (handles_async_call<Impl, Req>) {
          p.wait_state();  // where a suspended handler is kept: allocated before it starts
          auto task = invoke_sync(impl, std::move(self->req), handle_access::make_from(self->caller));
          // The handler owns the reply slot and the caller's reference now,
          // and with the slot this node's memory (make_call): the node goes
          // first, as the handler may be done with the slot before it returns.
          reply_slot<R>* const slot = std::exchange(self->slot, nullptr);
          process_base* const caller = std::exchange(self->caller, nullptr);
          self->~call_node();
          p.run_handler(awaiting_handler{async_access::release(task), &finish_call<R>, slot, caller, type_name<Req>(), "call"});
          return;
        } else if constexpr (handles_sync_call<Impl, Req>) {
          const from f = handle_access::make_from(self->caller);
          if constexpr (std::is_void_v<R>) {
            invoke_sync(impl, std::move(self->req), f);
            if (p.exit_requested()) {
              p.hold_reply(make_node<held_reply_node<void>>(self->slot));
            } else {
              p.mark_replied();
              answer_last(self);
              return;
            }
          } else {
            R r = invoke_sync(impl, std::move(self->req), f);
            if (p.exit_requested()) {
              p.hold_reply(make_node<held_reply_node<R>>(self->slot, std::move(r)));
            } else {
              p.mark_replied();
              if constexpr (std::is_nothrow_move_constructible_v<R>) {
                answer_last(self, std::move(r));
                return;
              } else {
                self->slot->set_value(std::move(r));
              }
            }
          }
        } else if constexpr (handles_borrowed_call<Impl, Req>) {
          // The node goes first, as for a plain handler's reply (answer_last):
          // the handler's reply may take the slot, and the node's memory, with it.
          Req req = std::move(self->req);
          borrowed_reply<R> to{finish(self)};
          try {
            impl.handle_call(std::move(req), to);
          } catch (...) {
            p.call_crashed(std::current_exception(), type_name<Req>(), to.slot);
          }
          if (!to.handed) to.slot->release();
          return;
        } else {
          p.track_deferred(self->slot);
          impl.handle_call(std::move(self->req), handle_access::make_reply_to<R>(self->slot));
        }
      } catch (...) {
        p.call_crashed(std::current_exception(), type_name<Req>(), self->slot);
      }
    } else {
      self->slot->fail(*why);
    }
    if (reply_slot<R>* const s = finish(self)) s->release();
  }

  // The node lives in its slot's block (make_call): gone, it leaves the
  // memory to the slot, whose last reference frees both. Done before the
  // answer, which may hand the block to the caller.
  // The node's last act: the reply, which may take the slot's reference
  // with it to the caller.
  template <class... A>
  static void answer_last(call_node* self, A&&... a) noexcept {
    reply_slot<R>* const s = finish(self);
    if (!s->set_value_handing(std::forward<A>(a)...)) s->release();
  }
  static reply_slot<R>* finish(call_node* self) noexcept {
    if (self->caller) self->caller->release();
    reply_slot<R>* const s = self->slot;
    self->~call_node();
    return s;
  }
};

/// A call's request and its reply slot, in one block (see reply_slot::make_with).
template <class Impl, class Req, class R, class U>
std::pair<reply_slot<R>*, call_node<Impl, Req, R>*> make_call(U&& req, process_base* caller) {
  using node = call_node<Impl, Req, R>;
  return reply_slot<R>::template make_with<node>(
      [&](void* where, reply_slot<R>* slot) { return ::new (where) node(std::forward<U>(req), slot, caller); });
}

}  // namespace detail

namespace detail {
/// An idle time for set_timeout / hibernate_after in ns; -1 for infinity
/// (never), negative durations count as zero.
inline std::int64_t idle_ns(std::chrono::steady_clock::duration d) noexcept {
  if (d == infinity) return -1;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(d, std::chrono::steady_clock::duration::zero()))
      .count();
}
}  // namespace detail

// -- the base class ----------------------------------------------------------------

/// CRTP base of every server: `class my_server : public otpp::gen_server<my_server>`.
/// Its protected members are the directives a callback may give.
///
/// @code
/// class counter : public otpp::gen_server<counter> {
///  public:
///   struct increment {};                       // a call: replies int
///   struct reset {};                           // a cast
///   explicit counter(int start) : value_{start} {}
///   int handle_call(increment) { return ++value_; }
///   void handle_cast(reset) { value_ = 0; }
///  private:
///   int value_;
/// };
/// auto c = otpp::start_link<counter>(10).value();
/// otpp::call(c, counter::increment{});  // 11
/// @endcode
template <class Impl>
class gen_server {
 protected:
  gen_server() noexcept = default;

  /// This server's own handle. Valid in the constructor and every callback.
  [[nodiscard]] server<Impl> self() const noexcept {
    return detail::server_access::make<Impl>(detail::pid_access::make(proc()));
  }

  /// Exit with `reason` when the current callback returns (terminate runs;
  /// a reply returned by this handle_call is still sent, after terminate).
  /// In init: start fails with `reason`, terminate does not run.
  init_result stop(exit_reason reason = {}) {
    proc()->request_exit(reason, true);
    return init_result{init_result::kind::stop, std::move(reason)};
  }

  /// Run handle_continue(arg) before any other message (in init: after start
  /// has returned).
  template <class T>
  init_result continue_with(T&& arg) {
    using A = std::remove_cvref_t<T>;
    static_assert(requires(Impl& i, A a) { i.handle_continue(std::move(a)); },
                  "continue_with(x) needs a handle_continue overload for x's type");
    proc()->set_continuation(detail::make_node<detail::continue_node<Impl, A>>(std::forward<T>(arg)));
    return {};
  }

  /// Trap exit signals: they arrive as handle_info(const otpp::exit_signal&)
  /// instead of killing this process (except `kill`). An exit signal from
  /// the parent (the process that start_link-ed this one) makes it run
  /// terminate and exit with that reason.
  void trap_exit(bool on = true) noexcept { proc()->set_trap_exit(on); }

  /// When this callback returns, wait at most `d` for a message: if none
  /// comes, handle_info(otpp::timeout) runs. Any message cancels it (re-arm
  /// it from that message's callback); so does a message already waiting.
  /// `otpp::infinity` clears it. In init: `return set_timeout(d);`.
  init_result set_timeout(std::chrono::steady_clock::duration d) {
    static_assert(handles_info<Impl, timeout> || detail::has_catch_all_info<Impl>,
                  "set_timeout needs a handle_info(otpp::timeout) overload");
    proc()->request_timeout(detail::idle_ns(d));
    return {};
  }

  /// When this callback returns and no message is waiting, release what can
  /// be released (Impl::on_hibernate() if it exists, spare internal capacity)
  /// and sleep until the next message. Replaces a set_timeout of the same
  /// callback, and the other way round.
  init_result hibernate() {
    proc()->request_hibernate();
    return {};
  }

  /// init only: do not start; start returns exit_kind::ignore.
  static init_result ignore() { return init_result{init_result::kind::ignore, exit_reason::ignore()}; }
  /// init only: do not start; start returns `reason`; exits normally.
  static init_result error(exit_reason reason) { return init_result{init_result::kind::error, std::move(reason)}; }

 private:
  detail::process_of<Impl>* proc() const noexcept {
    return detail::process_of<Impl>::from_impl(static_cast<const Impl*>(this));
  }
};

// -- starting --------------------------------------------------------------------------

namespace detail {

// start_link's link between caller and child, and its undoing when init
// fails (gen_server-inl.hpp). link_parent's reference to the child is one
// the child was born with.
void link_parent(process_base* parent, process_base* child);
void unlink_parent_side(process_base* parent, process_base* child) noexcept;
void unlink_child_side(process_base* parent, process_base* child) noexcept;
void unlink_parent(process_base* parent, process_base* child) noexcept;

/// No name: registration always succeeds.
struct no_registration {
  std::optional<exit_reason> operator()(process_base*) const noexcept { return std::nullopt; }
};

/// A local name (otpp::name, otpp::named).
struct local_registration {
  std::string name;
  const void* type;
  std::optional<exit_reason> operator()(process_base* p) { return register_local_name(p, std::move(name), type); }
};

/// Start options other than the name.
struct start_options {
  std::int64_t hibernate_after = -1;  // ns; negative: never
  std::optional<bounded_mailbox_t> mailbox;  // unbounded if empty
  steady::duration start_timeout = steady::duration::max();  // infinity: init runs on the starter's stack
};

/// How init ended, for a starter that waits with a start timeout.
struct init_outcome {
  init_result::kind kind = init_result::kind::ok;
  exit_reason reason;
};

// Runs Impl::init as the process (owner) and settles what it asked for:
// returns the outcome; on stop or a crash the exit is pending (no terminate).
template <class Impl>
init_outcome run_init(process_of<Impl>* p, process_base* parent) noexcept {
  init_result res;
  if constexpr (std::is_base_of_v<tags::statem, Impl>) {
    try {
      res = run_statem_init(p->impl());
    } catch (...) {
      p->crash(std::current_exception(), "init", "init");
    }
  } else if constexpr (has_init<Impl>) {
    try {
      if constexpr (std::is_void_v<decltype(p->impl().init())>) {
        p->impl().init();
      } else {
        res = p->impl().init();
      }
    } catch (...) {
      p->crash(std::current_exception(), "init", "init");
    }
  }
  if (p->exit_requested()) {
    // init crashed or returned stop(r): exit with that reason, no terminate.
    p->suppress_terminate();
    if (parent != nullptr) unlink_child_side(parent, p);
    return {init_result::kind::stop, p->cold_state().exit};
  }
  if (res.outcome() == init_result::kind::ignore || res.outcome() == init_result::kind::error) {
    if (parent != nullptr) unlink_child_side(parent, p);
    p->request_exit(exit_reason::normal(), false);
    return {res.outcome(), res.reason()};
  }
  return {};
}

// The starter's side of a failed init: OTP kills a linked caller that does
// not trap exits when init stopped or crashed.
exit_reason init_failed(process_base* parent, process_base* child, const init_outcome& out) noexcept;

/// Runs init as the process, for one server type (run_init behind a
/// type-independent signature).
using init_fn = init_outcome (*)(process_base* p, process_base* parent) noexcept;
template <class Impl>
init_outcome init_of(process_base* p, process_base* parent) noexcept {
  return run_init<Impl>(static_cast<process_of<Impl>*>(p), parent);
}

/// The type-independent half of start (one copy, not one per server type),
/// once the Impl is constructed: links `parent` (the child's reference the
/// link holds is one it was born with), runs `init` (here, or on a
/// worker while the starter waits up to `start_timeout` if that is finite)
/// and settles the outcome. True if the process is started; otherwise the
/// reason start returns is in `failure`.
bool settle_start(process_base* p, process_base* parent, steady::duration start_timeout, init_fn init,
                  exit_reason& failure);
/// A process that never ran init (its name refused, or its constructor
/// threw) goes quietly: no terminate, no exit signal.
void discard_unstarted(process_base* p) noexcept;

template <class Impl, class Registrar, class... Args>
result<server<Impl>> start_in(runtime_core& rt, bool link, start_options opts, Registrar&& registrar, Args&&... args) {
  static_assert(std::is_base_of_v<gen_server<Impl>, Impl>, "a server type must derive from otpp::gen_server<itself>");
  constexpr bool constructible = std::is_constructible_v<Impl, Args&&...>;
  static_assert(std::is_constructible_v<Impl, Args&&...>,
                "otpp::start: the server type has no public constructor taking these arguments (start options such "
                "as otpp::name(...) come first; the arguments after them construct the server)");
  if (rt.closed()) return exit_reason::shutdown("runtime stopped");
  process_base* const parent = link ? tls().current : nullptr;
  auto* p = process_of<Impl>::allocate(&rt);
  if (opts.mailbox) {
    // Before the process can be seen (registered, named): senders read the bound unsynchronised.
    try {
      p->set_bound(*opts.mailbox);
    } catch (...) {
      rt.register_process(p);  // the way every unstarted process goes
      discard_unstarted(p);
      throw;
    }
  }
  // Born with the references its start hands out: the returned handle's and
  // the parent's link's (settle_start).
  const std::uint32_t handed = parent != nullptr ? 2 : 1;
  p->set_birth_refs(1 + handed);
  rt.register_process(p);
  // The name is registered before the Impl exists: on a clash no user code runs.
  std::optional<exit_reason> refused;
  try {
    if (opts.hibernate_after >= 0) p->set_hibernate_after(opts.hibernate_after);
    refused = registrar(p);
  } catch (...) {
    refused = exit_reason::of_exception(std::current_exception());
  }
  if (refused) {
    p->release_refs(handed);
    discard_unstarted(p);
    return std::move(*refused);
  }
  {
    current_scope scope{p};
    try {
      if constexpr (constructible) ::new (p->impl_storage()) Impl(std::forward<Args>(args)...);
    } catch (...) {
      auto why = exit_reason::of_exception(std::current_exception());
      p->release_refs(handed);
      discard_unstarted(p);  // releases the name; the Impl never existed
      return why;
    }
    p->mark_constructed();
  }
  server<Impl> ref = server_access::make<Impl>(pid_access::adopt(p));
  exit_reason failure;
  if (!settle_start(p, parent, opts.start_timeout, &init_of<Impl>, failure)) return failure;
  return ref;
}

}  // namespace detail

/// Registers the process under `value` (Erlang's local name), before init
/// runs; released when it exits. Pass as the first argument of start:
/// `otpp::start<cache>(otpp::name("cache"), args...)`.
struct name_t {
  std::string value;  ///< The name.
};
/// The start option naming a process `n`.
[[nodiscard]] inline name_t name(std::string n) { return name_t{std::move(n)}; }
/// Registers the process under its type's name (Elixir's `name: __MODULE__`):
/// `otpp::start<cache>(otpp::named)`, then `otpp::call<cache>(req)`.
struct named_t {};
/// The start option naming a process after its type.
inline constexpr named_t named{};

/// Start option: hibernate after `d` without a message, unless a timeout is
/// pending (Elixir's `hibernate_after:`). Options go after the name, if any:
/// `otpp::start<cache>(otpp::name("cache"), otpp::hibernate_after(5s), args...)`.
struct hibernate_after_t {
  std::chrono::steady_clock::duration value;  ///< The idle time before hibernating.
};
/// The hibernate_after start option.
[[nodiscard]] inline hibernate_after_t hibernate_after(std::chrono::steady_clock::duration d) { return {d}; }

/// Start option: init must finish within `d` (GenServer.start's `timeout:`):
/// it then runs on a worker while the starter waits, and if it is slower,
/// start returns `timeout` and the process is killed (as init returns: C++
/// cannot interrupt it). Without it, init runs on the starter's thread.
/// Negative: std::invalid_argument.
struct start_timeout_t {
  std::chrono::steady_clock::duration value;  ///< The time init may take.
};
/// The start_timeout start option.
[[nodiscard]] inline start_timeout_t start_timeout(std::chrono::steady_clock::duration d) { return {d}; }

namespace detail {
template <class T>
inline constexpr bool is_start_option = std::is_same_v<T, name_t> || std::is_same_v<T, named_t> ||
                                        std::is_same_v<T, hibernate_after_t> || std::is_same_v<T, start_timeout_t> ||
                                        std::is_same_v<T, bounded_mailbox_t>;

// A via (otpp::via, registry.hpp) registers the new process itself; its
// register_for is private, reached through here.
struct registrar_access {
  template <class Via>
  static auto register_for(Via& v, process_base* p) -> decltype(v.register_for(p)) {
    return v.register_for(p);
  }
};
template <class T>
concept names_at_start = requires(T& v, process_base* p) { registrar_access::register_for(v, p); };

template <class Impl, class Registrar, class... Args>
result<server<Impl>> start_opts(runtime_core& rt, bool link, start_options o, Registrar&& r, Args&&... args) {
  static_assert(!(is_start_option<std::remove_cvref_t<Args>> || ...),
                "otpp::start: options go first, the name before the others");
  return start_in<Impl>(rt, link, o, std::forward<Registrar>(r), std::forward<Args>(args)...);
}
template <class Impl, class Registrar, class... Args>
result<server<Impl>> start_opts(runtime_core& rt, bool link, start_options o, Registrar&& r, hibernate_after_t h,
                                Args&&... args) {
  o.hibernate_after = idle_ns(h.value);
  return start_opts<Impl>(rt, link, o, std::forward<Registrar>(r), std::forward<Args>(args)...);
}
template <class Impl, class Registrar, class... Args>
result<server<Impl>> start_opts(runtime_core& rt, bool link, start_options o, Registrar&& r, bounded_mailbox_t m,
                                Args&&... args) {
  o.mailbox = m;
  return start_opts<Impl>(rt, link, o, std::forward<Registrar>(r), std::forward<Args>(args)...);
}
template <class Impl, class Registrar, class... Args>
result<server<Impl>> start_opts(runtime_core& rt, bool link, start_options o, Registrar&& r, start_timeout_t t,
                                Args&&... args) {
  check_timeout(t.value, "otpp::start");
  o.start_timeout = t.value;
  return start_opts<Impl>(rt, link, o, std::forward<Registrar>(r), std::forward<Args>(args)...);
}

template <class Impl, class... Args>
result<server<Impl>> start_with(runtime_core& rt, bool link, Args&&... args) {
  return start_opts<Impl>(rt, link, start_options{}, no_registration{}, std::forward<Args>(args)...);
}
template <class Impl, class... Args>
result<server<Impl>> start_with(runtime_core& rt, bool link, name_t n, Args&&... args) {
  return start_opts<Impl>(rt, link, start_options{}, local_registration{std::move(n.value), type_id<Impl>},
                          std::forward<Args>(args)...);
}
template <class Impl, class... Args>
result<server<Impl>> start_with(runtime_core& rt, bool link, named_t, Args&&... args) {
  return start_opts<Impl>(rt, link, start_options{}, local_registration{std::string{type_name<Impl>()}, type_id<Impl>},
                          std::forward<Args>(args)...);
}
/// A via (otpp::via) names a process through a registry of its own.
template <class Impl, class Via, class... Args>
  requires names_at_start<Via>
result<server<Impl>> start_with(runtime_core& rt, bool link, Via v, Args&&... args) {
  return start_opts<Impl>(
      rt, link, start_options{}, [&v](process_base* p) { return registrar_access::register_for(v, p); },
      std::forward<Args>(args)...);
}
}  // namespace detail

template <class Impl, class... Args>
result<server<Impl>> runtime::start(Args&&... args) {
  return detail::start_with<Impl>(*core_, false, std::forward<Args>(args)...);
}

/// Starts a gen_server<Impl> constructed from `args`, runs its init() and
/// returns its handle once init has returned. The process joins the calling
/// process's runtime, or the default one. A throwing constructor or init, or
/// init returning ignore()/error(r)/stop(r), is a start error (the result
/// holds the reason); it never aborts the caller. With a name first
/// (otpp::name("x") or otpp::named), a taken name fails with already_started
/// (otpp::holder(reason) is the holder) and nothing of Impl runs.
template <class Impl, class... Args>
[[nodiscard]] result<server<Impl>> start(Args&&... args) {
  return detail::start_with<Impl>(detail::current_core(), false, std::forward<Args>(args)...);
}

/// Like start, and links the new process with the calling process before
/// init runs; the caller becomes its parent (an exit signal from the parent
/// makes a trapping child run terminate). If init stops or throws, start_link
/// returns the reason and leaves no exit signal behind; a calling process
/// that does not trap exits is then marked to exit with that reason when its
/// current callback returns (OTP kills it). From a plain thread, start_link
/// is start: a thread is never linked.
template <class Impl, class... Args>
[[nodiscard]] result<server<Impl>> start_link(Args&&... args) {
  return detail::start_with<Impl>(detail::current_core(), true, std::forward<Args>(args)...);
}

// -- calling -------------------------------------------------------------------------

namespace detail {

// Deep chains of calls each run inline on one stack; past this depth, calls
// go through the mailbox so the stack stays bounded.
inline constexpr unsigned max_inline_depth = 64;

/// An inline call's scope: the callee is the current process, as on its
/// own turn, one level deeper in inline calls.
class inline_call_scope {
 public:
  explicit inline_call_scope(process_base* p) noexcept : caller_{tls().current} {
    ++tls().inline_depth;
    tls().current = p;
  }
  ~inline_call_scope() {
    thread_ctx& t = tls();  // the callee may have blocked and resumed on another thread
    t.current = caller_;
    --t.inline_depth;
  }
  inline_call_scope(const inline_call_scope&) = delete;
  inline_call_scope& operator=(const inline_call_scope&) = delete;
  [[nodiscard]] process_base* caller() const noexcept { return caller_; }

 private:
  process_base* caller_;
};

/// The handler run inline asked to exit: finishes the exit and returns the
/// final reason (out of line: one copy, not one per request type).
exit_reason exit_after_inline_call(process_base* p) noexcept;

// The callee was idle and is now ours: run its handler on this thread. Only
// for a caller that waits without a deadline (see may_run_inline).
template <class Impl, class Q, class R>
result<R> call_inline(process_of<Impl>* p, Q&& req) {
  std::optional<std::conditional_t<std::is_void_v<R>, char, R>> value;
  {
    const inline_call_scope scope{p};
    p->note_message();
    try {
      const from f = handle_access::make_from(scope.caller());
      if constexpr (std::is_void_v<R>) {
        invoke_sync(p->impl(), std::move(req), f);
        value.emplace('\0');
      } else {
        value.emplace(invoke_sync(p->impl(), std::move(req), f));
      }
    } catch (...) {
      p->crash(std::current_exception(), type_name<std::remove_cvref_t<Q>>(), "call");
    }
    p->note_handled();
    p->note_inline_call();
    if (p->exit_requested()) [[unlikely]] {
      exit_reason final = exit_after_inline_call(p);
      if (!value) return final;
    } else {
      p->release_inline();
    }
  }
  if constexpr (std::is_void_v<R>) {
    return {};
  } else {
    return result<R>{std::in_place, std::move(*value)};
  }
}

template <class Impl, class Req>
result<call_reply_t<Impl, std::remove_cvref_t<Req>>> try_call(const server<Impl>& s, Req&& req, steady::duration timeout) {
  using Q = std::remove_cvref_t<Req>;
  using R = call_reply_t<Impl, Q>;
  check_timeout(timeout, "otpp::call");
  auto* p = static_cast<process_of<Impl>*>(pid_access::get(s.pid()));
  if (p == nullptr) return exit_reason::noproc();
  if (p == tls().current) return exit_reason::calling_self();
  constexpr bool nonblocking = declares_nonblocking_handlers<Impl>;
  // A coroutine handler never runs on the caller's thread: it may suspend.
  if constexpr (handles_sync_call<Impl, Q> && !handles_async_call<Impl, Q>) {
    if ((nonblocking || may_run_inline(timeout)) && tls().inline_depth < max_inline_depth) {
      if constexpr (!std::is_reference_v<Req> && std::is_nothrow_move_constructible_v<Q>) {
        return request_made<R>(
            p, timeout, true, nonblocking, [&] { return call_inline<Impl, Q, R>(p, std::move(req)); },
            [&] { return make_call<Impl, Q, R>(std::move(req), tls().current); });
      } else {
        // A copy (or a move that may throw) is made on the caller's side,
        // before the server is claimed, as the mailbox path does: a throw
        // reaches the caller and leaves nothing behind.
        Q copy(std::forward<Req>(req));
        return request_made<R>(
            p, timeout, true, nonblocking, [&] { return call_inline<Impl, Q, R>(p, std::move(copy)); },
            [&] { return make_call<Impl, Q, R>(std::move(copy), tls().current); });
      }
    }
  }
  return request_made<R>(
      p, timeout, false, nonblocking, [] { return result<R>{exit_reason::noproc()}; },
      [&] { return make_call<Impl, Q, R>(std::forward<Req>(req), tls().current); });
}

/// Throws the exit_error of a failed otpp::call, naming it:
/// "otpp::call(<0.5.0> counter, counter::increment, 5000 ms): noproc".
[[noreturn]] void throw_call_error(const exit_reason& reason, const pid& target, std::string_view server_type,
                                   std::string_view request_type, steady::duration timeout);

template <class Impl, class Req>
inline constexpr bool always_false = false;

/// Whether Impl is a gen_statem, whose handlers are handle_event overloads:
/// a message that none takes gets an error that says so.
template <class Impl>
inline constexpr bool is_statem = std::is_base_of_v<tags::statem, Impl>;

// What a call that does not compile returns, so that the static_assert is
// the only error: it converts to whatever the caller expected.
struct no_reply {
  template <class T>
  operator T() const;  // NOLINT: never defined, never called
};

}  // namespace detail

/// Calls `s` with `req` and returns the reply, or the reason it failed:
/// timeout (the server keeps running; a late reply is dropped), noproc (dead
/// or empty handle), calling_self, or the server's exit reason if it died
/// before replying (reported at once, not at the timeout). A negative
/// timeout throws std::invalid_argument and sends nothing.
///
/// Which thread runs the handler: the server's own turn, on a worker of its
/// runtime, whenever the call has a finite timeout, so the caller always gets
/// its answer or `timeout` within that time. With `otpp::infinity` (the caller
/// will wait as long as it takes anyway), or for a server that declares
/// nonblocking_handlers (see declares_nonblocking_handlers), a call to an idle
/// server runs the handler on the caller's thread, as the server's turn: no
/// hand-over, and the same order and exclusion as any other message.
template <class Impl, class Req>
[[nodiscard]] auto try_call(const server<Impl>& s, Req&& req,
                            std::chrono::steady_clock::duration timeout = default_call_timeout) {
  using Q = std::remove_cvref_t<Req>;
  if constexpr (handles_call<Impl, Q>) {
    return detail::try_call(s, std::forward<Req>(req), timeout);
  } else if constexpr (detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, Q>,
                  "otpp::call: no state of this gen_statem takes this request type: give a state a public "
                  "handle_event(State&, otpp::call_event<R>, const Req&), and Req a `using reply_type = R;`");
    return result<detail::no_reply>{exit_reason::noproc()};
  } else {
    static_assert(detail::always_false<Impl, Q>,
                  "otpp::call: the server has no handle_call overload for this request type "
                  "(R handle_call(Req[, otpp::from]) or void handle_call(Req, otpp::reply_to<Req::reply_type>)); "
                  "handlers must be public and take the request by value or by const&");
    return result<detail::no_reply>{exit_reason::noproc()};
  }
}

/// Like try_call, but returns the reply itself and throws exit_error on
/// failure (GenServer.call exits the caller); its what() names the call:
/// `otpp::call(<0.5.0> counter, counter::increment, 5000 ms): noproc`.
template <class Impl, class Req>
auto call(const server<Impl>& s, Req&& req, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  auto r = otpp::try_call(s, std::forward<Req>(req), timeout);
  if (!r) [[unlikely]]
    detail::throw_call_error(r.error(), s.pid(), detail::type_name<Impl>(), detail::type_name<std::remove_cvref_t<Req>>(),
                             timeout);
  return std::move(r).value();
}

/// Sends `msg` to handle_cast. Never blocks, and no reply or error comes
/// back: a cast to a dead or empty handle is dropped, as in Erlang. The one
/// failure is the caller's own: with no memory left for the message (or for
/// copying `msg`), it throws std::bad_alloc and nothing is sent.
template <class Impl, class Msg>
void cast(const server<Impl>& s, Msg&& msg) {
  using M = std::remove_cvref_t<Msg>;
  // A mistake's only error: the branch that reports it instantiates nothing.
  if constexpr (handles_cast<Impl, M>) {
    detail::post<detail::cast_node<Impl, M>>(s.pid(), std::forward<Msg>(msg));
  } else if constexpr (detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::cast: no state of this gen_statem takes this message type: give a state a public "
                  "handle_event(State&, otpp::cast_event, const Msg&)");
  } else {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::cast: the server has no handle_cast overload for this message type");
  }
}

/// Sends `msg` to handle_info, dispatched at compile time. As cast: dropped
/// if the server is gone; std::bad_alloc (nothing sent) without memory.
template <class Impl, class Msg>
void send(const server<Impl>& s, Msg&& msg) {
  using M = std::remove_cvref_t<Msg>;
  if constexpr (handles_info<Impl, M>) {
    detail::post<detail::info_node<Impl, M>>(s.pid(), std::forward<Msg>(msg));
  } else if constexpr (detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::send: no state of this gen_statem takes this message type: give a state a public "
                  "handle_event(State&, otpp::info_event, const Msg&)");
  } else {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::send: the server has no handle_info overload for this message type");
  }
}

/// As cast, and says whether the message was queued: mailbox_full when the
/// server's bounded mailbox refused it (otpp::bounded_mailbox), noproc when
/// the handle is empty or the server is dead.
template <class Impl, class Msg>
result<void> try_cast(const server<Impl>& s, Msg&& msg) {
  using M = std::remove_cvref_t<Msg>;
  if constexpr (handles_cast<Impl, M>) {
    return detail::try_post<detail::cast_node<Impl, M>>(s.pid(), std::forward<Msg>(msg));
  } else if constexpr (detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::try_cast: no state of this gen_statem takes this message type: give a state a public "
                  "handle_event(State&, otpp::cast_event, const Msg&)");
    return {};
  } else {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::try_cast: the server has no handle_cast overload for this message type");
    return {};
  }
}

/// As send to a server, and says whether the message was queued
/// (mailbox_full, noproc: see try_cast).
template <class Impl, class Msg>
result<void> try_send(const server<Impl>& s, Msg&& msg) {
  using M = std::remove_cvref_t<Msg>;
  if constexpr (handles_info<Impl, M>) {
    return detail::try_post<detail::info_node<Impl, M>>(s.pid(), std::forward<Msg>(msg));
  } else if constexpr (detail::is_statem<Impl>) {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::try_send: no state of this gen_statem takes this message type: give a state a public "
                  "handle_event(State&, otpp::info_event, const Msg&)");
    return {};
  } else {
    static_assert(detail::always_false<Impl, M>,
                  "otpp::try_send: the server has no handle_info overload for this message type");
    return {};
  }
}

/// Stops a process and waits until it has exited: terminate(reason) runs
/// (whether or not it traps exits). Fails with noproc, calling_self, timeout,
/// or the different reason it exited with.
inline result<void> try_stop(const pid& p, exit_reason reason = {}, std::chrono::steady_clock::duration timeout = infinity) {
  return detail::stop_process(detail::pid_access::get(p), std::move(reason), timeout);
}

/// Like try_stop, throwing exit_error on failure (GenServer.stop).
void stop(const pid& p, exit_reason reason = {}, std::chrono::steady_clock::duration timeout = infinity);

}  // namespace otpp

/// @cond OTPP_INTERNAL
template <class Impl>
struct fmt::formatter<otpp::server<Impl>> : fmt::formatter<otpp::pid> {
  template <class Ctx>
  auto format(const otpp::server<Impl>& s, Ctx& ctx) const {
    return fmt::formatter<otpp::pid>::format(s.pid(), ctx);
  }
};
/// @endcond

#if OTPP_HEADER_ONLY
#include "detail/gen_server-inl.hpp"
#endif
