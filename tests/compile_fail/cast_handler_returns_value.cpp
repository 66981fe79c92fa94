// Must not compile: a cast handler returns a value that nobody would get.
#include <otpp/gen_server.hpp>

struct counter : otpp::gen_server<counter> {
  struct reset {};
  int handle_cast(reset) { return 0; }
};

void use(const otpp::server<counter>& c) { otpp::cast(c, counter::reset{}); }
