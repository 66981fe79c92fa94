// otpp::table (ETS): semantics per table type, traversal, counters, access
// levels, ownership (owner death, heir, give_away), names, and a stress
// test with a model check.

#include <algorithm>
#include <any>
#include <array>
#include <atomic>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <otpp/otpp.hpp>
#include <otpp/table.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

template <class Kind>
using int_table = otpp::table<int, std::string, Kind>;
using counters = otpp::table<std::string, long>;

template <class Kind>
int_table<Kind> public_table() {
  return int_table<Kind>::create({.access = otpp::table_access::public_access});
}

bool throws_table_error(auto&& f, std::string_view needle) {
  try {
    f();
  } catch (const otpp::table_error& e) {
    return std::string_view{e.what()}.find(needle) != std::string_view::npos;
  }
  return false;
}

}  // namespace

TEST_CASE("set: one object per key; insert replaces, insert_new does not") {
  auto t = public_table<otpp::set>();
  t.insert(1, "a");
  t.insert(1, "b");
  CHECK(t.lookup(1) == "b");
  CHECK_FALSE(t.insert_new(1, "c"));
  CHECK(t.insert_new(2, "c"));
  CHECK(t.size() == 2);
  CHECK(t.member(2));
  CHECK_FALSE(t.lookup(3).has_value());
  CHECK_FALSE(t.erase_object(1, "a"));
  CHECK(t.erase_object(1, "b"));
  CHECK(t.take(2) == "c");
  CHECK(t.size() == 0);
  CHECK_FALSE(t.erase(2));
}

TEST_CASE("a batch insert is all or nothing for insert_new") {
  auto t = public_table<otpp::set>();
  t.insert({{1, "a"}, {2, "b"}, {3, "c"}});
  CHECK(t.size() == 3);
  CHECK_FALSE(t.insert_new({{4, "d"}, {2, "x"}}));  // 2 is there: nothing goes in
  CHECK_FALSE(t.member(4));
  CHECK_FALSE(t.insert_new({{5, "e"}, {5, "f"}}));  // the same key twice
  CHECK(t.insert_new({{4, "d"}, {5, "e"}}));
  CHECK(t.size() == 5);
}

TEST_CASE("bag keeps distinct objects per key, duplicate_bag keeps every copy, both in insertion order") {
  auto b = public_table<otpp::bag>();
  b.insert(1, "x");
  b.insert(1, "y");
  b.insert(1, "x");
  CHECK(b.lookup(1) == std::vector<std::string>{"x", "y"});
  CHECK(b.size() == 2);
  auto d = public_table<otpp::duplicate_bag>();
  d.insert(1, "x");
  d.insert(1, "y");
  d.insert(1, "x");
  CHECK(d.lookup(1) == std::vector<std::string>{"x", "y", "x"});
  CHECK(d.size() == 3);
  CHECK(d.erase_object(1, "x"));  // every copy
  CHECK(d.lookup(1) == std::vector<std::string>{"y"});
  CHECK(d.take(1) == std::vector<std::string>{"y"});
  CHECK(d.lookup(1).empty());
  CHECK(d.size() == 0);
  std::vector<std::string> seen;
  b.insert(2, "z");
  CHECK(b.lookup(1, [&](const std::string& v) { seen.push_back(v); }));
  CHECK(seen == std::vector<std::string>{"x", "y"});
}

TEST_CASE("string keys of every length to 40 that differ in one byte (a NUL among them) are told apart") {
  // Short keys are hashed and compared a word at a time, from both ends:
  // each length and each position of the differing byte takes its own path.
  auto t = otpp::table<std::string, int>::create({.access = otpp::table_access::public_access});
  std::vector<std::string> keys;
  for (std::size_t len = 0; len <= 40; ++len) {
    keys.emplace_back(len, 'a');
    for (std::size_t at = 0; at < len; ++at) {
      for (char c : {'b', '\0'}) {
        std::string k(len, 'a');
        k[at] = c;
        keys.push_back(k);
      }
    }
  }
  for (std::size_t i = 0; i < keys.size(); ++i) REQUIRE(t.insert_new(keys[i], static_cast<int>(i)));
  CHECK(t.size() == keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) REQUIRE(t.lookup(keys[i]) == static_cast<int>(i));
  for (std::size_t len = 1; len <= 40; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      std::string k(len, 'a');
      k[at] = 'c';
      REQUIRE_FALSE(t.member(k));
    }
  }
  CHECK_FALSE(t.member(std::string(41, 'a')));
}

TEST_CASE("ordered_set walks keys in order: first, next, last, prev, to_list") {
  auto t = public_table<otpp::ordered_set>();
  for (int k : {5, 1, 9, 3}) t.insert(k, std::to_string(k));
  CHECK(t.first() == 1);
  CHECK(t.next(1) == 3);
  CHECK(t.next(4) == 5);  // not in the table: the next key after it
  CHECK(t.last() == 9);
  CHECK(t.prev(9) == 5);
  CHECK_FALSE(t.next(9).has_value());
  CHECK_FALSE(t.prev(1).has_value());
  auto all = t.to_list();
  REQUIRE(all.size() == 4);
  CHECK(all.front().first == 1);
  CHECK(all.back().first == 9);
  CHECK(std::is_sorted(all.begin(), all.end()));
}

