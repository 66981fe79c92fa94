// The test helpers of otpp/testing.hpp: start_supervised and await_child.
// (virtual_clock is exercised by timer_test.)

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <otpp/otpp.hpp>
#include <otpp/testing.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

using otpp_test::journal;

class helper_child : public otpp::gen_server<helper_child> {
 public:
  explicit helper_child(std::shared_ptr<journal> j) : j_{std::move(j)} {}
  void init() { trap_exit(true); }
  void terminate(const otpp::exit_reason& r) { j_->add("child " + r.to_string()); }

 private:
  std::shared_ptr<journal> j_;
};

// Starts a linked helper of its own in init.
class parent : public otpp::gen_server<parent> {
 public:
  struct helper_pid {};
  struct crash {};
  explicit parent(std::shared_ptr<journal> j) : j_{std::move(j)} {}
  void init() {
    trap_exit(true);
    helper_ = otpp::start_link<helper_child>(j_).value().pid();
    j_->add("start");
  }
  void terminate(const otpp::exit_reason& r) { j_->add("parent " + r.to_string()); }
  otpp::pid handle_call(helper_pid) const { return helper_; }
  void handle_call(crash) { throw std::runtime_error("boom"); }

 private:
  std::shared_ptr<journal> j_;
  otpp::pid helper_;
};

class refuses : public otpp::gen_server<refuses> {
 public:
  otpp::init_result init() { return stop(otpp::exit_reason::error("no")); }
};

}  // namespace

TEST_CASE("start_supervised stops the process and what it started at scope exit", "[testing]") {
  otpp::runtime rt{{.workers = 2}};
  auto j = std::make_shared<journal>();
  otpp::pid p, helper;
  {
    auto s = otpp::testing::start_supervised<parent>(rt, j).value();
    p = s.get().pid();
    REQUIRE(p);
    helper = otpp::call(s.get(), parent::helper_pid{});
    CHECK(helper.alive());
  }
  CHECK_FALSE(p.alive());
  CHECK(otpp::await_exit(helper, 5s));
  CHECK(j->has("parent shutdown"));
  CHECK(rt.process_count() == 0);
}

TEST_CASE("start_supervised restarts a crashed process; get() follows it", "[testing]") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::log_capture logs;
  auto j = std::make_shared<journal>();
  auto s = otpp::testing::start_supervised<parent>(rt, j).value();
  const otpp::pid first = s.get().pid();
  CHECK_FALSE(otpp::try_call(s.get(), parent::crash{}));
  const otpp::pid second = otpp::testing::await_child(s.supervisor(), s.id(), first);
  REQUIRE(second);
  CHECK(second != first);
  CHECK(s.get().pid() == second);
  s.stop();
  s.stop();  // idempotent
  CHECK_FALSE(second.alive());
  CHECK_FALSE(s.get());
}

TEST_CASE("start_supervised returns the start error and leaves nothing running", "[testing]") {
  otpp::runtime rt{{.workers = 2}};
  otpp_test::log_capture logs;
  auto s = otpp::testing::start_supervised<refuses>(rt);
  REQUIRE_FALSE(s);
  CHECK(s.error() == otpp::exit_reason::error("no"));
  CHECK(rt.process_count() == 0);
}

TEST_CASE("await_child gives up after its timeout", "[testing]") {
  otpp::runtime rt{{.workers = 2}};
  auto j = std::make_shared<journal>();
  auto s = otpp::testing::start_supervised<helper_child>(rt, j).value();
  const otpp::pid now = s.get().pid();
  CHECK(otpp::testing::await_child(s.supervisor(), s.id(), {}, 1s) == now);
  CHECK_FALSE(otpp::testing::await_child(s.supervisor(), s.id(), now, 10ms));
  CHECK_FALSE(otpp::testing::await_child(s.supervisor(), "nobody", {}, 10ms));
}
