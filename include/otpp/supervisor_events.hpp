#pragma once
// The telemetry events both kinds of supervisor emit (Erlang's supervisor
// reports, as :telemetry events). Attach to them with otpp::telemetry::attach.

#include "telemetry.hpp"

namespace otpp {

/// Telemetry both kinds of supervisor emit.
namespace supervisor_events {
/// A child exited and is to be restarted. Measurements: count (1).
/// Metadata: supervisor (pid), child (its id; empty under a dynamic
/// supervisor), reason (the exit reason, as text).
inline const telemetry::event child_restarting{"otpp", "supervisor", "child_restarting"};
/// Too many restarts: the supervisor stops its children and exits.
/// Metadata: supervisor (pid).
inline const telemetry::event max_restarts{"otpp", "supervisor", "max_restarts"};
}  // namespace supervisor_events

}  // namespace otpp