TEST_CASE("ordered_set and set agree with a model through 60k random inserts and erases; walks follow key order") {
  auto o = public_table<otpp::ordered_set>();
  auto h = public_table<otpp::set>();
  std::map<int, std::string> model;
  unsigned x = 7;
  for (int n = 0; n < 60000; ++n) {
    x = x * 1103515245u + 12345u;
    const int k = static_cast<int>((x >> 8) % 20000);
    if ((x >> 4) % 3 == 0) {
      CHECK(o.erase(k) == (model.count(k) == 1));
      CHECK(h.erase(k) == (model.erase(k) == 1));
    } else {
      o.insert(k, std::to_string(n));
      h.insert(k, std::to_string(n));
      model[k] = std::to_string(n);
    }
  }
  CHECK(o.size() == model.size());
  CHECK(h.size() == model.size());
  // Every key around and between the present ones, and the extremes: the
  // searches in a node (a key below, between or above its separators).
  int wrong = 0;
  for (int k : {std::numeric_limits<int>::min(), -1, std::numeric_limits<int>::max()}) {
    wrong += o.member(k) ? 1 : 0;
    const auto after = model.upper_bound(k);
    wrong += o.next(k) == (after == model.end() ? std::optional<int>{} : std::optional<int>{after->first}) ? 0 : 1;
  }
  for (int k = 0; k <= 20000; ++k) {
    const auto it = model.find(k);
    wrong += o.lookup(k) == (it == model.end() ? std::optional<std::string>{} : std::optional<std::string>{it->second}) ? 0 : 1;
    const auto after = model.upper_bound(k);
    wrong += o.next(k) == (after == model.end() ? std::optional<int>{} : std::optional<int>{after->first}) ? 0 : 1;
  }
  CHECK(wrong == 0);
  std::vector<std::pair<int, std::string>> walked;
  for (auto k = o.first(); k; k = o.next(*k)) walked.emplace_back(*k, *o.lookup(*k));
  CHECK(walked == std::vector<std::pair<int, std::string>>(model.begin(), model.end()));
  std::vector<int> back;
  for (auto k = o.last(); k; k = o.prev(*k)) back.push_back(*k);
  CHECK(std::equal(back.begin(), back.end(), model.rbegin(), model.rend(), [](int a, auto& b) { return a == b.first; }));
  auto hashed = h.to_list();
  std::sort(hashed.begin(), hashed.end());
  CHECK(hashed == std::vector<std::pair<int, std::string>>(model.begin(), model.end()));
  for (auto& [k, v] : model) {  // drain: every leaf and node goes
    CHECK(o.take(k) == v);
  }
  CHECK(o.size() == 0);
  CHECK_FALSE(o.first().has_value());
}

TEST_CASE("ordered_set agrees with a model when keys arrive at both ends and in between, and leave from anywhere") {
  // Leaves fill downwards at the low end and upwards at the high end, and
  // inserts and erases in between move whichever side of a leaf is
  // shorter: every mix of the two, with objects moved as bytes (int, long)
  // and one by one (string values).
  auto bytes = otpp::table<int, long, otpp::ordered_set>::create({.access = otpp::table_access::public_access});
  auto strings = public_table<otpp::ordered_set>();
  std::map<int, long> model;
  int low = 0;
  int high = 0;
  unsigned x = 11;
  int wrong = 0;
  auto agree = [&] {
    const auto all = bytes.to_list();
    wrong += all == std::vector<std::pair<int, long>>(model.begin(), model.end()) ? 0 : 1;
    const auto named = strings.to_list();
    wrong += named.size() == model.size() ? 0 : 1;
    auto m = model.begin();
    for (std::size_t i = 0; i < named.size() && m != model.end(); ++i, ++m)
      wrong += named[i].first == m->first && named[i].second == std::to_string(m->second) ? 0 : 1;
  };
  for (int n = 1; n <= 40000; ++n) {
    x = x * 1103515245u + 12345u;
    int k = 0;
    switch ((x >> 8) % 5) {
      case 0: k = --low; break;   // below every key
      case 1: k = ++high; break;  // above every key
      case 2: k = low + static_cast<int>((x >> 12) % static_cast<unsigned>(high - low + 1)); break;
      default: {  // erase one: near either end or anywhere
        if (model.empty()) continue;
        const unsigned where = (x >> 12) % 3;
        auto it = where == 0 ? model.begin() : where == 1 ? std::prev(model.end()) : model.lower_bound(low + static_cast<int>((x >> 14) % static_cast<unsigned>(high - low + 1)));
        if (it == model.end()) continue;
        wrong += bytes.erase(it->first) && strings.erase(it->first) ? 0 : 1;
        model.erase(it);
        continue;
      }
    }
    bytes.insert(k, n);
    strings.insert(k, std::to_string(n));
    model[k] = n;
    if (n % 4000 == 0) agree();
  }
  agree();
  CHECK(wrong == 0);
  CHECK(bytes.size() == model.size());
  for (auto& [k, v] : model) CHECK(bytes.take(k) == v);
  CHECK(bytes.size() == 0);
}

