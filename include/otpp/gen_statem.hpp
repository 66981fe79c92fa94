#pragma once
// gen_statem<Impl, States...>: a state machine process with OTP's gen_statem
// event semantics. States are types (they may carry data); the handlers are
// Impl's handle_event overloads, one per state and event, found at compile
// time:
//
//   struct locked {};  struct open {};
//   class door : public otpp::gen_statem<door, locked, open> {
//    public:
//     struct push {};                                      // a cast
//     struct status { using reply_type = std::string; };   // a call
//     struct relock {};                                    // a state timeout's content
//     transition handle_event(locked&, otpp::cast_event, const push&) {
//       return next_state(open{}, state_timeout(10s, relock{}));
//     }
//     transition handle_event(open&, otpp::state_timeout_event, const relock&) { return next_state(locked{}); }
//     transition handle_event(open&, otpp::cast_event, const push&) { return keep_state(postpone()); }
//     template <class S>
//     transition handle_event(S&, otpp::call_event<std::string> c, const status&) {
//       return keep_state(reply(c, std::same_as<S, open> ? "open" : "locked"));
//     }
//     void handle_event(open&, otpp::enter_event) { /* ring a bell */ }
//   };
//
//   auto d = otpp::start<door>().value();        // a server<door>: call, cast, stop, sys, supervisors as usual
//   otpp::cast(d, door::push{});
//   otpp::call(d, door::status{});               // "open"
//
// The machine starts in its first state (default constructed) unless init()
// returns next_state(...). Event types, the handle_event's second argument:
// call_event<R> (a call; the request type names `using reply_type = R;`),
// cast_event, info_event (otpp::send, monitors' down, trapped exit
// signals), internal_event (inserted by next_event), timeout_event (the
// event timeout), state_timeout_event, generic_timeout_event (its `name`),
// and enter_event (handle_event(State&, enter_event): the machine entered
// State; also for the first state and on repeat_state). The event itself is
// passed as an lvalue, since it may be postponed: take it by const& (or by
// value: a copy). A handler returns a transition (or void: keep_state()).
//
// Transitions: next_state(s, actions...), keep_state(actions...),
// repeat_state(actions...), stop(reason), stop_and_reply(reason, replies...).
// Actions: reply(call, value), postpone(), next_event(kind, msg),
// hibernate(), event_timeout / state_timeout / generic_timeout(name) with a
// duration (otpp::infinity cancels) or an absolute time, their cancel_ and
// update_ forms.
//
// Semantics (docs/semantics.md §9), as OTP's: actions take effect in list
// order, replies at once; then the enter call runs (it may reply and set
// timeouts, not postpone or insert events, nor change the state); then the
// current event is postponed if asked; on a state change the postponed
// events are retried first, oldest first; inserted events go before all of
// them, in their order; timeouts are armed last. A zero timeout is queued
// behind the events already queued, ahead of any message not yet received.
// The event timeout is cancelled by any event (an event queued by the same
// transition counts); the state timeout by a state change (one set during
// the change belongs to the new state). An event no handler of the current
// state takes crashes the machine, naming the event and the state (OTP's
// function_clause); one no state takes at all does not compile.

#include <algorithm>
#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "detail/event_box.hpp"
#include "gen_server.hpp"
#include "timer.hpp"

namespace otpp {

/// handle_event(State&, cast_event, const Msg&): a cast.
struct cast_event {};
/// handle_event(State&, info_event, const Msg&): a message sent with
/// otpp::send (or send_after), a monitor's down, a trapped exit signal.
struct info_event {};
/// handle_event(State&, internal_event, const Msg&): inserted by next_event.
struct internal_event {};
/// handle_event(State&, enter_event): the machine entered State.
struct enter_event {};
/// handle_event(State&, timeout_event, const Msg&): the event timeout passed
/// with no event in between.
struct timeout_event {};
/// handle_event(State&, state_timeout_event, const Msg&): the state timeout
/// passed in the state that set it.
struct state_timeout_event {};
/// handle_event(State&, generic_timeout_event, const Msg&): the generic
/// timeout `name` passed.
struct generic_timeout_event {
  std::string_view name;  ///< the timeout's name (valid during the handler)
};

template <class Impl, class... States>
class gen_statem;

/// handle_event(State&, call_event<R>, const Req&): a call, answered by the
/// reply action (reply(call, value)), by reply(value) here, or later through
/// keep(). A borrowed view: valid during the handler.
template <class R>
class call_event {
 public:
  /// Answers the call now (gen_statem:reply); true if this reply reached the
  /// caller (the first one does, if the caller still waits).
  template <class... A>
  bool reply(A&&... value) const {
    return slot_->set_value(std::forward<A>(value)...);
  }
  /// The right to answer later, from anywhere (a stored From).
  [[nodiscard]] reply_to<R> keep() const { return detail::handle_access::make_reply_to<R>(slot_); }

