// Must not compile: counter has no handle_call for `unknown`, awaited from a
// coroutine handler (one error: nothing of the call is built).
#include <otpp/async_call.hpp>

struct counter : otpp::gen_server<counter> {
  struct get {};
  int handle_call(get) { return 0; }
};
struct unknown {
  using reply_type = int;
};

otpp::async<int> misuse(otpp::server<counter> c) { co_return co_await otpp::async_call(c, unknown{}); }
