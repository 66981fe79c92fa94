#pragma once
// exit_reason's out-of-line code: describing exceptions and reasons.

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <typeinfo>

#include "../exit_reason.hpp"
#include "config.hpp"

namespace otpp {

OTPP_FUNC exit_reason exit_reason::of_exception(std::exception_ptr e) {
  std::string text;
  try {
    std::rethrow_exception(e);
  } catch (const exit_error& x) {
    return x.reason();
  } catch (const std::exception& ex) {
    text = demangle(typeid(ex).name()) + ": " + ex.what();
  } catch (...) {
    text = "non-standard exception";
  }
  exit_reason r{exit_kind::exception};
  r.payload_ = std::make_shared<payload>(payload{std::move(text), std::move(e), nullptr});
  return r;
}

OTPP_FUNC exit_error::exit_error(exit_reason r) : std::runtime_error{"otpp exit: " + r.to_string()}, reason_{std::move(r)} {}

OTPP_FUNC exit_error::exit_error(exit_reason r, std::string_view operation)
    : std::runtime_error{std::string{operation} + ": " + r.to_string()}, reason_{std::move(r)} {}

// Out of line: the key function, so a compiled runtime emits the vtable once.
OTPP_FUNC exit_error::~exit_error() = default;

OTPP_FUNC exit_reason::exit_reason(exit_kind k, std::string detail)
    : kind_{k}, payload_{std::make_shared<payload>(payload{std::move(detail), nullptr, nullptr})} {}

OTPP_FUNC std::string exit_reason::to_string() const {
  std::string s{kind_name(kind_)};
  if (payload_ && !payload_->detail.empty()) {
    s += '(';
    s += payload_->detail;
    s += ')';
  }
  return s;
}

OTPP_FUNC std::string exit_reason::describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return demangle(typeid(ex).name()) + ": " + ex.what();
  } catch (...) {
    return "non-standard exception";
  }
}

OTPP_FUNC std::string exit_reason::demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p{abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free};
  return status == 0 && p ? std::string{p.get()} : std::string{mangled};
}

}  // namespace otpp