 private:
  template <class, class...>
  friend class gen_statem;
  explicit call_event(detail::reply_slot<R>* s) noexcept : slot_{s} {}
  detail::reply_slot<R>* slot_;
};

namespace detail {

template <class Impl, class S, class Kind, class M>
concept statem_handles = requires(Impl& i, S& s, Kind& k, M& m) { i.handle_event(s, k, m); };
template <class Impl, class S>
concept statem_enters = requires(Impl& i, S& s, enter_event& e) { i.handle_event(s, e); };

// What a transition asks for, and which timer an action names.
enum class statem_step : unsigned char { keep, next, repeat, stop };
enum class statem_action_kind : unsigned char { reply, postpone, next_event, hibernate, set_timer, cancel_timer, update_timer };

// A reply action's content: a plain struct, not a std::pair, so that it is
// trivially copyable when R is (a pair never is) and a box moves it without
// a call.
template <class R>
struct statem_reply_content {
  statem_reply_content(reply_slot<R>* s, R&& v) noexcept(std::is_nothrow_move_constructible_v<R>)
      : slot{s}, value{std::move(v)} {}
  reply_slot<R>* slot;
  R value;
};

enum class statem_timer : unsigned char { event, state, generic };

// A state machine's timer message: which timer, and which arming of it (an
// older one is stale).
struct statem_tick {
  std::uint32_t slot;
  std::uint32_t generation;
};

template <class Impl>
struct statem_tick_node;

struct statem_access;

template <class T>
constexpr std::string_view statem_kind_name() noexcept {
  if constexpr (std::is_same_v<T, cast_event>) return "cast";
  if constexpr (std::is_same_v<T, info_event>) return "info";
  if constexpr (std::is_same_v<T, internal_event>) return "internal";
  if constexpr (std::is_same_v<T, timeout_event>) return "timeout";
  if constexpr (std::is_same_v<T, state_timeout_event>) return "state_timeout";
  if constexpr (std::is_same_v<T, generic_timeout_event>) return "generic_timeout";
  if constexpr (std::is_same_v<T, enter_event>) return "enter";
  return "call";
}

// "cast in state door_locked": static, for crash reports (they keep a view).
template <class Kind, class S>
std::string_view statem_where() {
  static const std::string text = fmt::format("{} in state {}", statem_kind_name<Kind>(), type_name<S>());
  return text;
}

}  // namespace detail

/// CRTP base of a state machine: `class door : public
/// otpp::gen_statem<door, locked, open>`. States are types, the machine is
/// in one of them (a std::variant); Impl's members are the machine's data.
/// Its protected members build transitions and actions.
template <class Impl, class... States>
class gen_statem : public gen_server<Impl>, private tags::statem {
  static_assert(sizeof...(States) > 0, "otpp::gen_statem<Impl, States...>: name at least one state type");
  static_assert((std::is_nothrow_move_constructible_v<States> && ...), "otpp::gen_statem: state types must move without throwing");

 public:
  /// The machine's state: one of States.
  using state_type = std::variant<States...>;
  class transition;

  /// One action of a transition (made by reply, postpone, next_event,
  /// hibernate and the timeout functions).
  class action {
   public:
    /// Moves: an action is made once and handed on.
    action(action&& o) noexcept
        : kind{o.kind}, timer{o.timer}, absolute{o.absolute}, ns{o.ns}, content{std::move(o.content)}, run{o.run} {
      if (!o.name.empty()) name = std::move(o.name);  // only generic timeouts have one: spare the call
    }
    /// Moves.
    action& operator=(action&& o) noexcept {
      kind = o.kind;
      timer = o.timer;
      absolute = o.absolute;
      ns = o.ns;
      name = std::move(o.name);
      content = std::move(o.content);
      run = o.run;
      return *this;
    }
    // Inlined by force (as the other steps on every event's path below):
    // GCC would call it, and the call was more than its body.
    [[gnu::always_inline]] ~action() = default;

   private:
    friend class gen_statem;
    friend class transition;
    action() noexcept = default;
    detail::statem_action_kind kind{};
    detail::statem_timer timer{};
    bool absolute = false;
    std::int64_t ns = 0;  // delay or absolute deadline; -1: infinity
    std::string name;
    detail::event_box content;
    void (*run)(gen_statem&, detail::event_box&, std::string_view name) = nullptr;  // deliver the content as an event (or send the reply)
  };

  /// The event timeout as event_timeout(duration, msg) makes it: an action
  /// kept apart from the others, because machines that use it re-arm it on
  /// nearly every event. Converts to an action.
  class event_timeout_action {
   public:
    /// Moves: an action is made once and handed on.
    event_timeout_action(event_timeout_action&&) noexcept = default;
    /// Moves.
    event_timeout_action& operator=(event_timeout_action&&) noexcept = default;
    ~event_timeout_action() = default;
    /// The same timeout as a plain action (to keep with others in a container).
    operator action() && {  // NOLINT(google-explicit-constructor): an action, as every timeout function makes
      action a;
      a.kind = ns < 0 ? detail::statem_action_kind::cancel_timer : detail::statem_action_kind::set_timer;
      a.timer = detail::statem_timer::event;
      a.ns = ns;
      a.content = std::move(content);
      a.run = run;
      return a;
    }

   private:
    friend class gen_statem;
    friend class transition;
    event_timeout_action() noexcept = default;
    std::int64_t ns = 0;  // the delay; -1: infinity (cancels)
    detail::event_box content;
    void (*run)(gen_statem&, detail::event_box&, std::string_view name) = nullptr;
  };

  /// A reply as reply(call, value) makes it: the value stays typed until
  /// the transition takes it and builds the action in place, since nearly
  /// every call's transition carries one (an action made here, moved in
  /// and destroyed was 50 of the ~1,300 instructions of a call from a
  /// process). Converts to an action.
  template <class R>
  class reply_action {
   public:
    /// Moves: an action is made once and handed on.
    reply_action(reply_action&&) = default;
    reply_action& operator=(reply_action&&) = delete;
    ~reply_action() = default;
    /// The same reply as a plain action (to keep with others in a container).
    operator action() && {  // NOLINT(google-explicit-constructor): usable wherever an action is
      action a;
      std::move(*this).fill(a);
      return a;
    }

   private:
    friend class gen_statem;
    friend class transition;
    // What the action's box will hold: the slot, and the value if any.
    using content_type =
        std::conditional_t<std::is_void_v<R>, detail::reply_slot<void>*, detail::statem_reply_content<R>>;
    explicit reply_action(content_type c) noexcept(std::is_nothrow_move_constructible_v<content_type>)
        : content{std::move(c)} {}
    // Into a default-made action.
    void fill(action& a) && {
      a.kind = detail::statem_action_kind::reply;
      a.content.template emplace<content_type>(std::move(content));
      a.run = &gen_statem::run_reply<R>;
    }
    content_type content;
  };

  /// What a handler returns: where the machine goes, and what it does.
  class transition {
   public:
    /// Moves: a transition is returned by value.
    transition(transition&& o) noexcept
        : step{o.step}, next{std::move(o.next)}, rare{std::exchange(o.rare, nullptr)}, has_event_timeout{o.has_event_timeout} {
      for (; inline_count < o.inline_count; ++inline_count)
        ::new (static_cast<void*>(&inline_actions[inline_count].a)) action(std::move(o.inline_actions[inline_count].a));
      if (has_event_timeout) ::new (static_cast<void*>(&event_timeout_slot.a)) event_timeout_action(std::move(o.event_timeout_slot.a));
    }
    /// Moves.
    transition& operator=(transition&& o) noexcept {
      if (this != &o) {
        this->~transition();
        ::new (static_cast<void*>(this)) transition(std::move(o));
      }
      return *this;
    }
    /// Destroys the actions not carried out.
    [[gnu::always_inline]] ~transition() {
      if (inline_count != 0 || has_event_timeout) destroy_actions();  // the test inline: most have none left
      if (rare != nullptr) delete rare;
    }

