#pragma once
// runtime's out-of-line code: shutdown at destruction and the default
// runtime (one static, created on first use, wherever it is first used).

#include "../runtime.hpp"
#include "config.hpp"

namespace otpp {

OTPP_FUNC runtime::~runtime() {
  try {
    shutdown();
  } catch (...) {
    try {
      shutdown();  // a second try finishes what a bad_alloc interrupted
    } catch (...) {
    }
  }
  // Handles to its processes, and threads abandoned in stuck handlers, may
  // outlive this object: the core goes with the last of them.
  core_->release();
}

OTPP_FUNC detail::default_runtime_holder::~default_runtime_holder() {
  try {
    rt->shutdown();
  } catch (...) {
  }
}

OTPP_FUNC runtime& default_runtime() {
  static detail::default_runtime_holder holder;
  return *holder.rt;
}

}  // namespace otpp
