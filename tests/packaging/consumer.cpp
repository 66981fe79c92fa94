#include <otpp/otpp.hpp>

struct echo : otpp::gen_server<echo> {
  int handle_call(int x) { return x; }
};

int main() {
  auto e = otpp::start<echo>().value();
  int r = otpp::call(e, 41) + 1;
  otpp::stop(e);
  return r == 42 ? 0 : 1;
}
