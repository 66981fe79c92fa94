// Must not compile: no state of door takes the call `unknown`; the error
// names handle_event, not gen_server's handle_call.
#include <otpp/gen_statem.hpp>

struct locked {};
struct open {};
struct door : otpp::gen_statem<door, locked, open> {
  struct status {
    using reply_type = int;
  };
  transition handle_event(open&, otpp::call_event<int> c, const status&) { return keep_state(reply(c, 1)); }
};
struct unknown {
  using reply_type = int;
};

int misuse(const otpp::server<door>& d) { return otpp::call(d, unknown{}); }
