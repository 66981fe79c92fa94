// The code lock: the right code opens the door, which locks again by
// itself; buttons pressed while it is open count once it has locked.
#include <chrono>
#include <thread>

#include <fmt/core.h>

#include <otpp/otpp.hpp>

#include "code_lock.hpp"

int main() {
  using namespace std::chrono_literals;
  using examples::code_lock;
  (void)otpp::telemetry::attach_many(
      "print", {examples::code_lock_events::locked, examples::code_lock_events::opened},
      [](const otpp::telemetry::event& e, const otpp::telemetry::measurements&, const otpp::telemetry::metadata&) {
        fmt::print("  [door {}]\n", e.name().back());
      });
  auto lock = otpp::start<code_lock>(examples::code_lock_options{.code = {1, 2, 3}, .open_time = 200ms}).value();
  fmt::print("code length {}, door {}\n", otpp::call(lock, code_lock::code_length{}), otpp::call(lock, code_lock::status{}));
  for (int b : {9, 1, 2}) otpp::cast(lock, code_lock::button{b});
  fmt::print("after 9 1 2: {}\n", otpp::call(lock, code_lock::status{}));
  otpp::cast(lock, code_lock::button{3});
  fmt::print("after 3: {}\n", otpp::call(lock, code_lock::status{}));
  for (int b : {1, 2, 3}) otpp::cast(lock, code_lock::button{b});  // postponed while open
  fmt::print("pressed 1 2 3 while open: {} (postponed)\n", otpp::call(lock, code_lock::status{}));
  // A demo waiting out open_time: it relocks, the postponed buttons open it again.
  const auto until = otpp::monotonic_time() + 300ms;
  while (otpp::monotonic_time() < until) std::this_thread::sleep_for(10ms);
  fmt::print("after open_time: {}\n", otpp::call(lock, code_lock::status{}));
  otpp::stop(lock);
  (void)otpp::telemetry::detach("print");
  return 0;
}
