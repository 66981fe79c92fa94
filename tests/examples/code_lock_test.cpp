// examples::code_lock (OTP's gen_statem example) through its public API, on
// a virtual clock: the code opens it, a pause forgets the buttons, it
// relocks by itself, buttons pressed while open are postponed.

#include <chrono>
#include <initializer_list>
#include <string>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "code_lock.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using examples::code_lock;

namespace {
struct fixture : otpp_test::virtual_runtime {
  otpp::server<code_lock> lock = rt.start<code_lock>(examples::code_lock_options{.code = {1, 2, 3, 4}}).value();
  void press(std::initializer_list<int> digits) {
    for (int d : digits) otpp::cast(lock, code_lock::button{d});
    clock->settle();  // handled (and any timeout armed) before time moves
  }
  std::string status() { return otpp::call(lock, code_lock::status{}); }
};
}  // namespace

TEST_CASE("the code opens the door; the last buttons pressed count, a wrong one does not", "[examples][code_lock]") {
  fixture f;
  CHECK(otpp::call(f.lock, code_lock::code_length{}) == 4);
  CHECK(f.status() == "locked");
  f.press({1, 2, 3, 5});
  CHECK(f.status() == "locked");
  f.press({9, 9, 1, 2, 3});
  CHECK(f.status() == "locked");
  f.press({4});  // the last four pressed are 1 2 3 4
  CHECK(f.status() == "open");
}

TEST_CASE("a pause of button_timeout forgets the buttons pressed so far", "[examples][code_lock]") {
  fixture f;
  f.press({1, 2});
  f.clock->advance(29s);
  f.press({3, 4});  // within the timeout: 1 2 3 4
  CHECK(f.status() == "open");
  f.clock->advance(10s);  // relocks (entering locked forgets the buttons)
  CHECK(f.status() == "locked");
  f.press({1, 2});
  f.clock->advance(30s);  // forgotten
  f.press({3, 4});
  CHECK(f.status() == "locked");
}

TEST_CASE("the door relocks after open_time; buttons pressed while open count after that", "[examples][code_lock]") {
  otpp::testing::telemetry_capture locked{examples::code_lock_events::locked};
  otpp::testing::telemetry_capture opened{examples::code_lock_events::opened};
  fixture f;
  f.press({1, 2, 3, 4});
  CHECK(f.status() == "open");
  f.press({1, 2, 3, 4});  // postponed while open
  CHECK(f.status() == "open");
  f.clock->advance(9s);
  CHECK(f.status() == "open");
  f.clock->advance(1s);  // relocks; the postponed buttons open it again at once
  CHECK(f.status() == "open");
  f.clock->advance(10s);
  CHECK(f.status() == "locked");
  CHECK(opened.events().size() == 2);
  CHECK(locked.events().size() == 3);  // at start, and after each opening
}

TEST_CASE("stopping an open door locks it; an empty code is a start error", "[examples][code_lock]") {
  otpp::testing::telemetry_capture locked{examples::code_lock_events::locked};
  fixture f;
  f.press({1, 2, 3, 4});
  CHECK(f.status() == "open");
  otpp::stop(f.lock);
  CHECK(locked.events().size() == 2);
  otpp_test::log_capture logs;
  CHECK_FALSE(f.rt.start<code_lock>(examples::code_lock_options{}));
}
