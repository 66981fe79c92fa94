#pragma once
// The out-of-line half of name_table.hpp.

#include "name_table.hpp"

namespace otpp::detail {

OTPP_FUNC void release_name(process_base& p, process_cold& c) noexcept {
  if (c.name.empty()) return;
  name_table::instance().remove(c.name, &p);
  c.name.clear();
}

}  // namespace otpp::detail
