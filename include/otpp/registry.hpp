#pragma once
// Names: look processes up by the name they were started with, and talk to
// them by name (Erlang's registered names, Elixir's `name:` option).
//
//   auto c = otpp::start<cache>(otpp::name("cache")).value();
//   otpp::whereis<cache>("cache");            // server<cache>, empty if absent
//   otpp::call<cache>("cache", cache::get{}); // noproc if nobody holds the name
//   otpp::start<cache>(otpp::named);          // named after the type:
//   otpp::call<cache>(cache::get{});          //   the __MODULE__ idiom
//
// A name is registered before init runs and released when the process exits
// (or when start fails). Names are process-wide (like a node's): one table
// for every runtime. A typed lookup of a name held by another server type
// finds nothing. Casts to a missing name are dropped; calls and stops fail
// with noproc.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "detail/name_table.hpp"
#include "gen_server.hpp"
#include "process.hpp"

namespace otpp {

/// The process registered as `name`, or an empty pid.
[[nodiscard]] inline pid whereis(std::string_view name) {
  detail::process_base* p = detail::name_table::instance().find(name);
  pid out = detail::pid_access::make(p);
  if (p) p->release();
  return out;
}

/// The server<Impl> registered as `name`, or an empty handle (also when the
/// name is held by a process of another type).
template <class Impl>
[[nodiscard]] server<Impl> whereis(std::string_view name) {
  detail::process_base* p = detail::name_table::instance().find(name, detail::type_id<Impl>);
  server<Impl> out{detail::pid_access::make(p)};
  if (p) p->release();
  return out;
}

/// The name the __MODULE__ idiom uses for Impl (see otpp::named).
template <class Impl>
[[nodiscard]] constexpr std::string_view name_of() noexcept {
  return detail::type_name<Impl>();
}

/// Registers the calling process under `name` (Process.register(self(), name)).
/// Returns false outside a process, if the name is taken, or if the process
/// already has a name.
inline bool register_name(std::string name) {
  detail::process_base* me = detail::tls.current;
  if (me == nullptr || name.empty()) return false;
  auto& c = me->cold_state();
  if (!c.name.empty()) return false;
  if (detail::process_base* holder = detail::name_table::instance().add(name, me, nullptr)) {
    holder->release();
    return false;
  }
  c.name = std::move(name);
  return true;
}

/// Removes the calling process's name. Returns false if it had none.
inline bool unregister_name() {
  detail::process_base* me = detail::tls.current;
  if (me == nullptr) return false;
  detail::process_cold* c = me->cold_if_any();
  if (c == nullptr || c->name.empty()) return false;
  detail::release_name(*me, *c);
  return true;
}

/// Every registered name.
[[nodiscard]] inline std::vector<std::string> registered() {
  std::vector<std::string> out;
  detail::name_table::instance().for_each([&](std::string_view n, detail::process_base*) { out.emplace_back(n); });
  return out;
}

/// call / try_call / cast / stop by name.
template <class Impl, class Req>
[[nodiscard]] auto try_call(std::string_view name, Req&& req,
                            std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return try_call(whereis<Impl>(name), std::forward<Req>(req), timeout);
}
template <class Impl, class Req>
auto call(std::string_view name, Req&& req, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return call(whereis<Impl>(name), std::forward<Req>(req), timeout);
}
template <class Impl, class Msg>
void cast(std::string_view name, Msg&& msg) {
  cast(whereis<Impl>(name), std::forward<Msg>(msg));
}

/// The __MODULE__ idiom: call the server registered under Impl's own name.
template <class Impl, class Req>
  requires(!std::is_convertible_v<Req, std::string_view>)
auto call(Req&& req, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return call(whereis<Impl>(name_of<Impl>()), std::forward<Req>(req), timeout);
}
template <class Impl, class Req>
  requires(!std::is_convertible_v<Req, std::string_view>)
[[nodiscard]] auto try_call(Req&& req, std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return try_call(whereis<Impl>(name_of<Impl>()), std::forward<Req>(req), timeout);
}
template <class Impl, class Msg>
  requires(!std::is_convertible_v<Msg, std::string_view>)
void cast(Msg&& msg) {
  cast(whereis<Impl>(name_of<Impl>()), std::forward<Msg>(msg));
}

}  // namespace otpp
