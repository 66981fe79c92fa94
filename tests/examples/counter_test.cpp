// examples::counter through its public API.
#include <thread>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "counter.hpp"

TEST_CASE("counter: increment, add, reset; casts from many threads all count", "[examples][counter]") {
  using examples::counter;
  otpp::runtime rt{{.workers = 2}};
  auto c = rt.start<counter>(10).value();
  CHECK(otpp::call(c, counter::increment{}) == 11);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 10'000; ++i) otpp::cast(c, counter::add{1});
    });
  for (auto& t : ts) t.join();
  CHECK(otpp::call(c, counter::get_value{}) == 40'011);
  otpp::cast(c, counter::reset{});
  CHECK(otpp::call(c, counter::get_value{}) == 0);
  otpp::stop(c);
  CHECK(otpp::try_call(c, counter::get_value{}).error().kind() == otpp::exit_kind::noproc);
}
