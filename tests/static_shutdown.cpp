// Exits with live processes on the default runtime: the runtime's static
// destruction must stop them (terminate runs), without hanging or crashing.
#include <cstdio>

#include <otpp/otpp.hpp>

namespace {
class last_words : public otpp::gen_server<last_words> {
 public:
  struct get {};
  explicit last_words(int n) : n_{n} {}
  int handle_call(get) const { return n_; }
  void terminate(const otpp::exit_reason& r) {
    std::printf("terminated %d with %s\n", n_, r.to_string().c_str());
    std::fflush(stdout);
  }

 private:
  int n_;
};
otpp::server<last_words> kept_in_a_static;  // outlives the runtime: must stay a safe handle
}  // namespace

int main() {
  auto a = otpp::start<last_words>(1).value();
  kept_in_a_static = otpp::start<last_words>(2).value();
  return otpp::call(a, last_words::get{}) == 1 ? 0 : 1;
}
