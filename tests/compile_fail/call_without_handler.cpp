// Must not compile: counter has no handle_call for `unknown`.
#include <otpp/gen_server.hpp>

struct counter : otpp::gen_server<counter> {
  struct get {};
  int handle_call(get) { return 0; }
};
struct unknown {};

int misuse(const otpp::server<counter>& c) { return otpp::call(c, unknown{}); }
