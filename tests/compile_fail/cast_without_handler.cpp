// Must not compile: counter has no handle_cast for `unknown`.
#include <otpp/gen_server.hpp>

struct counter : otpp::gen_server<counter> {
  struct reset {};
  void handle_cast(reset) {}
};
struct unknown {};

void misuse(const otpp::server<counter>& c) { otpp::cast(c, unknown{}); }
