// The compiled runtime (otpp::otpp_compiled): every -inl.hpp file, built
// once. Translation units that link it see declarations only
// (OTPP_HEADER_ONLY=0, set by the target), so they do not each optimise and
// emit the scheduler, the timer service and process exit.

#if OTPP_HEADER_ONLY
#error "src/otpp.cpp is the compiled runtime: build it with OTPP_HEADER_ONLY=0"
#endif

#include "otpp/detail/async_call-inl.hpp"
#include "otpp/detail/exit_reason-inl.hpp"
#include "otpp/detail/gen_server-inl.hpp"
#include "otpp/detail/links-inl.hpp"
#include "otpp/detail/log-inl.hpp"
#include "otpp/detail/name_table-inl.hpp"
#include "otpp/detail/node_pool-inl.hpp"
#include "otpp/detail/process_base-inl.hpp"
#include "otpp/detail/reply_slot-inl.hpp"
#include "otpp/detail/runtime-inl.hpp"
#include "otpp/detail/runtime_core-inl.hpp"
#include "otpp/detail/task-inl.hpp"
#include "otpp/detail/timer_service-inl.hpp"