TEST_CASE("a set under insert/erase churn in a few keys finds exactly the model's keys after every hundred steps") {
  // Few keys per shard, most of them erased again and again: probe chains
  // wrap around small shards and run through erased slots, which an erase
  // may empty again only where no chain goes past them.
  auto h = public_table<otpp::set>();
  std::map<int, std::string> model;
  unsigned x = 11;
  int wrong = 0;
  for (int n = 0; n < 100000; ++n) {
    x = x * 1103515245u + 12345u;
    const int k = static_cast<int>((x >> 8) % 300);
    if ((x >> 4) % 2 == 0) {
      CHECK(h.erase(k) == (model.erase(k) == 1));
    } else {
      h.insert(k, std::to_string(n));
      model[k] = std::to_string(n);
    }
    if (n % 100 == 0) {
      for (int key = 0; key < 600; ++key) {  // the upper half is never inserted
        auto it = model.find(key);
        const auto got = h.lookup(key);
        if (it == model.end() ? got.has_value() : got != it->second) ++wrong;
      }
      if (h.size() != model.size()) ++wrong;
    }
  }
  CHECK(wrong == 0);
  auto all = h.to_list();
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<std::pair<int, std::string>>(model.begin(), model.end()));
}

// In-order keys split nodes at the ends of the tree (full nodes, not
// half-full ones) and skip the walk from the root; keys then inserted
// between them split in the middle.
template <class K, class V, class Key>
void check_filled_in_order(Key key) {
  auto o = otpp::table<K, V, otpp::ordered_set>::create({.access = otpp::table_access::public_access});
  std::map<K, V> model;
  for (int i = 20000; i < 40000; ++i) o.insert(key(i), V(i)), model[key(i)] = V(i);  // ascending: right edge
  for (int i = 19999; i >= 0; i -= 2) o.insert(key(i), V(i)), model[key(i)] = V(i);  // descending: left edge
  for (int i = 1; i < 20000; i += 2) o.insert(key(i), V(i)), model[key(i)] = V(i);   // between
  CHECK(o.size() == model.size());
  int missing = 0;
  for (auto& [k, v] : model) missing += o.lookup(k) == v ? 0 : 1;
  CHECK(missing == 0);
  CHECK_FALSE(o.member(K{}));
  CHECK_FALSE(o.member(key(40000)));
  std::vector<std::pair<K, V>> walked;
  for (auto k = o.first(); k; k = o.next(*k)) walked.emplace_back(*k, *o.lookup(*k));
  CHECK(walked == std::vector<std::pair<K, V>>(model.begin(), model.end()));
  for (int i = 0; i < 40000; i += 3) CHECK(o.erase(key(i)) == (model.erase(key(i)) == 1));
  CHECK(o.to_list() == std::vector<std::pair<K, V>>(model.begin(), model.end()));
  for (int i = 40000; i < 40100; ++i) o.insert(key(i), V(i)), model[key(i)] = V(i);  // the edges again, after erases
  for (int i = 0; i < 40000; i += 3) o.insert(key(i), V(i)), model[key(i)] = V(i);
  CHECK(o.to_list() == std::vector<std::pair<K, V>>(model.begin(), model.end()));
}

TEST_CASE("ordered_set filled in key order (ascending, descending, then between) finds every key and walks in order") {
  SECTION("string keys (objects moved one by one)") {
    check_filled_in_order<std::string, int>([](int i) { return fmt::format("k{:07}", i); });
  }
  SECTION("int keys and long values (objects moved as bytes)") {
    check_filled_in_order<int, long>([](int i) { return 2 * i + 2; });
  }
  SECTION("double keys") {
    check_filled_in_order<double, long>([](int i) { return 0.5 * i + 1.0; });
  }
}

TEST_CASE("a hash table's first/next visit every key once; next of a missing key is an error") {
  auto t = public_table<otpp::set>();
  for (int k = 0; k < 500; ++k) t.insert(k, "v");
  std::vector<int> seen;
  for (auto k = t.first(); k; k = t.next(*k)) seen.push_back(*k);
  std::sort(seen.begin(), seen.end());
  REQUIRE(seen.size() == 500);
  for (int k = 0; k < 500; ++k) CHECK(seen[static_cast<std::size_t>(k)] == k);
  CHECK(throws_table_error([&] { (void)t.next(1000); }, "not in the table"));
}

