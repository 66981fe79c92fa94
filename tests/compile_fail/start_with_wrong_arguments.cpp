// Must not compile: the arguments of start (after any start options) must
// construct the server; the error says so at the start, once.
#include <otpp/gen_server.hpp>

struct connection : otpp::gen_server<connection> {
  explicit connection(int port) : port{port} {}
  int port;
};

void misuse() { auto c = otpp::start_link<connection>(otpp::name("db"), "localhost"); }
