// A consumer of the installed (or vendored) package: the umbrella header,
// the test helpers and one reusable example server, built with the warnings
// a strict project turns on (-Wall -Wextra -Wpedantic -Wshadow
// -Wnon-virtual-dtor -Werror).
#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>
#include <otpp/version.hpp>

#include "counter.hpp"

static_assert(OTPP_VERSION >= 200, "otpp/version.hpp names this release");

struct echo : otpp::gen_server<echo> {
  int handle_call(int x) { return x; }
};

int main() {
  auto e = otpp::start<echo>().value();
  int r = otpp::call(e, 41) + 1;
  otpp::stop(e);
  auto c = otpp::start<examples::counter>().value();
  r += static_cast<int>(otpp::call(c, examples::counter::increment{})) - 1;
  otpp::stop(c);
  return r == 42 ? 0 : 1;
}
