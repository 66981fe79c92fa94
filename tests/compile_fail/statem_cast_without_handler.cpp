// Must not compile: no state of door takes the cast `unknown`.
#include <otpp/gen_statem.hpp>

struct locked {};
struct open {};
struct door : otpp::gen_statem<door, locked, open> {
  struct push {};
  transition handle_event(locked&, otpp::cast_event, const push&) { return next_state(open{}); }
};
struct unknown {};

void misuse(const otpp::server<door>& d) { otpp::cast(d, unknown{}); }