TEST_CASE("select pages through matches with a limit; an ordered continuation sees keys inserted after the cursor") {
  auto t = public_table<otpp::ordered_set>();
  for (int k = 0; k < 100; ++k) t.insert(k, std::to_string(k));
  auto even = [](int k, const std::string&) { return k % 2 == 0; };
  auto page = t.select(even, 10);
  REQUIRE(page.objects.size() == 10);
  CHECK(page.objects.back().first == 18);
  REQUIRE(page.more);
  t.insert(200, "200");  // after the cursor: seen
  t.insert(-2, "-2");    // before it: not
  std::vector<int> rest;
  while (page.more) {
    page = t.select(std::move(*page.more));
    for (auto& [k, v] : page.objects) rest.push_back(k);
  }
  CHECK(rest.size() == 41);  // 20..98 (40 keys) and 200
  CHECK(rest.back() == 200);
  CHECK(std::find(rest.begin(), rest.end(), -2) == rest.end());
}

TEST_CASE("select over a hash table returns each match once across pages, even while others insert") {
  auto t = public_table<otpp::set>();
  for (int k = 0; k < 1000; ++k) t.insert(k, "old");
  auto page = t.select([](int, const std::string& v) { return v == "old"; }, 64);
  std::vector<int> seen;
  for (auto& [k, v] : page.objects) seen.push_back(k);
  int next_new = 1000;
  while (page.more) {
    for (int i = 0; i < 10; ++i) t.insert(next_new++, "new");  // never match
    page = t.select(std::move(*page.more));
    CHECK(page.objects.size() <= 64);
    for (auto& [k, v] : page.objects) seen.push_back(k);
  }
  std::sort(seen.begin(), seen.end());
  CHECK(seen.size() == 1000);
  CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
}

TEST_CASE("select_count and select_delete per table type; a throwing predicate leaves the shard it was in whole") {
  auto even = [](const int& k, const std::string&) { return k % 2 == 0; };
  auto h = public_table<otpp::set>();
  auto o = public_table<otpp::ordered_set>();
  for (int k = 0; k < 1000; ++k) h.insert(k, "v"), o.insert(k, "v");
  CHECK(h.select_count(even) == 500);
  CHECK(o.select_count(even) == 500);
  CHECK(h.select_delete(even) == 500);
  CHECK(o.select_delete(even) == 500);
  CHECK(h.size() == 500);
  CHECK(o.size() == 500);
  CHECK_FALSE(h.member(10));
  CHECK(o.to_list().front().first == 1);
  CHECK(o.select_count(even) == 0);

  auto b = public_table<otpp::duplicate_bag>();
  for (int k = 0; k < 10; ++k) b.insert({{k, "a"}, {k, "b"}, {k, "a"}});
  CHECK(b.select_count([](const int&, const std::string& v) { return v == "a"; }) == 20);
  CHECK(b.select_delete([](const int& k, const std::string& v) { return v == "a" || k == 3; }) == 21);
  CHECK(b.size() == 9);
  CHECK(b.lookup(4) == std::vector<std::string>{"b"});
  CHECK_FALSE(b.member(3));  // every object under 3 went: so did the key

  auto c = public_table<otpp::set>();
  for (int k = 0; k < 100; ++k) c.insert(k, "v");
  std::size_t calls = 0;
  CHECK_THROWS_AS(c.select_delete([&](const int&, const std::string&) -> bool {
                    if (++calls == 50) throw std::runtime_error("pred failed");
                    return true;
                  }),
                  std::runtime_error);
  const std::size_t left = c.size();
  CHECK(left > 0);
  CHECK(left < 100);  // the shards swept before the throw lost their objects
  CHECK(c.to_list().size() == left);
  CHECK(c.select_count([](const int&, const std::string&) { return true; }) == left);
}

TEST_CASE("size is exact with one table-wide counter and with per-shard counters, under concurrent writes") {
  for (bool decentralized : {false, true}) {
    auto t = otpp::table<int, long>::create(
        {.access = otpp::table_access::public_access, .write_concurrency = true, .decentralized_counters = decentralized});
    std::vector<std::thread> ts;
    for (int w = 0; w < 4; ++w)
      ts.emplace_back([&t, w] {
        for (int i = 0; i < 5000; ++i) t.insert(w * 100000 + i, i);
        for (int i = 0; i < 5000; i += 2) (void)t.erase(w * 100000 + i);
        (void)t.update_counter(w * 100000 + 7777777, 1, 0L);  // created by its default
      });
    for (auto& th : ts) th.join();
    CHECK(t.size() == 4 * 2501);
    CHECK(t.info().size == 4 * 2501);
    CHECK(t.delete_all_objects() == 4 * 2501);
    CHECK(t.size() == 0);
  }
}

TEST_CASE("foldl's function runs outside the locks: it may write to the table") {
  auto t = public_table<otpp::set>();
  for (int k = 0; k < 50; ++k) t.insert(k, "v");
  const int sum = t.foldl(0, [&](int acc, int k, const std::string&) {
    t.insert(k, "w");  // a write to the shard being walked: no deadlock
    return acc + k;
  });
  CHECK(sum == 49 * 50 / 2);
  CHECK(t.size() == 50);
  CHECK(t.select([](int, const std::string& v) { return v == "w"; }).objects.size() == 50);
}

