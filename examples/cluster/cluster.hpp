#pragma once
// The rate limiter as a cluster sees it: a server that speaks Erlang terms
// and answers with the typed examples::rate_limiter behind it.
//
//   GenServer.call({:rate_limiter, :"otpp_cluster@host"}, {:check, "alice"})
//     #=> {:allowed, 4}  |  {:limited, 58_300}   (milliseconds to wait)
//   GenServer.call({:rate_limiter, node}, {:reset, "alice"})  #=> :ok
//
// Anything else is answered {:error, :bad_request}, so a typo on the Elixir
// side gets an answer instead of crashing the gateway.

#include <string>

#include <otpp/async_call.hpp>
#include <otpp/gen_server.hpp>
#include <otpp/term.hpp>

#include "rate_limiter.hpp"

namespace examples {

class rate_limit_gateway : public otpp::gen_server<rate_limit_gateway> {
 public:
  explicit rate_limit_gateway(otpp::server<rate_limiter> limiter) : limiter_{std::move(limiter)} {}

  otpp::async<otpp::term> handle_call(otpp::term request) {
    using otpp::atom;
    if (request.is_tuple(2) && request[1].is<otpp::binary>()) {
      std::string key = request[1].as<otpp::binary>().bytes;
      if (request[0].is_atom("check")) {
        rate_limiter::check check{std::move(key)};  // its own statement: see async_call.hpp on GCC 12
        auto pending = otpp::async_call(limiter_, std::move(check));
        const rate_limiter::decision d = co_await pending;
        if (d.allowed) co_return otpp::term::tuple(atom{"allowed"}, d.remaining);
        co_return otpp::term::tuple(atom{"limited"}, static_cast<std::int64_t>(d.retry_after.count()));
      }
      if (request[0].is_atom("reset")) {
        rate_limiter::reset reset{std::move(key)};
        auto pending = otpp::async_call(limiter_, std::move(reset));
        co_await pending;
        co_return atom{"ok"};
      }
    }
    co_return otpp::term::tuple(atom{"error"}, atom{"bad_request"});
  }

 private:
  otpp::server<rate_limiter> limiter_;
};

}  // namespace examples
