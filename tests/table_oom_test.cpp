// Tables when memory runs out: a write that cannot allocate throws
// std::bad_alloc and changes nothing; a batch insert puts all of its
// objects or none of them, whichever allocation fails (a shard growing,
// a bag's list of objects, an ordered_set's node), and the table's size
// stays exact. Each case fails the 1st, 2nd, ... allocation of the write
// in turn until the write goes through.

#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <otpp/table.hpp>

#include "catch.hpp"
#include "failing_new.hpp"

using otpp_test::failing_new::allocations_left;

namespace {
using object = std::pair<int, std::string>;

template <class Table>
std::vector<object> contents(const Table& t) {
  auto all = t.to_list();
  std::vector<object> v(all.begin(), all.end());
  std::sort(v.begin(), v.end());
  return v;
}

// Runs write() with the 1st, 2nd, ... allocation failing until it goes
// through (prepare() first each time, with no limit); after every failure
// the table must be as it was, and check() hold. Returns how many times
// it failed.
template <class Table, class Prepare, class Write, class Check>
int fail_each_allocation_in_turn(const Table& t, Prepare prepare, Write write, Check check) {
  const auto before = contents(t);
  int failures = 0;
  for (long budget = 0;; ++budget) {
    prepare();
    bool threw = false;
    allocations_left = budget;
    try {
      write();
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    allocations_left = -1;
    if (!threw) return failures;
    ++failures;
    REQUIRE(contents(t) == before);
    REQUIRE(t.size() == before.size());
    check();
  }
}

// n objects under keys 10..n+9 (the table holds 0..19 already), then key
// 100 again; values long enough to live on the heap.
std::vector<object> a_batch(int n) {
  std::vector<object> b;
  for (int k = 10; k < n + 10; ++k) b.emplace_back(k, "a value too long for the small string buffer " + std::to_string(k));
  b.emplace_back(100, "key 100 again, later in the same batch, long enough as well");
  return b;
}

// An ordered_set's nodes come from chunks that double (16 nodes first):
// its batch is long enough to need several mid-way.
template <class Kind>
void batch_insert_all_or_nothing() {
  const int n = std::is_same_v<Kind, otpp::ordered_set> ? 3000 : 300;
  auto t = otpp::table<int, std::string, Kind>::create({.access = otpp::table_access::public_access});
  for (int k = 0; k < 20; ++k) t.insert(k, "held before the batch, on the heap as well " + std::to_string(k));
  const auto batch = a_batch(n);
  std::vector<object> attempt;
  const int failures = fail_each_allocation_in_turn(
      t, [&] { attempt = batch; }, [&] { t.insert(std::move(attempt)); }, [] {});
  CHECK(failures > 0);

  // Then it went through whole: the same as the batch put with no failure.
  auto model = otpp::table<int, std::string, Kind>::create({.access = otpp::table_access::public_access});
  for (int k = 0; k < 20; ++k) model.insert(k, "held before the batch, on the heap as well " + std::to_string(k));
  model.insert(a_batch(n));
  CHECK(contents(t) == contents(model));
  CHECK(t.size() == model.size());
}
}  // namespace

TEST_CASE("set: a batch insert that runs out of memory anywhere puts none of its objects; then all") {
  batch_insert_all_or_nothing<otpp::set>();
}
TEST_CASE("ordered_set: a batch insert that runs out of memory anywhere puts none of its objects; then all") {
  batch_insert_all_or_nothing<otpp::ordered_set>();
}
TEST_CASE("bag: a batch insert that runs out of memory anywhere puts none of its objects; then all") {
  batch_insert_all_or_nothing<otpp::bag>();
}
TEST_CASE("duplicate_bag: a batch insert that runs out of memory anywhere puts none of its objects; then all") {
  batch_insert_all_or_nothing<otpp::duplicate_bag>();
}

TEST_CASE("insert_new of a batch that runs out of memory puts none; then all; then none of them again") {
  auto t = otpp::table<int, std::string>::create({.access = otpp::table_access::public_access});
  for (int k = 0; k < 5; ++k) t.insert(k, "before " + std::to_string(k));
  std::vector<object> fresh;
  for (int k = 1000; k < 1200; ++k) fresh.emplace_back(k, "a fresh value too long for the small string buffer " + std::to_string(k));
  bool put = false;
  std::vector<object> attempt;
  const int failures = fail_each_allocation_in_turn(
      t, [&] { attempt = fresh; }, [&] { put = t.insert_new(std::move(attempt)); }, [] {});
  CHECK(failures > 0);
  CHECK(put);
  CHECK(t.size() == 205);
  CHECK_FALSE(t.insert_new(fresh));
  CHECK(t.size() == 205);
}

TEST_CASE("a bag insert under a new key that runs out of memory leaves no key without objects") {
  auto t = otpp::table<int, std::string, otpp::bag>::create({.access = otpp::table_access::public_access});
  t.insert(1, "one");
  const std::string value = "a value for key 2, too long for the small string buffer";
  const int failures = fail_each_allocation_in_turn(
      t, [] {}, [&] { t.insert(2, value); }, [&] { REQUIRE_FALSE(t.member(2)); });
  CHECK(failures > 0);
  CHECK(t.member(2));
  CHECK(t.lookup(2) == std::vector<std::string>{value});
  CHECK(t.size() == 2);
}
