#pragma once
// OTP's own gen_statem example, the code lock, in C++: a door that opens
// when the buttons pressed end with the code, stays open for a while, and
// locks again. Buttons pressed while it is open are postponed: they count
// once it has locked.
//
//   auto lock = otpp::start_link<examples::code_lock>(examples::code_lock_options{.code = {1, 2, 3, 4}}).value();
//   for (int b : {1, 2, 3, 4}) otpp::cast(lock, examples::code_lock::button{b});
//   otpp::call(lock, examples::code_lock::status{});   // "open"; "locked" again after open_time
//
// As in OTP's version: entering `locked` forgets the buttons; a button that
// does not complete the code (re)starts a state timeout (button_timeout)
// after which the buttons are forgotten; entering `open` sets a state timeout
// (open_time) that locks it; terminate locks an open door.
//
// Telemetry: [code_lock, locked] and [code_lock, opened] {count} as the
// door locks and unlocks (OTP's do_lock/do_unlock).

#include <chrono>
#include <cstddef>
#include <deque>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <otpp/exit_reason.hpp>
#include <otpp/gen_statem.hpp>
#include <otpp/telemetry.hpp>

namespace examples {

struct code_lock_options {
  std::vector<int> code{};
  std::chrono::milliseconds open_time{10'000};
  std::chrono::milliseconds button_timeout{30'000};
};

namespace code_lock_events {
inline const otpp::telemetry::event locked{"code_lock", "locked"};
inline const otpp::telemetry::event opened{"code_lock", "opened"};
}  // namespace code_lock_events

/// The door's states.
struct door_locked {};
struct door_open {};

class code_lock : public otpp::gen_statem<code_lock, door_locked, door_open> {
 public:
  /// cast: a button was pressed.
  struct button {
    int digit;
  };
  /// call → the code's length.
  struct code_length {
    using reply_type = std::size_t;
  };
  /// call → "locked" or "open".
  struct status {
    using reply_type = std::string;
  };
  // Timeout contents.
  struct forget_buttons {};
  struct relock {};

  explicit code_lock(code_lock_options opts) : opts_{std::move(opts)} {
    if (opts_.code.empty()) throw std::invalid_argument("code_lock: the code must not be empty");
  }

  // locked
  void handle_event(door_locked&, otpp::enter_event) {
    otpp::telemetry::execute(code_lock_events::locked, {{"count", 1}});
    buttons_.clear();
  }
  void handle_event(door_locked&, otpp::state_timeout_event, forget_buttons) { buttons_.clear(); }
  transition handle_event(door_locked&, otpp::cast_event, const button& b) {
    if (buttons_.size() == opts_.code.size()) buttons_.pop_front();
    buttons_.push_back(b.digit);
    if (std::equal(buttons_.begin(), buttons_.end(), opts_.code.begin(), opts_.code.end())) return next_state(door_open{});
    return keep_state(state_timeout(opts_.button_timeout, forget_buttons{}));  // incomplete or wrong
  }

  // open
  transition handle_event(door_open&, otpp::enter_event) {
    otpp::telemetry::execute(code_lock_events::opened, {{"count", 1}});
    return keep_state(state_timeout(opts_.open_time, relock{}));
  }
  transition handle_event(door_open&, otpp::state_timeout_event, relock) { return next_state(door_locked{}); }
  transition handle_event(door_open&, otpp::cast_event, const button&) { return keep_state(postpone()); }

  // any state
  template <class S>
  transition handle_event(S&, otpp::call_event<std::size_t> c, code_length) {
    return keep_state(reply(c, opts_.code.size()));
  }
  template <class S>
  transition handle_event(S&, otpp::call_event<std::string> c, status) {
    return keep_state(reply(c, std::is_same_v<S, door_open> ? "open" : "locked"));
  }

  void terminate(const otpp::exit_reason&) {
    if (std::holds_alternative<door_open>(state())) otpp::telemetry::execute(code_lock_events::locked, {{"count", 1}});
  }

 private:
  code_lock_options opts_;
  std::deque<int> buttons_;
};

}  // namespace examples