TEST_CASE("update_counter: increments, bounds, initial values; update_element changes in place") {
  auto c = counters::create({.access = otpp::table_access::public_access});
  CHECK(throws_table_error([&] { (void)c.update_counter("hits", 1); }, "no counter under the key"));
  CHECK(c.update_counter("hits", 1, 10L) == 11);  // created at 10, then incremented
  CHECK(c.update_counter("hits", 5) == 16);
  CHECK(c.update_counter("hits", 5, otpp::counter_bound<long>{20, 0}) == 0);  // 21 > 20: wraps to 0
  CHECK(c.update_counter("hits", -1, otpp::counter_bound<long>{0, 100}) == 100);  // -1 < 0: set to 100
  CHECK(c.update_counter("new", 2, otpp::counter_bound<long>{3, 0}, 0L) == 2);
  CHECK(c.lookup("new") == 2);
  CHECK(c.update_element("new", [](long& v) { v *= 10; }));
  CHECK(c.lookup("new") == 20);
  CHECK_FALSE(c.update_element("absent", [](long& v) { v = 1; }));
  CHECK(c.delete_all_objects() == 2);
  CHECK(c.size() == 0);
}

namespace {

// Owns a table made in init; writes on request.
class owner_server : public otpp::gen_server<owner_server> {
 public:
  using table_t = otpp::table<int, std::string, otpp::set>;
  struct get_table {};
  struct put {
    int k;
    std::string v;
  };
  struct give {
    otpp::pid to;
  };
  struct crash {};

  explicit owner_server(otpp::table_options o) : options_{std::move(o)} {}
  void init() { table_ = table_t::create(std::move(options_)); }
  table_t handle_call(get_table) const { return table_; }
  bool handle_call(put p) {
    table_.insert(p.k, std::move(p.v));
    return true;
  }
  bool handle_call(give g) {
    table_.give_away(g.to, std::string{"yours"});
    return true;
  }
  void handle_cast(crash) { throw std::runtime_error("owner broke"); }

 private:
  otpp::table_options options_;
  table_t table_;
};

// Receives tables (ETS-TRANSFER) and writes to them once it owns them.
class heir_server : public otpp::gen_server<heir_server> {
 public:
  using table_t = owner_server::table_t;
  using info_types = otpp::type_list<otpp::table_transfer<table_t>>;
  struct received {};
  struct put {
    int k;
  };
  void handle_info(otpp::table_transfer<table_t> t) {
    table_ = t.table;
    data_ = std::any_cast<std::string>(t.data);
    from_ = t.from;
  }
  struct give {
    otpp::pid to;
  };
  std::pair<bool, std::string> handle_call(received) const { return {!table_.deleted(), data_}; }
  bool handle_call(give g) {
    table_.give_away(g.to, std::string{"again"});
    return true;
  }
  bool handle_call(put p) {
    table_.insert(p.k, "from heir");
    return true;
  }
  otpp::pid handle_call(otpp::pid) const { return from_; }

 private:
  table_t table_;
  std::string data_;
  otpp::pid from_;
};

}  // namespace

TEST_CASE("protected: the owner writes, others read; a write from elsewhere is a clear error and changes nothing") {
  otpp::runtime rt{{.workers = 2}};
  auto o = rt.start<owner_server>(otpp::table_options{.name = "prot"}).value();
  auto t = otpp::call(o, owner_server::get_table{});
  CHECK(otpp::call(o, owner_server::put{1, "a"}));
  CHECK(t.lookup(1) == "a");  // from this thread, no message
  CHECK(throws_table_error([&] { t.insert(2, "b"); }, "otpp::table::insert on set table 'prot': the table is protected"));
  CHECK_FALSE(t.member(2));
  CHECK(t.info().owner == o.pid());
  CHECK(t.info().access == otpp::table_access::protected_access);
}

TEST_CASE("private: only the owner reads") {
  otpp::runtime rt{{.workers = 2}};
  auto o = rt.start<owner_server>(otpp::table_options{.access = otpp::table_access::private_access}).value();
  auto t = otpp::call(o, owner_server::get_table{});
  CHECK(otpp::call(o, owner_server::put{1, "a"}));
  CHECK(throws_table_error([&] { (void)t.lookup(1); }, "private"));
}

TEST_CASE("the table is deleted when its owner exits without an heir; its name is free again") {
  otpp::runtime rt{{.workers = 2}};
  auto o = rt.start<owner_server>(otpp::table_options{.name = "mortal"}).value();
  auto t = otpp::call(o, owner_server::get_table{});
  CHECK(owner_server::table_t::named("mortal").has_value());
  CHECK_FALSE((otpp::table<int, int>::named("mortal").has_value()));  // another type: not found
  otpp::stop(o);
  CHECK(t.deleted());
  CHECK(throws_table_error([&] { (void)t.lookup(1); }, "deleted"));
  CHECK_FALSE(owner_server::table_t::named("mortal").has_value());
  auto again = rt.start<owner_server>(otpp::table_options{.name = "mortal"});
  CHECK(again.has_value());
}

