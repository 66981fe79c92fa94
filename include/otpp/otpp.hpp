#pragma once
// otpp: Erlang/Elixir OTP for C++20. The umbrella header (everything but
// the test helpers, <otpp/testing.hpp>).

#include "agent.hpp"               // IWYU pragma: export
#include "async.hpp"               // IWYU pragma: export
#include "async_call.hpp"          // IWYU pragma: export
#include "child_spec.hpp"          // IWYU pragma: export
#include "clock.hpp"               // IWYU pragma: export
#include "counters.hpp"            // IWYU pragma: export
#include "dynamic_supervisor.hpp"  // IWYU pragma: export
#include "exit_reason.hpp"         // IWYU pragma: export
#include "gen_server.hpp"          // IWYU pragma: export
#include "gen_statem.hpp"          // IWYU pragma: export
#include "log.hpp"                 // IWYU pragma: export
#include "mailbox.hpp"             // IWYU pragma: export
#include "pool.hpp"                // IWYU pragma: export
#include "pid.hpp"                 // IWYU pragma: export
#include "process.hpp"             // IWYU pragma: export
#include "reentrant.hpp"           // IWYU pragma: export
#include "registry.hpp"            // IWYU pragma: export
#include "runtime.hpp"             // IWYU pragma: export
#include "runtime_config.hpp"      // IWYU pragma: export
#include "supervisor.hpp"          // IWYU pragma: export
#include "supervisor_events.hpp"   // IWYU pragma: export
#include "sys.hpp"                 // IWYU pragma: export
#include "table.hpp"               // IWYU pragma: export
#include "table_options.hpp"       // IWYU pragma: export
#include "task.hpp"                // IWYU pragma: export
#include "task_stream.hpp"         // IWYU pragma: export
#include "task_supervisor.hpp"     // IWYU pragma: export
#include "telemetry.hpp"           // IWYU pragma: export
#include "timer.hpp"               // IWYU pragma: export
#include "version.hpp"             // IWYU pragma: export