   private:
    friend class gen_statem;
    explicit transition(detail::statem_step s) noexcept : step{s} {}
    // Most transitions carry no action or one or two: those live here, built
    // only when added, not in an allocation.
    void add(event_timeout_action&& a) noexcept {
      if (has_event_timeout) {
        event_timeout_slot.a = std::move(a);  // a later one replaces an earlier: arming both would come to the same
      } else {
        ::new (static_cast<void*>(&event_timeout_slot.a)) event_timeout_action(std::move(a));
        has_event_timeout = true;
      }
    }
    template <class R>
    void add(reply_action<R>&& r) {
      if (inline_count == inline_capacity) return push(std::move(r));
      // Default-initialised, not value-initialised: `action()` zeroed the whole
      // object first, the content's 48-byte buffer too (a `rep stos` that cost
      // ~8 ns of every call on an AMD EPYC: statem_call_ns).
      action* a = ::new (static_cast<void*>(&inline_actions[inline_count].a)) action;
      try {
        std::move(r).fill(*a);
      } catch (...) {
        a->~action();
        throw;
      }
      ++inline_count;
    }
    void add(action&& a) {
      if (has_event_timeout && a.kind >= detail::statem_action_kind::set_timer && a.timer == detail::statem_timer::event) {
        // Another action on the event timeout comes after it: keep the order.
        push(take_event_timeout());
      }
      push(std::move(a));
    }
    // The event timeout as a plain action; the transition no longer has it.
    action take_event_timeout() {
      action a = std::move(event_timeout_slot.a);
      event_timeout_slot.a.~event_timeout_action();
      has_event_timeout = false;
      return a;
    }
    void push(action&& a) {
      if (inline_count < inline_capacity) {
        ::new (static_cast<void*>(&inline_actions[inline_count].a)) action(std::move(a));
        ++inline_count;
      } else {
        if (!rare) rare = new rare_part{};
        rare->more_actions.push_back(std::move(a));
      }
    }
    void destroy_actions() noexcept {
      for (std::size_t i = 0; i < inline_count; ++i) inline_actions[i].a.~action();
      inline_count = 0;
      if (has_event_timeout) event_timeout_slot.a.~event_timeout_action();
      has_event_timeout = false;
    }
    template <class F>
    void each(F&& f) {
      for (std::size_t i = 0; i < inline_count; ++i) f(inline_actions[i].a);
      if (rare)
        for (action& a : rare->more_actions) f(a);
    }
    union inline_slot {
      inline_slot() noexcept {}
      ~inline_slot() {}
      action a;
    };

    // What most transitions lack, behind one pointer: building and dropping
    // a transition is on every event's path.
    struct rare_part {
      exit_reason reason;
      std::vector<action> more_actions;
    };
    [[nodiscard]] exit_reason take_reason() noexcept { return rare ? std::move(rare->reason) : exit_reason{}; }

    static constexpr std::size_t inline_capacity = 2;
    detail::statem_step step;
    std::optional<state_type> next;
    // Owned; a plain pointer, not a unique_ptr: GCC at -O3 called the
    // unique_ptr's destructor out of line on every event, null or not.
    rare_part* rare = nullptr;
    std::size_t inline_count = 0;
    inline_slot inline_actions[inline_capacity];
    union event_timeout_union {
      event_timeout_union() noexcept {}
      ~event_timeout_union() {}
      event_timeout_action a;
    };
    bool has_event_timeout = false;
    event_timeout_union event_timeout_slot;  // built when set; armed after the listed actions' timeouts
  };

  // -- events, from the process (public: the runtime calls them; not for users) --
  /// @cond OTPP_INTERNAL
  template <class Req>
    requires(detail::names_reply_type<Req> &&
             (detail::statem_handles<Impl, States, call_event<typename Req::reply_type>, Req> || ...))
  void handle_call(Req req, detail::borrowed_reply<typename Req::reply_type>& to) {
    using R = typename Req::reply_type;
    call_event<R> ev{to.slot};
    hand_to_ = to.slot;
    external<call_event<R>>(ev, req, [&] {
      return boxed_call<R, Req>(std::move(req), detail::handle_access::make_reply_to<R>(to.slot));
    });
    if (handed_) {
      handed_ = false;
      to.handed = true;  // answered, and the slot is the caller's to free: not touched again
      return;
    }
    hand_to_ = nullptr;
    // Answered: nothing more to do. Otherwise (postponed, kept, forgotten or
    // crashed) the process fails it with its exit reason if it dies first.
    if (to.slot->open()) proc()->track_deferred(to.slot);
  }
  template <class M>
    requires(std::is_same_v<M, std::remove_cvref_t<M>> && (detail::statem_handles<Impl, States, cast_event, M> || ...))
  void handle_cast(M&& m) {
    cast_event ev;
    external<cast_event>(ev, m, [&] { return boxed<cast_event, M>(std::move(m)); });
  }
  template <class M>
    requires(std::is_same_v<M, std::remove_cvref_t<M>> && (detail::statem_handles<Impl, States, info_event, M> || ...))
  void handle_info(M&& m) {
    info_event ev;
    external<info_event>(ev, m, [&] { return boxed<info_event, M>(std::move(m)); });
  }
  /// @endcond

  /// The current state. Public so that a sys::get_state visitor, which runs
  /// in the machine's process, reads it beside the data (sys:get_state's
  /// {State, Data}); nothing outside the process holds the machine itself.
  [[nodiscard]] const state_type& state() const noexcept { return state_; }

 protected:
  gen_statem() noexcept = default;

