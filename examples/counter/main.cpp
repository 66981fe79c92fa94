// Starts a counter, talks to it from several threads, and stops it.
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "counter.hpp"

int main() {
  using examples::counter;
  auto c = otpp::start<counter>(10).value();
  fmt::print("started counter {} at {}\n", c, otpp::call(c, counter::get_value{}));
  fmt::print("increment -> {}\n", otpp::call(c, counter::increment{}));

  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&c] {
      for (int i = 0; i < 25'000; ++i) otpp::cast(c, counter::add{1});
    });
  }
  for (auto& t : clients) t.join();
  fmt::print("after 4 threads x 25,000 casts of add{{1}}: {}\n", otpp::call(c, counter::get_value{}));

  otpp::cast(c, counter::reset{});
  fmt::print("after reset: {}\n", otpp::call(c, counter::get_value{}));
  otpp::stop(c);
  auto r = otpp::try_call(c, counter::get_value{});
  fmt::print("after stop, a call fails with: {}\n", r.error());
  return 0;
}
