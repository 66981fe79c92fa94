// Pushes, peeks and pops until the stack is empty.
#include <string>

#include <fmt/core.h>

#include "stack.hpp"

int main() {
  using stack = examples::stack<std::string>;
  auto s = otpp::start<stack>(std::vector<std::string>{"bottom"}).value();
  for (const char* v : {"a", "b", "c"}) otpp::cast(s, stack::push{v});
  fmt::print("size {}, top {}\n", otpp::call(s, stack::size{}), otpp::call(s, stack::peek{}).value_or("-"));
  while (auto v = otpp::call(s, stack::pop{})) fmt::print("pop -> {}\n", *v);
  fmt::print("pop on empty -> {}\n", otpp::call(s, stack::pop{}) ? "a value" : "nothing");
  otpp::stop(s);
  return 0;
}