  // -- transitions --
  /// Go to state `s` (an enter call runs if it differs from the current one).
  template <class S, class... A>
  [[nodiscard]] static transition next_state(S&& s, A&&... actions) {
    using T = std::remove_cvref_t<S>;
    transition t{detail::statem_step::next};
    if constexpr ((std::is_same_v<T, States> || ...)) {
      t.next.emplace(std::in_place_type<T>, std::forward<S>(s));
      (t.add(std::forward<A>(actions)), ...);
    } else {
      static_assert(detail::always_false<Impl, T>, "next_state: not one of the machine's state types");
    }
    return t;
  }
  /// Stay in the current state (keep_state_and_data: the data are Impl's members).
  template <class... A>
  [[nodiscard]] static transition keep_state(A&&... actions) {
    transition t{detail::statem_step::keep};
    (t.add(std::forward<A>(actions)), ...);
    return t;
  }
  /// Stay, and run the current state's enter call again.
  template <class... A>
  [[nodiscard]] static transition repeat_state(A&&... actions) {
    transition t{detail::statem_step::repeat};
    (t.add(std::forward<A>(actions)), ...);
    return t;
  }
  /// Exit with `reason` (terminate runs).
  [[nodiscard]] static transition stop(exit_reason reason = {}) {
    transition t{detail::statem_step::stop};
    t.rare = new typename transition::rare_part{};
    t.rare->reason = std::move(reason);
    return t;
  }
  /// Send the replies, then exit with `reason`.
  template <class... A>
  [[nodiscard]] static transition stop_and_reply(exit_reason reason, A&&... replies) {
    transition t = stop(std::move(reason));
    (t.add(std::forward<A>(replies)), ...);
    return t;
  }

  // -- actions --
  /// Answer `call` with `value`.
  template <class R, class... V>
  [[nodiscard]] static reply_action<R> reply(call_event<R> call, V&&... value) {
    if constexpr (std::is_void_v<R>) {
      static_assert(sizeof...(V) == 0, "reply: this call's reply_type is void");
      return reply_action<R>{call.slot_};
    } else {
      if constexpr (sizeof...(V) == 1 && std::is_constructible_v<R, V...>) {
        return reply_action<R>{detail::statem_reply_content<R>{call.slot_, R(std::forward<V>(value)...)}};
      } else {
        // One error, and nothing built from the value.
        static_assert(sizeof...(V) == 1, "reply: give the reply value");
        static_assert(sizeof...(V) != 1 || std::is_constructible_v<R, V...>,
                      "reply: the value does not make the call's reply_type (call_event<R>: R is the reply_type)");
        throw std::logic_error("reply");  // not reached: this branch does not compile
      }
    }
  }
  /// Keep the current event until the state changes, then retry it.
  [[nodiscard]] static action postpone() {
    action a;
    a.kind = detail::statem_action_kind::postpone;
    return a;
  }
  /// Handle `msg` as an event of `Kind` (internal_event, cast_event or
  /// info_event) next, before any other queued event.
  template <class Kind, class M>
  [[nodiscard]] static action next_event(Kind, M&& msg) {
    static_assert(std::is_same_v<Kind, internal_event> || std::is_same_v<Kind, cast_event> || std::is_same_v<Kind, info_event>,
                  "next_event: the event type is internal_event, cast_event or info_event");
    using T = std::remove_cvref_t<M>;
    static_assert((detail::statem_handles<Impl, States, Kind, T> || ...),
                  "next_event: no state has a handle_event(State&, Kind, const Msg&) for this event");
    action a;
    a.kind = detail::statem_action_kind::next_event;
    a.content.template emplace<T>(std::forward<M>(msg));
    a.run = &deliver<Kind, T>;
    return a;
  }
  /// Sleep (hibernate) once no event is queued.
  [[nodiscard]] static action hibernate() {
    action a;
    a.kind = detail::statem_action_kind::hibernate;
    return a;
  }
  /// The event timeout: timeout_event with `msg` after `d` unless an event
  /// comes first. otpp::infinity cancels it.
  template <class M>
  [[nodiscard]] static event_timeout_action event_timeout(std::chrono::steady_clock::duration d, M&& msg) {
    event_timeout_action a;
    a.ns = delay_ns(d);
    if (a.ns >= 0) hold_timeout<timeout_event>(a.content, a.run, std::forward<M>(msg));
    return a;
  }
  /// The event timeout at `t` (absolute).
  template <class M>
  [[nodiscard]] static action event_timeout(std::chrono::steady_clock::time_point t, M&& msg) {
    return set_timer<timeout_event>(detail::statem_timer::event, {}, true, t.time_since_epoch().count(), std::forward<M>(msg));
  }
  /// The state timeout: state_timeout_event with `msg` after `d` unless the
  /// state changes first. otpp::infinity cancels it.
  template <class M>
  [[nodiscard]] static action state_timeout(std::chrono::steady_clock::duration d, M&& msg) {
    return set_timer<state_timeout_event>(detail::statem_timer::state, {}, false, delay_ns(d), std::forward<M>(msg));
  }
  /// The state timeout at `t` (absolute).
  template <class M>
  [[nodiscard]] static action state_timeout(std::chrono::steady_clock::time_point t, M&& msg) {
    return set_timer<state_timeout_event>(detail::statem_timer::state, {}, true, t.time_since_epoch().count(),
                                          std::forward<M>(msg));
  }
  /// The generic timeout `name`: generic_timeout_event with `msg` after `d`
  /// (setting it again restarts it). otpp::infinity cancels it.
  template <class M>
  [[nodiscard]] static action generic_timeout(std::string name, std::chrono::steady_clock::duration d, M&& msg) {
    return set_timer<generic_timeout_event>(detail::statem_timer::generic, std::move(name), false, delay_ns(d),
                                            std::forward<M>(msg));
  }
  /// The generic timeout `name` at `t` (absolute).
  template <class M>
  [[nodiscard]] static action generic_timeout(std::string name, std::chrono::steady_clock::time_point t, M&& msg) {
    return set_timer<generic_timeout_event>(detail::statem_timer::generic, std::move(name), true, t.time_since_epoch().count(),
                                            std::forward<M>(msg));
  }
  /// Cancels the event timeout.
  [[nodiscard]] static action cancel_event_timeout() { return cancel(detail::statem_timer::event, {}); }
  /// Cancels the state timeout.
  [[nodiscard]] static action cancel_state_timeout() { return cancel(detail::statem_timer::state, {}); }
  /// Cancels the generic timeout `name`.
  [[nodiscard]] static action cancel_generic_timeout(std::string name) { return cancel(detail::statem_timer::generic, std::move(name)); }
  /// The running event timeout will carry `msg` (if none runs: as a zero timeout).
  template <class M>
  [[nodiscard]] static action update_event_timeout(M&& msg) {
    return update<timeout_event>(detail::statem_timer::event, {}, std::forward<M>(msg));
  }
  /// The running state timeout will carry `msg` (if none runs: as a zero timeout).
  template <class M>
  [[nodiscard]] static action update_state_timeout(M&& msg) {
    return update<state_timeout_event>(detail::statem_timer::state, {}, std::forward<M>(msg));
  }
  /// The running generic timeout `name` will carry `msg` (if none runs: as a zero timeout).
  template <class M>
  [[nodiscard]] static action update_generic_timeout(std::string name, M&& msg) {
    return update<generic_timeout_event>(detail::statem_timer::generic, std::move(name), std::forward<M>(msg));
  }