TEST_CASE("a name already taken is refused at create") {
  auto a = otpp::table<int, int>::create({.name = "dup", .access = otpp::table_access::public_access});
  CHECK(throws_table_error([] { (void)otpp::table<int, int>::create({.name = "dup", .access = otpp::table_access::public_access}); },
                           "the name 'dup' is taken"));
  a.delete_table();
  CHECK(a.deleted());
  auto b = otpp::table<int, int>::create({.name = "dup", .access = otpp::table_access::public_access});
  CHECK_FALSE(b.deleted());
  b.delete_table();
}

TEST_CASE("a table made outside a process must be public") {
  CHECK(throws_table_error([] { (void)otpp::table<int, int>::create(); }, "must be public"));
}

TEST_CASE("an heir inherits the table when the owner crashes, with the heir data, and becomes its owner") {
  otpp::runtime rt{{.workers = 2}};
  auto h = rt.start<heir_server>().value();
  auto o = rt.start<owner_server>(otpp::table_options{.heir = h.pid(), .heir_data = std::string{"heir data"}}).value();
  auto t = otpp::call(o, owner_server::get_table{});
  CHECK(otpp::call(o, owner_server::put{1, "kept"}));
  otpp_test::log_capture quiet;
  otpp::cast(o, owner_server::crash{});
  REQUIRE(otpp::await_exit(o.pid(), 5s).has_value());
  CHECK_FALSE(t.deleted());
  CHECK(t.lookup(1) == "kept");
  CHECK(otpp::call(h, heir_server::received{}) == std::pair<bool, std::string>{true, "heir data"});
  CHECK(otpp::call(h, otpp::pid{}) == o.pid());
  CHECK(t.owner() == h.pid());
  CHECK(otpp::call(h, heir_server::put{2}));
  CHECK(t.lookup(2) == "from heir");
  // The heir stays set: given away again, the table comes back at the next crash.
  auto o2 = rt.start<owner_server>(otpp::table_options{}).value();
  CHECK(otpp::call(h, heir_server::give{o2.pid()}));
  CHECK(t.owner() == o2.pid());
  otpp::cast(o2, owner_server::crash{});
  REQUIRE(otpp::await_exit(o2.pid(), 5s).has_value());
  CHECK(t.owner() == h.pid());
  CHECK_FALSE(t.deleted());
  otpp::stop(h);  // the heir is the owner now: it takes the table with it
  CHECK(t.deleted());
}

TEST_CASE("give_away hands the table to another process; the giver can no longer write") {
  otpp::runtime rt{{.workers = 2}};
  auto h = rt.start<heir_server>().value();
  auto o = rt.start<owner_server>(otpp::table_options{}).value();
  auto t = otpp::call(o, owner_server::get_table{});
  CHECK(otpp::call(o, owner_server::give{h.pid()}));
  CHECK(otpp::call(h, heir_server::received{}) == std::pair<bool, std::string>{true, "yours"});
  CHECK(t.owner() == h.pid());
  otpp_test::log_capture quiet;
  auto r = otpp::try_call(o, owner_server::put{1, "no"});
  REQUIRE_FALSE(r);  // the throw crashed the old owner
  CHECK(r.error().to_string().find("only its owner") != std::string::npos);
  CHECK_FALSE(t.deleted());  // the old owner's death does not touch it
  CHECK(otpp::call(h, heir_server::put{3}));
  CHECK(t.lookup(3) == "from heir");
}

TEST_CASE("give_away to a dead process or to oneself is refused") {
  otpp::runtime rt{{.workers = 2}};
  auto o = rt.start<owner_server>(otpp::table_options{}).value();
  auto dead = rt.start<heir_server>().value();
  otpp::stop(dead);
  otpp_test::log_capture quiet;
  auto r = otpp::try_call(o, owner_server::give{dead.pid()});
  REQUIRE_FALSE(r);
  CHECK(r.error().to_string().find("live process other than the owner") != std::string::npos);
}

TEST_CASE("readers never see an object half written: 2 writers, 2 readers, with and without reader groups") {
  // Every object is 8 copies of one number; a reader that got in while a
  // writer was copying one would see two numbers (and TSan a race).
  for (bool groups : {false, true}) {
    using block = std::array<long, 8>;
    auto t = otpp::table<int, block>::create({.access = otpp::table_access::public_access, .read_concurrency = groups});
    constexpr int keys = 4;  // few keys: readers and writers meet on them
    for (int k = 0; k < keys; ++k) t.insert(k, block{});
    std::atomic<bool> writing{true};
    std::atomic<int> torn{0};
    std::atomic<long> reads{0};
    std::vector<std::thread> ts;
    for (int w = 0; w < 2; ++w)
      ts.emplace_back([&, w] {
        for (long v = 1; v <= 20000; ++v) {
          block b;
          b.fill(v * 2 + w);
          t.insert(static_cast<int>(v % keys), b);
        }
      });
    for (int r = 0; r < 2; ++r)
      ts.emplace_back([&] {
        long n = 0;
        while (writing.load(std::memory_order_relaxed) || n < 1000) {
          const auto b = t.lookup(static_cast<int>(n % keys));
          if (b && std::any_of(b->begin(), b->end(), [&](long x) { return x != b->front(); })) ++torn;
          ++n;
        }
        reads += n;
      });
    ts[0].join();
    ts[1].join();
    writing = false;
    ts[2].join();
    ts[3].join();
    CHECK(torn.load() == 0);
    CHECK(reads.load() >= 2000);
  }
}

