#pragma once
// The classic counter server: Elixir's "GenServer counter", in otpp.
//
//   auto c = otpp::start<examples::counter>(10).value();
//   otpp::call(c, examples::counter::increment{});   // 11
//   otpp::cast(c, examples::counter::reset{});

#include <otpp/gen_server.hpp>

namespace examples {

class counter : public otpp::gen_server<counter> {
 public:
  // Pure bookkeeping, no waits: callers may run it on their own thread
  // (see otpp::declares_nonblocking_handlers).
  static constexpr bool nonblocking_handlers = true;
  struct increment {};  // call → the new value
  struct get_value {};  // call → the value
  struct add {          // cast
    long n;
  };
  struct reset {};      // cast

  explicit counter(long start = 0) : value_{start} {}

  long handle_call(increment) { return ++value_; }
  long handle_call(get_value) const { return value_; }
  void handle_cast(add a) { value_ += a.n; }
  void handle_cast(reset) { value_ = 0; }

 private:
  long value_;
};

}  // namespace examples