 private:
  friend struct detail::statem_access;
  friend struct detail::statem_tick_node<Impl>;
  using gen_server<Impl>::continue_with;  // a state machine inserts events instead (next_event)
  using gen_server<Impl>::set_timeout;    // ...and has its own timeouts

  using run_fn = void (*)(gen_statem&, detail::event_box&, std::string_view);

  // An event kept for later: postponed, inserted, or a zero timeout.
  struct queued {
    detail::event_box content;
    run_fn run = nullptr;
    std::string name;  // a generic timeout's
    bool is_timeout = false;
    detail::statem_timer timer{};
  };

  // One timer: armed lazily. A timer message already on its way for a
  // deadline no later than the new one is kept; when it comes early it is
  // sent again for the rest. So re-arming for later costs no allocation and
  // no atomic operation.
  struct timer_slot {
    std::string name;
    bool active = false;
    bool live = false;                // a timer message is scheduled
    std::int64_t deadline = 0;        // ns on the runtime's clock
    std::int64_t live_deadline = 0;   // the scheduled message's
    std::uint32_t generation = 0;     // of the scheduled message
    bool waits_dry = false;           // the event timeout's count starts when the mailbox runs dry
    std::int64_t delay = 0;           // ...and lasts this long (ns)
    detail::event_box content;
    run_fn run = nullptr;
  };

  // A reply action's run: sends the boxed reply.
  template <class R>
  static void run_reply(gen_statem& self, detail::event_box& b, std::string_view) {
    if constexpr (std::is_void_v<R>) {
      self.answer(b.get<detail::reply_slot<void>*>());
    } else {
      auto& p = b.get<detail::statem_reply_content<R>>();
      self.answer(p.slot, std::move(p.value));
    }
  }

  template <class Kind, class M>
  static void deliver(gen_statem& self, detail::event_box& b, std::string_view name) {
    Kind ev{};
    if constexpr (std::is_same_v<Kind, generic_timeout_event>) ev.name = name;
    self.template dispatch<Kind>(ev, b.get<M>());
  }

  // A timeout's message, boxed with the handler it goes to.
  template <class Kind, class M>
  static void hold_timeout(detail::event_box& content, run_fn& run, M&& msg) {
    using T = std::remove_cvref_t<M>;
    static_assert((detail::statem_handles<Impl, States, Kind, T> || ...),
                  "a timeout's message needs a handle_event(State&, timeout_event / state_timeout_event / "
                  "generic_timeout_event, const Msg&) in some state");
    content.template emplace<T>(std::forward<M>(msg));
    run = &deliver<Kind, T>;
  }

  template <class Kind, class M>
  [[nodiscard]] static action set_timer(detail::statem_timer which, std::string name, bool absolute, std::int64_t ns, M&& msg) {
    action a;
    a.kind = (!absolute && ns < 0) ? detail::statem_action_kind::cancel_timer : detail::statem_action_kind::set_timer;
    a.timer = which;
    a.absolute = absolute;
    a.ns = ns;
    if (!name.empty()) a.name = std::move(name);  // only generic timeouts have one
    if (a.kind == detail::statem_action_kind::set_timer) hold_timeout<Kind>(a.content, a.run, std::forward<M>(msg));
    return a;
  }
  [[nodiscard]] static action cancel(detail::statem_timer which, std::string name) {
    action a;
    a.kind = detail::statem_action_kind::cancel_timer;
    a.timer = which;
    if (!name.empty()) a.name = std::move(name);
    return a;
  }
  template <class Kind, class M>
  [[nodiscard]] static action update(detail::statem_timer which, std::string name, M&& msg) {
    action a = set_timer<Kind>(which, std::move(name), false, 0, std::forward<M>(msg));
    a.kind = detail::statem_action_kind::update_timer;
    return a;
  }
  static std::int64_t delay_ns(std::chrono::steady_clock::duration d) noexcept {
    if (d == infinity) return -1;
    return detail::clamp_delay(d);
  }

  template <class Kind, class M>
  static queued boxed(M&& m) {
    queued q;
    q.content.template emplace<M>(std::move(m));
    q.run = &deliver<Kind, M>;
    return q;
  }
  template <class R, class Req>
  static queued boxed_call(Req&& req, reply_to<R>&& to) {
    using P = std::pair<Req, reply_to<R>>;
    queued q;
    q.content.template emplace<P>(std::move(req), std::move(to));
    q.run = [](gen_statem& self, detail::event_box& b, std::string_view) {
      auto& p = b.get<P>();
      call_event<R> ev{detail::handle_access::slot_of(p.second)};
      self.template dispatch<call_event<R>>(ev, p.first);
    };
    return q;
  }

  detail::process_of<Impl>* proc() noexcept { return detail::process_of<Impl>::from_impl(static_cast<Impl*>(this)); }
  Impl& impl() noexcept { return static_cast<Impl&>(*this); }

  // -- the event loop -------------------------------------------------------------

  // An event from the mailbox. `box` keeps it, if the handler postpones it.
  template <class Kind, class M, class Box>
  void external(Kind& ev, M& m, Box&& box) {
    postpone_box_ = &box;
    box_fn_ = [](void* f) -> queued { return (*static_cast<std::remove_reference_t<Box>*>(f))(); };
    dispatch<Kind>(ev, m);
    drain();
  }

