// std::exit(n) from inside a handler of the default runtime exits with n:
// static destruction shuts the runtime down from one of its own threads.
#include <cstdlib>
#include <future>

#include <otpp/otpp.hpp>

namespace {
class quitter : public otpp::gen_server<quitter> {
 public:
  struct quit {};
  struct get {};
  void handle_cast(quit) { std::exit(3); }
  int handle_call(get) { return 1; }
};
}  // namespace

int main() {
  auto bystander = otpp::start<quitter>().value();
  auto q = otpp::start<quitter>().value();
  otpp::cast(q, quitter::quit{});
  // Wait for the handler's exit to end the program: returning from main
  // would race it with exit(0). If it never comes, the test times out.
  std::promise<void>{}.get_future().wait();
  return 0;
}
