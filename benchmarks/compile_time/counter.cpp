// The README's counter, as a user writes it: the TU whose build cost
// benchmarks/compile_time.sh measures.
#ifdef OTPP_CT_UMBRELLA
#include <otpp/otpp.hpp>
#else
#include <otpp/gen_server.hpp>
#endif

class counter : public otpp::gen_server<counter> {
 public:
  struct increment {};
  struct get_value {};
  struct reset {};

  explicit counter(int start) : value_{start} {}

  int handle_call(increment, otpp::from) { return ++value_; }
  int handle_call(get_value) { return value_; }
  void handle_cast(reset) { value_ = 0; }

 private:
  int value_;
};

#ifdef OTPP_CT_EXTRA_SERVERS
// Extra server types, each with five handlers: what one more type costs.
#define OTPP_CT_SERVER(N)                                                  \
  class extra##N : public otpp::gen_server<extra##N> {                      \
   public:                                                                  \
    struct add { int by; };                                                 \
    struct sub { int by; };                                                 \
    struct get {};                                                          \
    struct clear {};                                                        \
    struct tick {};                                                         \
    int handle_call(add a) { return v_ += a.by; }                           \
    int handle_call(sub s) { return v_ -= s.by; }                           \
    int handle_call(get) { return v_; }                                     \
    void handle_cast(clear) { v_ = 0; }                                     \
    void handle_info(tick) { ++v_; }                                        \
                                                                            \
   private:                                                                 \
    int v_ = N;                                                             \
  };                                                                        \
  static int use##N() {                                                     \
    auto s = otpp::start_link<extra##N>().value();                          \
    otpp::call(s, extra##N::add{1});                                        \
    otpp::call(s, extra##N::sub{1});                                        \
    otpp::cast(s, extra##N::clear{});                                       \
    otpp::send(s, extra##N::tick{});                                        \
    int v = otpp::call(s, extra##N::get{});                                 \
    otpp::stop(s);                                                          \
    return v;                                                               \
  }
OTPP_CT_SERVER(1)
OTPP_CT_SERVER(2)
OTPP_CT_SERVER(3)
OTPP_CT_SERVER(4)
#endif

int main() {
  auto c = otpp::start_link<counter>(10).value();
  otpp::call(c, counter::increment{});
  otpp::cast(c, counter::reset{});
  int v = otpp::call(c, counter::get_value{});
  otpp::stop(c);
#ifdef OTPP_CT_EXTRA_SERVERS
  v += use1() + use2() + use3() + use4();
#endif
  return v == 0 ? 0 : 1;
}