  // Runs the current state's handler for one event and carries out the
  // transition it returns.
  template <class Kind, class M>
  void dispatch(Kind& ev, M& m) {
    timers_[0].active = false;  // any event cancels the event timeout
    auto run = [&](auto& s) -> transition {
      using S = std::remove_reference_t<decltype(s)>;
      if constexpr (detail::statem_handles<Impl, S, Kind, M>) {
        try {
          using returned = decltype(impl().handle_event(s, ev, m));
          if constexpr (std::is_void_v<returned>) {
            impl().handle_event(s, ev, m);
            return keep_state();
          } else if constexpr (std::is_convertible_v<returned, transition>) {
            return impl().handle_event(s, ev, m);
          } else {
            static_assert(detail::always_false<Impl, returned>,
                          "gen_statem: handle_event returns a transition (next_state, keep_state, repeat_state, "
                          "stop, stop_and_reply) or void");
            return keep_state();
          }
        } catch (...) {
          crashed(std::current_exception(), detail::type_name<M>(), detail::statem_where<Kind, S>());
          return stop();
        }
      } else {
        crashed(std::make_exception_ptr(std::logic_error(fmt::format(
                    "unhandled event: {} {} in state {} (no handle_event overload takes it there)",
                    detail::statem_kind_name<Kind>(), detail::type_name<M>(), detail::type_name<S>()))),
                detail::type_name<M>(), detail::statem_where<Kind, S>());
        return stop();
      }
    };
    transition t = std::visit(run, state_);
    if (crashed_) return;
    if (!apply_simple(t)) apply(std::move(t), false);
  }

  // Most events: stay, perhaps answer, perhaps re-arm the event timeout;
  // nothing in apply would act beyond that (no state change, enter call,
  // postpone, inserted event or other timeout). Kept apart from apply so
  // that it is inlined into every event's dispatch. True if done.
  [[gnu::always_inline]] bool apply_simple(transition& t) {
    if (t.step != detail::statem_step::keep || t.rare != nullptr || t.inline_count > 1) return false;
    if (t.inline_count == 1) {
      action& a = t.inline_actions[0].a;
      if (a.kind != detail::statem_action_kind::reply) return false;
      a.run(*this, a.content, {});
      a.~action();  // done with: the transition's destructor need not look
      t.inline_count = 0;
    }
    hand_to_ = nullptr;
    postpone_box_ = nullptr;
    if (t.has_event_timeout) {
      arm_event_timeout(t.event_timeout_slot.a);
      t.event_timeout_slot.a.~event_timeout_action();  // as the reply above
      t.has_event_timeout = false;
    }
    return true;
  }

  // A reply action: the call being handled takes the machine's reference
  // to its slot with the answer, if it may (see hand_to_).
  template <class R, class... V>
  void answer(detail::reply_slot<R>* slot, V&&... value) {
    if constexpr (std::is_void_v<R> || std::is_nothrow_move_constructible_v<R>) {
      if (slot == hand_to_) {
        hand_to_ = nullptr;
        handed_ = slot->set_value_handing(std::forward<V>(value)...);
        return;
      }
    }
    slot->set_value(std::forward<V>(value)...);
  }

  void crashed(std::exception_ptr e, std::string_view msg, std::string_view where) noexcept {
    hand_to_ = nullptr;
    crashed_ = true;
    proc()->crash(std::move(e), msg, where);
  }

  // Carries out a transition (OTP's order: replies and other actions in list
  // order, the enter call, postpone, the queue, then the timeouts).
  void apply(transition&& t, bool entering) {
    hand_to_ = nullptr;  // a postpone, an enter call or a later action may still need the slot
    if (t.step == detail::statem_step::stop) {
      t.each([&](action& a) {
        if (a.kind == detail::statem_action_kind::reply) a.run(*this, a.content, {});
      });
      stopped_ = true;
      gen_server<Impl>::stop(t.take_reason());
      return;
    }
    bool postponing = false;
    bool timeouts = false;
    const char* refused = nullptr;
    t.each([&](action& a) {
      if (refused != nullptr) return;
      switch (a.kind) {
        case detail::statem_action_kind::reply:
          a.run(*this, a.content, {});
          break;
        case detail::statem_action_kind::postpone:
          if (entering) refused = "postpone";
          postponing = true;
          break;
        case detail::statem_action_kind::next_event: {
          if (entering) {
            refused = "next_event";
            break;
          }
          queued& q = inserted_.emplace_back();
          q.content = std::move(a.content);
          q.run = a.run;
          break;
        }
        case detail::statem_action_kind::hibernate:
          hibernate_ = true;
          break;
        default:
          // Armed last, in list order: this transition's, then the enter call's.
          if (entering) {
            pending_timeouts_.push_back(std::move(a));  // the enter call's transition is gone by then
          } else {
            timeouts = true;
          }
      }
    });
    if (refused != nullptr) return bad_enter(refused);
    if (entering && t.has_event_timeout) pending_timeouts_.push_back(t.take_event_timeout());
    if (entering) {
      // The enter call's own result: it may stay (or name the same state) or repeat.
      if (t.step == detail::statem_step::next && differs(*t.next)) return bad_enter("a state change");
      if (t.step == detail::statem_step::repeat) enter();
      return;
    }
    bool changed = false;
    if (t.step == detail::statem_step::next) {
      changed = differs(*t.next);
      state_ = std::move(*t.next);
    }
    if (changed) cancel_slot(timers_[1]);  // before the new state's own are armed
    if (changed || t.step == detail::statem_step::repeat) {
      enter();
      if (stopped_ || crashed_) return;
    }
    if (postponing) {
      if (postpone_box_ != nullptr) {
        postponed_.push_back(box_fn_(postpone_box_));
      } else {
        postponed_.push_back(std::move(current_));
      }
    }
    postpone_box_ = nullptr;
    if (changed && !postponed_.empty()) {
      // Retry the postponed events, oldest first, ahead of the queue.
      for (auto it = postponed_.rbegin(); it != postponed_.rend(); ++it) queue_.push_front(std::move(*it));
      postponed_.clear();
    }
    if (!inserted_.empty()) {
      for (auto it = inserted_.rbegin(); it != inserted_.rend(); ++it) queue_.push_front(std::move(*it));
      inserted_.clear();
    }
    if (timeouts) {
      t.each([&](action& a) {
        if (a.kind >= detail::statem_action_kind::set_timer) arm(a);
      });
    }
    if (t.has_event_timeout) arm_event_timeout(t.event_timeout_slot.a);
    if (!pending_timeouts_.empty()) {
      for (action& a : pending_timeouts_) arm(a);
      pending_timeouts_.clear();
    }
  }

