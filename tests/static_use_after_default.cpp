// A static object constructed before the default runtime uses it from its
// destructor, after the runtime has been shut down at exit: the use fails
// cleanly (start reports the shutdown, calls noproc) instead of touching
// freed memory.
#include <cstdio>

#include <otpp/otpp.hpp>

namespace {
class echo : public otpp::gen_server<echo> {
 public:
  struct get {};
  int handle_call(get) { return 7; }
};

struct late_user {
  otpp::server<echo> kept;
  ~late_user() {
    auto r = otpp::start<echo>();
    std::printf("late start: %s\n", r ? "ok" : r.error().to_string().c_str());
    auto c = otpp::try_call(kept, echo::get{});
    std::printf("late call: %s\n", c ? "ok" : c.error().to_string().c_str());
    std::fflush(stdout);
  }
};
late_user user;  // constructed before the default runtime exists
}  // namespace

int main() {
  user.kept = otpp::start<echo>().value();
  return otpp::call(user.kept, echo::get{}) == 7 ? 0 : 1;
}
