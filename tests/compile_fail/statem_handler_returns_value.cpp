// Must not compile: a gen_statem handler returns an int, not a transition.
#include <otpp/gen_statem.hpp>

struct locked {};
struct open {};
struct door : otpp::gen_statem<door, locked, open> {
  struct push {};
  int handle_event(locked&, otpp::cast_event, const push&) { return 1; }
};

void use(const otpp::server<door>& d) { otpp::cast(d, door::push{}); }