  void bad_enter(std::string_view what) {
    crashed(std::make_exception_ptr(std::logic_error(
                fmt::format("bad_state_enter_return: a state enter call may not ask for {}", what))),
            "enter", "enter");
  }

  bool differs(const state_type& next) const {
    if (next.index() != state_.index()) return true;
    return std::visit(
        [&](const auto& now) {
          using S = std::remove_cvref_t<decltype(now)>;
          if constexpr (std::equality_comparable<S>) {
            return !(now == std::get<S>(next));
          } else {
            return false;
          }
        },
        state_);
  }

  // The current state's enter call, if it has one.
  void enter() {
    std::visit(
        [&](auto& s) {
          using S = std::remove_reference_t<decltype(s)>;
          if constexpr (detail::statem_enters<Impl, S>) {
            enter_event ev;
            transition t = keep_state();
            try {
              using returned = decltype(impl().handle_event(s, ev));
              if constexpr (std::is_void_v<returned>) {
                impl().handle_event(s, ev);
              } else if constexpr (std::is_convertible_v<returned, transition>) {
                t = impl().handle_event(s, ev);
              } else {
                static_assert(detail::always_false<Impl, returned>,
                              "gen_statem: an enter call (handle_event(State&, otpp::enter_event)) returns a "
                              "transition (keep_state, repeat_state, stop) or void");
              }
            } catch (...) {
              crashed(std::current_exception(), "enter", detail::statem_where<enter_event, S>());
              return;
            }
            if (t.step == detail::statem_step::stop) {
              apply(std::move(t), true);
              return;
            }
            if (++enter_depth_ > 1000) {
              --enter_depth_;
              return bad_enter("repeat_state a thousand times in a row");
            }
            apply(std::move(t), true);
            --enter_depth_;
          }
        },
        state_);
  }

  // Handles queued events until none is left (or the machine stops), then
  // hibernates if asked. Most events leave nothing to do: that check is inline.
  [[gnu::always_inline]] void drain() {
    if (!queue_.empty() || hibernate_) drain_queued();
  }
  void drain_queued() {
    while (!queue_.empty() && !stopped_ && !crashed_) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      postpone_box_ = nullptr;
      current_.run(*this, current_.content, current_.name);
    }
    if (hibernate_ && queue_.empty() && !stopped_ && !crashed_) {
      hibernate_ = false;
      gen_server<Impl>::hibernate();
    }
  }

  // -- timers ---------------------------------------------------------------------

  timer_slot& slot_for(detail::statem_timer which, const std::string& name) {
    if (which == detail::statem_timer::event) return timers_[0];
    if (which == detail::statem_timer::state) return timers_[1];
    for (std::size_t i = 2; i < timers_.size(); ++i)
      if (timers_[i].name == name) return timers_[i];
    timers_.emplace_back().name = name;
    return timers_.back();
  }

  // Drops a queued zero timeout of this timer, and the timer itself.
  void cancel_slot(timer_slot& s) {
    s.active = false;
    if (queue_.empty()) return;
    const auto which = static_cast<std::size_t>(&s - timers_.data());
    std::erase_if(queue_, [&](const queued& q) {
      return q.is_timeout && (which < 2 ? static_cast<std::size_t>(q.timer) == which : (q.timer == detail::statem_timer::generic && q.name == s.name));
    });
  }

  void arm(action& a) {
    timer_slot& s = slot_for(a.timer, a.name);
    if (a.kind == detail::statem_action_kind::update_timer) {
      if (s.active) {
        s.content = std::move(a.content);
        s.run = a.run;
        return;
      }
      a.kind = detail::statem_action_kind::set_timer;  // none runs: a zero timeout
      a.ns = 0;
      a.absolute = false;
    }
    cancel_slot(s);
    if (a.kind == detail::statem_action_kind::cancel_timer) return;
    // The event timeout does not start if an event is queued: it has arrived.
    if (a.timer == detail::statem_timer::event && !queue_.empty()) return;
    if (!a.absolute && a.ns == 0) {
      queued q;
      q.content = std::move(a.content);
      q.run = a.run;
      q.name = a.name;
      q.is_timeout = true;
      q.timer = a.timer;
      queue_.push_back(std::move(q));
      return;
    }
    s.content = std::move(a.content);
    s.run = a.run;
    s.active = true;
    set_deadline(s, a.timer == detail::statem_timer::event, a.absolute, a.ns);
  }

  // arm() for an event_timeout(duration, msg), without building an action.
  // Inlined into each event's dispatch, as most events of a machine that
  // uses it re-arm it (then set_deadline only notes the delay).
  [[gnu::always_inline]] void arm_event_timeout(event_timeout_action& e) {
    // An event queued has arrived: the timeout does not start (and a
    // queued zero timeout of it goes); a zero one is queued as an event.
    if (!queue_.empty() || e.ns <= 0) [[unlikely]] {
      arm_as_action(e);
      return;
    }
    timer_slot& s = timers_[0];
    s.content = std::move(e.content);
    s.run = e.run;
    s.active = true;
    set_deadline(s, true, false, e.ns);
  }
  [[gnu::noinline]] void arm_as_action(event_timeout_action& e) {
    action a = std::move(e);
    arm(a);
  }