TEST_CASE("read_concurrency readers while writes come in bursts: every value whole, no key's version goes back") {
  // Readers run alone between bursts, so each burst's writers meet readers
  // that have been in and out of every shard many times; for 2 ms at least,
  // so that the table is biased again (lookups without the locks) and each
  // burst's first write revokes that, with the readers in it. Values are longer
  // than a string's inline buffer: a reader copying one while a writer
  // replaces it would read freed memory (ASan) or race (TSan). A reader's
  // visitor on one table looks up the other, and another key of its own:
  // reads inside a read.
  auto make = [] {
    return otpp::table<int, std::string>::create({.access = otpp::table_access::public_access, .read_concurrency = true});
  };
  auto a = make();
  auto b = make();
  constexpr int keys = 64;
  constexpr int bursts = 150;
  auto value = [](int k, long version) {
    return fmt::format("{}:{}:{}", k, version, std::string(static_cast<std::size_t>(24 + version % 16), static_cast<char>('a' + version % 26)));
  };
  // The version in v, if v is whole and for key k; else -1.
  auto version_of = [](int k, const std::string& v) -> long {
    const auto c1 = v.find(':');
    const auto c2 = v.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos || std::stoi(v.substr(0, c1)) != k) return -1;
    const long version = std::stol(v.substr(c1 + 1, c2 - c1 - 1));
    const std::string pad = v.substr(c2 + 1);
    if (pad != std::string(static_cast<std::size_t>(24 + version % 16), static_cast<char>('a' + version % 26))) return -1;
    return version;
  };
  for (int k = 0; k < keys; ++k) {
    a.insert(k, value(k, 0));
    b.insert(k, value(k, 0));
  }
  std::atomic<bool> writing{true};
  std::atomic<long> reads{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r)
    readers.emplace_back([&, r] {
      std::array<long, keys> seen_a{};
      std::array<long, keys> seen_b{};
      auto check = [&](int k, const std::string& v, std::array<long, keys>& seen) {
        const long version = version_of(k, v);
        if (version < seen[static_cast<std::size_t>(k)]) ++bad;  // torn (-1) or older than seen
        seen[static_cast<std::size_t>(k)] = std::max(seen[static_cast<std::size_t>(k)], version);
      };
      for (long n = r; writing.load(std::memory_order_relaxed); ++n) {
        const int k = static_cast<int>(n * 7 % keys);
        if (n % 4 != 0) {
          auto v = a.lookup(k);
          if (!v) ++bad;
          else check(k, *v, seen_a);
        } else {
          const bool found = a.lookup(k, [&](const std::string& v) {
            check(k, v, seen_a);
            auto w = b.lookup(k);
            if (!w) ++bad;
            else check(k, *w, seen_b);
            // And a read of the same table inside: a writer waiting for
            // this read to end must not hold the lock that one needs.
            const int j = (k + 1) % keys;
            auto u = a.lookup(j);
            if (!u) ++bad;
            else check(j, *u, seen_a);
          });
          if (!found) ++bad;
        }
        reads.fetch_add(1, std::memory_order_relaxed);
      }
    });
  std::array<long, keys> version{};
  unsigned x = 7;
  for (int burst = 0; burst < bursts; ++burst) {
    for (int w = 0; w < 40; ++w) {
      x = x * 1103515245u + 12345u;
      const int k = static_cast<int>((x >> 8) % keys);
      const long v = ++version[static_cast<std::size_t>(k)];
      a.insert(k, value(k, v));
      b.insert(k, value(k, v));
    }
    // The readers alone for a while: a few thousand lookups each, over
    // more than read_concurrency's 1 ms between a revocation and the next bias.
    const long until = reads.load() + 8000;
    const auto not_before = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
    while (reads.load() < until || std::chrono::steady_clock::now() < not_before) std::this_thread::yield();
  }
  writing = false;
  for (auto& t : readers) t.join();
  CHECK(bad.load() == 0);
  for (int k = 0; k < keys; ++k) {
    CHECK(version_of(k, a.lookup(k).value()) == version[static_cast<std::size_t>(k)]);
    CHECK(version_of(k, b.lookup(k).value()) == version[static_cast<std::size_t>(k)]);
  }
}

