// examples::search_front: a fan-out that answers within its timeout with
// what the back ends that made it found.

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "search_front.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::search_backend;
using examples::search_front;
using index_t = std::map<std::string, std::vector<std::string>>;

TEST_CASE("every back end answers: all hits, nothing failed") {
  otpp::runtime rt{{.workers = 2}};
  auto a = rt.start<search_backend>("a", index_t{{"otp", {"1"}}}).value();
  auto b = rt.start<search_backend>("b", index_t{{"otp", {"2", "3"}}}).value();
  auto front = rt.start<search_front>(std::vector{a, b}, 5000ms).value();
  auto r = otpp::call(front, search_front::search{"otp"});
  CHECK(r.hits == std::vector<std::string>{"a:1", "b:2", "b:3"});
  CHECK_FALSE(r.partial());
}

TEST_CASE("a slow back end and a dead one cost their results, not the answer") {
  otpp_test::virtual_runtime v;
  auto fast = v.rt.start<search_backend>("fast", index_t{{"otp", {"1"}}}).value();
  auto slow = v.rt.start<search_backend>("slow", index_t{{"otp", {"9"}}}, 200ms).value();
  auto dead = v.rt.start<search_backend>("dead", index_t{}).value();
  otpp::stop(dead);
  auto front = v.rt.start<search_front>(std::vector{fast, slow, dead}, 50ms).value();
  auto pending = otpp::async_call(front, search_front::search{"otp"}, otpp::infinity);
  CHECK_FALSE(pending.wait_for(10ms));  // waiting for the slow one, on the virtual clock
  v.clock->advance(50ms);
  auto r = pending.get().value();
  CHECK(r.hits == std::vector<std::string>{"fast:1"});
  REQUIRE(r.failed.size() == 2u);
  CHECK(r.failed[0] == std::pair<std::size_t, std::string>{1, "timeout"});
  CHECK(r.failed[1] == std::pair<std::size_t, std::string>{2, "noproc"});
}