  // The armed timer `s` is due `ns` from now, or at `ns` (absolute).
  [[gnu::always_inline]] void set_deadline(timer_slot& s, bool event, bool absolute, std::int64_t ns) {
    if (event && !absolute && !timers_on_own_clock_) {
      // Counted from when the machine waits for its next event, as a
      // receive's `after` counts: any event before then cancels it anyway,
      // so re-arming per event reads no clock. (A virtual clock is read at
      // once: a test may move it as soon as it has the reply.)
      s.delay = ns;
      s.waits_dry = true;
      proc()->ask_mailbox_dry();
      return;
    }
    set_deadline_by_clock(s, absolute, ns);
  }
  [[gnu::noinline]] void set_deadline_by_clock(timer_slot& s, bool absolute, std::int64_t ns) {
    s.waits_dry = false;
    s.deadline = absolute ? ns : detail::timer_due_after_ns(*proc()->rt(), ns);
    schedule_if_sooner(s);
  }
  // The event timeout starts counting.
  void start_counting(timer_slot& s) {
    s.waits_dry = false;
    s.deadline = detail::timer_due_after_ns(*proc()->rt(), s.delay);
  }
  void on_mailbox_dry() {
    timer_slot& s = timers_[0];
    if (!s.waits_dry) return;
    if (!s.active) {
      s.waits_dry = false;
      return;
    }
    start_counting(s);
    schedule_if_sooner(s);
  }
  // A timer message for s's deadline, unless the one on its way comes no later.
  void schedule_if_sooner(timer_slot& s) {
    if (!s.live || s.live_deadline > s.deadline) schedule(s);
  }

  void schedule(timer_slot& s) {
    const std::int64_t now = detail::timer_now_ns(*proc()->rt());
    s.live = true;
    s.live_deadline = s.deadline;
    ++s.generation;
    const auto slot = static_cast<std::uint32_t>(&s - timers_.data());
    (void)detail::start_timer<detail::statem_tick_node<Impl>, detail::statem_tick>(
        *proc()->rt(), proc(), detail::statem_tick{slot, s.generation}, std::chrono::nanoseconds(std::max<std::int64_t>(0, s.deadline - now)),
        0, detail::pid_target{});
  }

  // A timer message arrived.
  void on_tick(detail::statem_tick t) {
    if (t.slot >= timers_.size()) return;
    timer_slot& s = timers_[t.slot];
    if (t.generation != s.generation) return;  // superseded by an earlier deadline
    s.live = false;
    if (!s.active) return;
    if (s.waits_dry) start_counting(s);  // an earlier arming's timer message came first
    if (detail::timer_now_ns(*proc()->rt()) < s.deadline) {
      schedule(s);  // re-armed for later while this one was on its way
      return;
    }
    s.active = false;
    current_.content = std::move(s.content);
    current_.run = s.run;
    current_.name = s.name;
    postpone_box_ = nullptr;
    current_.run(*this, current_.content, current_.name);
    drain();
  }

  // -- init -----------------------------------------------------------------------

  init_result run_init() {
    timers_on_own_clock_ = detail::timers_on_own_clock(*proc()->rt());
    transition t = keep_state();
    if constexpr (requires(Impl& i) { i.init(); }) {
      if constexpr (std::is_void_v<decltype(impl().init())>) {
        impl().init();
      } else {
        t = impl().init();
      }
    }
    if (t.step == detail::statem_step::stop) {
      exit_reason reason = t.take_reason();
      gen_server<Impl>::stop(reason);
      return init_result{init_result::kind::stop, std::move(reason)};
    }
    if (t.step == detail::statem_step::next) state_ = std::move(*t.next);
    // The first state's enter call runs as if the machine had changed into it.
    t.step = detail::statem_step::repeat;
    t.next.reset();
    apply(std::move(t), false);
    drain();
    return {};
  }

  state_type state_{};
  std::deque<queued> queue_;
  std::vector<queued> postponed_;
  std::vector<timer_slot> timers_ = std::vector<timer_slot>(2);  // [0] the event timeout, [1] the state timeout, then generic ones
  std::vector<action> pending_timeouts_;  // kept: their capacity is reused
  std::vector<queued> inserted_;
  queued current_;                  // the queued event being handled
  void* postpone_box_ = nullptr;    // boxes the mailbox event being handled, if it is postponed
  // The call being handled, while its reply may take the call's reference
  // to the slot to the caller: only until the handler's transition is known
  // to be a plain answer (apply_simple), after which nothing reads the slot.
  detail::reply_slot_base* hand_to_ = nullptr;
  bool handed_ = false;  // ...and it did
  queued (*box_fn_)(void*) = nullptr;
  unsigned enter_depth_ = 0;
  bool hibernate_ = false;
  bool timers_on_own_clock_ = false;  // a virtual clock: timeouts count from the handler
  bool stopped_ = false;
  bool crashed_ = false;
};

namespace detail {

struct statem_access {
  template <class Impl>
  static init_result run_init(Impl& i) {
    return i.run_init();
  }
  template <class Impl>
  static void on_tick(Impl& i, statem_tick t) {
    i.on_tick(t);
  }
  template <class Impl>
  static void mailbox_dry(Impl& i) {
    i.on_mailbox_dry();
  }
};

template <class Impl>
init_result run_statem_init(Impl& impl) {
  return statem_access::run_init(impl);
}

template <class Impl>
std::string statem_state_label(const Impl& impl) {
  return std::visit([](const auto& s) { return fmt::format("state {}", type_name<std::remove_cvref_t<decltype(s)>>()); },
                    impl.state());
}

template <class Impl>
void statem_mailbox_dry(Impl& impl) noexcept {
  try {
    statem_access::mailbox_dry(impl);
  } catch (...) {
    // Out of memory arming the event timeout: a crash, as in any callback.
    process_of<Impl>::from_impl(&impl)->crash(std::current_exception(), "timeout", "timeout");
  }
}

template <class Impl>
struct statem_tick_node final : message_node {
  explicit statem_tick_node(statem_tick t) noexcept : tick{t} { fn = &handle; }
  static constexpr bool runtime_message = true;  // a bounded mailbox never refuses a timeout
  statem_tick tick;
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<statem_tick_node*>(n);
    const statem_tick t = self->tick;
    free_node(self);
    if (op != msg_op::invoke) return;
    try {
      statem_access::on_tick(impl_of<Impl>(p), t);
    } catch (...) {
      p.crash(std::current_exception(), "timeout", "timeout");
    }
  }
};

}  // namespace detail

}  // namespace otpp