TEST_CASE("read_concurrency readers on threads that come and go, while a writer writes in bursts: every value whole") {
  // Each thread that reads a biased table takes a slot the writers look
  // through, and leaves it to a later thread when it ends: 240 short-lived
  // readers, 4 at a time, meet a writer whose bursts each revoke the bias
  // (2 ms apart, so that it is set again in between).
  auto t = otpp::table<int, std::string>::create({.access = otpp::table_access::public_access, .read_concurrency = true});
  constexpr int keys = 16;
  auto value = [](int k, long version) { return fmt::format("{}:{}:{}", k, version, std::string(40, static_cast<char>('a' + version % 26))); };
  auto whole = [](int k, const std::string& v) {
    const auto c1 = v.find(':');
    const auto c2 = v.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos || std::stoi(v.substr(0, c1)) != k) return false;
    const long version = std::stol(v.substr(c1 + 1, c2 - c1 - 1));
    return v.substr(c2 + 1) == std::string(40, static_cast<char>('a' + version % 26));
  };
  for (int k = 0; k < keys; ++k) t.insert(k, value(k, 0));
  std::atomic<bool> reading{true};
  std::atomic<int> bad{0};
  std::atomic<long> bursts{0};
  std::thread writer([&] {
    for (long version = 1; reading.load(); ++version) {
      for (int k = 0; k < keys; ++k) t.insert(k, value(k, version));
      ++bursts;
      const auto next = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
      while (reading.load() && std::chrono::steady_clock::now() < next) std::this_thread::yield();
    }
  });
  for (int round = 0; round < 60; ++round) {
    std::vector<std::thread> readers;
    for (int r = 0; r < 4; ++r)
      readers.emplace_back([&, r] {
        for (int n = 0; n < 2000; ++n) {
          const int k = (n * 5 + r) % keys;
          const auto v = t.lookup(k);
          if (!v || !whole(k, *v)) ++bad;
        }
      });
    for (auto& th : readers) th.join();
  }
  reading = false;
  writer.join();
  CHECK(bad.load() == 0);
  CHECK(bursts.load() >= 1);
  for (int k = 0; k < keys; ++k) CHECK(whole(k, t.lookup(k).value()));
}

TEST_CASE("stress: 4 threads x mixed operations; the table equals a sequential replay, counter sums are exact") {
  // Readers counted in groups on the table, on the lock word for the counters: both locks.
  auto t = otpp::table<int, long>::create(
      {.access = otpp::table_access::public_access, .read_concurrency = true, .write_concurrency = true});
  auto c = counters::create({.access = otpp::table_access::public_access, .write_concurrency = true});
  constexpr int threads = 4;
  constexpr int ops = 20000;
  std::vector<std::map<int, long>> models(threads);
  std::atomic<int> mismatches{0};  // Catch's CHECK is not for other threads
  auto expect = [&](bool ok) {
    if (!ok) ++mismatches;
  };
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) {
    ts.emplace_back([&, i] {
      auto& model = models[static_cast<std::size_t>(i)];
      unsigned x = 12345u + static_cast<unsigned>(i);
      for (int n = 0; n < ops; ++n) {
        x = x * 1103515245u + 12345u;
        const int k = i * 1000 + static_cast<int>((x >> 8) % 200);  // each thread its own keys
        switch ((x >> 20) % 6) {
          case 0:
            t.insert(k, n);
            model[k] = n;
            break;
          case 1:
            if (t.insert_new(k, n)) model.emplace(k, n);
            break;
          case 2:
            expect(t.erase(k) == (model.erase(k) == 1));
            break;
          case 3: {
            auto v = t.take(k);
            auto it = model.find(k);
            expect(v.has_value() == (it != model.end()));
            if (it != model.end()) {
              expect(*v == it->second);
              model.erase(it);
            }
            break;
          }
          case 4:
            t.insert({{k, n}, {k + 500, n}});
            model[k] = n;
            model[k + 500] = n;
            break;
          default: {
            auto v = t.lookup(k);
            auto it = model.find(k);
            expect(v.has_value() == (it != model.end()));
            if (v && it != model.end()) expect(*v == it->second);
          }
        }
        (void)c.update_counter(n % 2 ? "shared" : "t" + std::to_string(i), 1, 0L);
      }
    });
  }
  // A reader walks the table meanwhile: never an object twice in one pass.
  std::atomic<bool> done{false};
  std::thread walker([&] {
    while (!done) {
      auto all = t.to_list();
      std::sort(all.begin(), all.end());
      expect(std::adjacent_find(all.begin(), all.end(), [](auto& a, auto& b) { return a.first == b.first; }) == all.end());
    }
  });
  for (auto& th : ts) th.join();
  done = true;
  walker.join();
  CHECK(mismatches == 0);
  std::map<int, long> expected;
  for (auto& m : models) expected.insert(m.begin(), m.end());
  auto all = t.to_list();
  std::map<int, long> actual(all.begin(), all.end());
  CHECK(actual == expected);
  CHECK(t.size() == expected.size());
  CHECK(c.lookup("shared") == threads * ops / 2);
  for (int i = 0; i < threads; ++i) CHECK(c.lookup("t" + std::to_string(i)) == ops / 2);
}
