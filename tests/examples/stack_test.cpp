// examples::stack through its public API.
#include <string>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "stack.hpp"

TEST_CASE("stack: last in, first out; empty pops and peeks answer nothing", "[examples][stack]") {
  using stack = examples::stack<std::string>;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<stack>(std::vector<std::string>{"x"}).value();
  otpp::cast(s, stack::push{"a"});
  otpp::cast(s, stack::push{"b"});
  CHECK(otpp::call(s, stack::size{}) == 3);
  CHECK(otpp::call(s, stack::peek{}) == "b");
  CHECK(otpp::call(s, stack::pop{}) == "b");
  CHECK(otpp::call(s, stack::pop{}) == "a");
  CHECK(otpp::call(s, stack::pop{}) == "x");
  CHECK_FALSE(otpp::call(s, stack::pop{}));
  CHECK_FALSE(otpp::call(s, stack::peek{}));
  CHECK(otpp::call(s, stack::size{}) == 0);
}

TEST_CASE("stack: pushes from many threads all arrive, each sender's in order", "[examples][stack]") {
  using stack = examples::stack<std::pair<int, int>>;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<stack>().value();
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) otpp::cast(s, stack::push{{t, i}});
    });
  for (auto& t : ts) t.join();
  CHECK(otpp::call(s, stack::size{}) == 4000);
  std::vector<int> last(4, 1000);
  while (auto v = otpp::call(s, stack::pop{})) {  // popping reverses each sender's order
    REQUIRE(v->second == last[v->first] - 1);
    last[v->first] = v->second;
  }
  CHECK(last == std::vector<int>(4, 0));
}
