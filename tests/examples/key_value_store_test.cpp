// examples::key_value_store through its public API.
#include <string>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "key_value_store.hpp"

TEST_CASE("key_value_store: put replaces, get of an unknown key is nothing, remove says if it was there",
          "[examples][key_value_store]") {
  using kv = examples::key_value_store<std::string, int>;
  otpp::runtime rt{{.workers = 2}};
  auto s = rt.start<kv>().value();
  otpp::cast(s, kv::put{"b", 2});
  otpp::cast(s, kv::put{"a", 1});
  otpp::cast(s, kv::put{"a", 10});
  CHECK(otpp::call(s, kv::get{"a"}) == 10);
  CHECK_FALSE(otpp::call(s, kv::get{"zz"}));
  CHECK(otpp::call(s, kv::keys{}) == std::vector<std::string>{"a", "b"});
  CHECK(otpp::call(s, kv::remove{"a"}));
  CHECK_FALSE(otpp::call(s, kv::remove{"a"}));
  CHECK(otpp::call(s, kv::size{}) == 1);
}
