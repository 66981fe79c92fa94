// Puts a few keys, reads them back, removes one.
#include <string>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "key_value_store.hpp"

int main() {
  using kv = examples::key_value_store<std::string, int>;
  auto s = otpp::start<kv>().value();
  otpp::cast(s, kv::put{"apples", 3});
  otpp::cast(s, kv::put{"pears", 5});
  otpp::cast(s, kv::put{"apples", 4});
  fmt::print("keys {}\n", otpp::call(s, kv::keys{}));
  fmt::print("apples -> {}\n", otpp::call(s, kv::get{"apples"}).value_or(-1));
  fmt::print("plums -> {}\n", otpp::call(s, kv::get{"plums"}) ? "found" : "not there");
  const bool removed = otpp::call(s, kv::remove{"pears"});
  fmt::print("remove pears -> {}, size now {}\n", removed, otpp::call(s, kv::size{}));
  otpp::stop(s);
  return 0;
}
