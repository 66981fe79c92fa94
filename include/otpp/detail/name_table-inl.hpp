#pragma once
// The out-of-line half of name_table.hpp.

#include "name_table.hpp"

namespace otpp::detail {

OTPP_FUNC void release_name(process_base& p, process_cold& c) noexcept {
  if (c.name.empty()) return;
  name_table::instance().remove(c.name, &p);
  c.name.clear();
}

OTPP_FUNC std::optional<exit_reason> register_local_name(process_base* p, std::string name, const void* type) {
  if (name.empty()) return exit_reason::error("empty process name");
  if (process_base* holder = name_table::instance().add(name, p, type)) {
    auto why = already_started_by(holder);
    holder->release();
    return why;
  }
  try {
    p->cold_state().name = std::move(name);
  } catch (...) {
    name_table::instance().remove(name, p);
    throw;
  }
  return std::nullopt;
}

}  // namespace otpp::detail
