// Shutdown under memory exhaustion: with every large allocation failing
// (the list of live processes among them), shutdown still stops every
// process and joins every thread, and a second shutdown has nothing left.

#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "failing_new.hpp"
#include "support.hpp"

using otpp_test::failing_new::refuse_large;
using otpp_test::failing_new::refused;

namespace {
class plain : public otpp::gen_server<plain> {
 public:
  struct get {};
  int handle_call(get) { return 1; }
};
}  // namespace

TEST_CASE("shutdown with no memory for its list of processes still stops them all") {
  otpp_test::log_capture logs;
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::server<plain>> procs;
  for (int i = 0; i < 2000; ++i) procs.push_back(rt.start<plain>().value());
  refuse_large = true;
  rt.shutdown();  // the 16 KB list cannot be had: one at a time instead
  refuse_large = false;
  CHECK(refused.load() > 0);
  CHECK(rt.process_count() == 0);
  for (auto& p : procs) CHECK_FALSE(p.alive());
  rt.shutdown();  // done already: returns at once
  CHECK(rt.process_count() == 0);
}
