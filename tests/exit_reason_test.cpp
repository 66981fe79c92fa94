#include <otpp/exit_reason.hpp>

#include "catch.hpp"

TEST_CASE("exit reasons: kinds, sanity, equality, text") {
  using otpp::exit_reason;
  CHECK(exit_reason{}.is_normal());
  CHECK(exit_reason::normal().is_sane());
  CHECK(exit_reason::shutdown().is_sane());
  CHECK(exit_reason::shutdown("payload").is_sane());
  CHECK_FALSE(exit_reason::kill().is_sane());
  CHECK_FALSE(exit_reason::killed().is_sane());
  CHECK_FALSE(exit_reason::error("x").is_sane());
  CHECK(exit_reason::shutdown("a") == exit_reason::shutdown("a"));
  CHECK_FALSE(exit_reason::shutdown("a") == exit_reason::shutdown("b"));
  CHECK_FALSE(exit_reason::shutdown() == exit_reason::normal());
  CHECK(exit_reason::error("x").to_string() == "error(x)");
  CHECK(exit_reason::noproc().to_string() == "noproc");

  auto e = exit_reason::from_exception(std::make_exception_ptr(std::out_of_range("idx")));
  CHECK(e.kind() == otpp::exit_kind::exception);
  CHECK(e.detail() == "std::out_of_range: idx");
  CHECK(e.exception() != nullptr);
  CHECK(e == e);
  auto odd = exit_reason::from_exception(std::make_exception_ptr(42));
  CHECK(odd.detail() == "non-standard exception");
}

TEST_CASE("result<T> holds a value or a reason") {
  otpp::result<int> ok{5};
  CHECK(ok.has_value());
  CHECK(*ok == 5);
  CHECK(ok.value() == 5);
  otpp::result<int> bad{otpp::exit_reason::timeout()};
  CHECK_FALSE(bad);
  CHECK(bad.error().kind() == otpp::exit_kind::timeout);
  try {
    (void)bad.value();
    FAIL("value() must throw");
  } catch (const otpp::exit_error& e) {
    CHECK(e.reason().kind() == otpp::exit_kind::timeout);
    CHECK(std::string{e.what()} == "otpp exit: timeout");
  }
  otpp::result<void> v;
  CHECK(v);
  otpp::result<void> vbad{otpp::exit_reason::noproc()};
  CHECK_THROWS_AS(vbad.value(), otpp::exit_error);
}
