// Sessions three ways: one store process holding them all, the same with
// the sessions in a table that any thread reads without a message, and one
// process per user under a dynamic supervisor.
#include <chrono>
#include <string>
#include <thread>

#include <fmt/core.h>

#include <otpp/otpp.hpp>

#include "session_store.hpp"
#include "session_store_table.hpp"
#include "user_sessions.hpp"

int main() {
  using namespace std::chrono_literals;
  using examples::session_store;
  auto store = otpp::start<session_store>(examples::session_store_options{.ttl = 200ms, .cleanup_every = 100ms}).value();
  const std::string id = otpp::call(store, session_store::create{"user=42"}).value();
  fmt::print("created session {}\n", id);
  fmt::print("get -> {}\n", otpp::call(store, session_store::get{id}).value());
  fmt::print("get of an unknown id -> {}\n", otpp::call(store, session_store::get{"0123"}).error());
  auto until = otpp::monotonic_time() + 250ms;
  while (otpp::monotonic_time() < until) std::this_thread::sleep_for(10ms);  // a demo waiting out the ttl
  fmt::print("after the ttl, get -> {}\n", otpp::call(store, session_store::get{id}).error());
  otpp::stop(store);

  using examples::session_store_table;
  auto table_store = otpp::start<session_store_table>(examples::session_store_table_options{.ttl = 5min}).value();
  const std::string tid = otpp::call(table_store, session_store_table::create{"user=7"}).value();
  const auto sessions = otpp::call(table_store, session_store_table::get_reader{});
  std::string seen;
  std::thread reader{[&] { seen = sessions.get(tid).value(); }};  // no message: it reads the table
  reader.join();
  fmt::print("table form: a plain thread reads session {} -> {}\n", tid.substr(0, 8), seen);
  otpp::stop(table_store);

  examples::user_sessions users{{.idle_ttl = 5min, .max_users = 2}};
  auto alice = users.open("alice").value();
  otpp::cast(alice, examples::user_session::put{"cart", "3 books"});
  fmt::print("alice's process {} has cart = {}\n", alice, otpp::call(alice, examples::user_session::get{"cart"}).value_or("?"));
  fmt::print("open(alice) again finds the same process: {}\n", users.open("alice").value() == alice);
  (void)users.open("bob");
  fmt::print("a third user over max_users 2 -> {}\n", users.open("carol").error());
  (void)users.close("alice");
  fmt::print("after close(alice): {} session(s) running\n", users.count());
  return 0;
}
