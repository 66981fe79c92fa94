#include <otpp/term.hpp>

#include <fmt/format.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"

using otpp::atom;
using otpp::term;

namespace {
std::string bytes(std::initializer_list<int> v) {
  std::string s;
  for (int b : v) s.push_back(static_cast<char>(b));
  return s;
}
std::string text(const term& t) { return fmt::format("{}", t); }

/// A term with one of everything, nested.
term everything() {
  otpp::big_integer big{false, {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a}};
  otpp::term_list improper{{term{1}, term{2}}, {term{3}}};
  return term::tuple(
      atom{"ok"}, 0, 255, 256, -1, std::int64_t{-2147483648LL}, std::int64_t{2147483648LL}, INT64_MIN, INT64_MAX,
      std::uint64_t{18446744073709551615ULL}, big, otpp::big_integer{true, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
      3.25, -0.0, "binary", otpp::binary{std::string{"\0\xff", 2}}, term::charlist("abc"), term{}, improper,
      term::map({{atom{"a"}, 1}, {"k", term::list(1, 2)}}),
      otpp::remote_pid{"cpp@host", 7, 1, 0x12345678}, otpp::remote_ref{"cpp@host", 3, {1, 2, 3}},
      otpp::remote_port{"cpp@host", 1ULL << 40, 9}, atom{"ünïcode"});
}
}  // namespace

TEST_CASE("term: every kind survives encode and decode") {
  const term t = everything();
  const term back = otpp::decode_term(otpp::encode_term(t));
  CHECK(back == t);
  CHECK(text(back) == text(t));
}

TEST_CASE("term: decodes what Erlang's term_to_binary writes") {
  // term_to_binary({ok, 42}) on OTP 25 (latin-1 atoms as ATOM_EXT).
  CHECK(otpp::decode_term(bytes({131, 104, 2, 100, 0, 2, 111, 107, 97, 42})) == term::tuple(atom{"ok"}, 42));
  // "abc" as a charlist (STRING_EXT) and [1 | 2] (an improper list).
  CHECK(otpp::decode_term(bytes({131, 107, 0, 3, 97, 98, 99})) == term::charlist("abc"));
  CHECK(otpp::decode_term(bytes({131, 108, 0, 0, 0, 1, 97, 1, 97, 2})) == term{otpp::term_list{{term{1}}, {term{2}}}});
  // The old float form, 1.5, and a negative 32-bit integer.
  std::string old_float = bytes({131, 99});
  old_float += "1.50000000000000000000e+00";
  old_float.resize(2 + 31, '\0');
  CHECK(otpp::decode_term(old_float) == term{1.5});
  CHECK(otpp::decode_term(bytes({131, 98, 255, 255, 255, 254})) == term{-2});
  // A big integer that fits 64 bits becomes an integer; zeros above are ignored.
  CHECK(otpp::decode_term(bytes({131, 110, 2, 1, 0, 1})) == term{-256});
  CHECK(otpp::decode_term(bytes({131, 110, 3, 0, 5, 0, 0})) == term{5});
  // A latin-1 atom reads as UTF-8.
  CHECK(otpp::decode_term(bytes({131, 115, 1, 0xe9})).as<atom>().name == "\xc3\xa9");
}

TEST_CASE("term: encodings are the compact ones Erlang uses") {
  CHECK(otpp::encode_term(42) == bytes({131, 97, 42}));
  CHECK(otpp::encode_term(-1) == bytes({131, 98, 255, 255, 255, 255}));
  CHECK(otpp::encode_term(std::int64_t{1} << 40) == bytes({131, 110, 6, 0, 0, 0, 0, 0, 0, 1}));
  CHECK(otpp::encode_term(atom{"ok"}) == bytes({131, 119, 2, 111, 107}));
  CHECK(otpp::encode_term(term{}) == bytes({131, 106}));
  CHECK(otpp::encode_term(term::tuple()) == bytes({131, 104, 0}));
}

TEST_CASE("term: accessors and conversions") {
  const term t = term::tuple(atom{"ok"}, 5, "x");
  CHECK(t.is_tuple(3));
  CHECK(t[0].is_atom("ok"));
  CHECK(t[1].as<std::int64_t>() == 5);
  CHECK_THROWS_AS(t.as<otpp::term_map>(), otpp::term_error);
  CHECK_THROWS_WITH(t[1].as<atom>(), "otpp::term: expected atom, got integer");
  CHECK_THROWS_AS(t[3], otpp::term_error);

  CHECK(otpp::from_term<int>(otpp::to_term(-7)) == -7);
  CHECK_FALSE(otpp::from_term<std::uint8_t>(term{300}).has_value());
  CHECK(otpp::from_term<std::uint64_t>(term{std::uint64_t{18446744073709551615ULL}}) == 18446744073709551615ULL);
  CHECK(otpp::from_term<bool>(term{true}) == true);
  CHECK(otpp::from_term<std::string>(term{"s"}) == "s");
  CHECK_FALSE(otpp::from_term<std::string>(term{atom{"s"}}).has_value());
  using row = std::tuple<std::string, int, double>;
  const std::vector<row> rows{{"a", 1, 0.5}, {"b", 2, 1.5}};
  CHECK(otpp::from_term<std::vector<row>>(otpp::to_term(rows)) == rows);
  const std::map<std::string, std::vector<int>> m{{"x", {1, 2}}, {"y", {}}};
  CHECK(otpp::from_term<std::map<std::string, std::vector<int>>>(otpp::decode_term(otpp::encode_term(otpp::to_term(m)))) == m);
  CHECK_FALSE(otpp::from_term<std::pair<int, int>>(term::tuple(1, "x")).has_value());

  const term map = term::map({{atom{"a"}, 1}});
  REQUIRE(map.find(atom{"a"}) != nullptr);
  CHECK(*map.find(atom{"a"}) == term{1});
  CHECK(map.find(atom{"b"}) == nullptr);
}

TEST_CASE("term: prints as Erlang writes it") {
  CHECK(text(term::tuple(atom{"ok"}, 42)) == "{ok, 42}");
  CHECK(text(term::list(1, "ab", 2.5)) == "[1, <<\"ab\">>, 2.5]");
  CHECK(text(term{otpp::term_list{{term{1}}, {term{2}}}}) == "[1 | 2]");
  CHECK(text(term::map({{atom{"a"}, 1}})) == "#{a => 1}");
  CHECK(text(otpp::binary{std::string{"\x01\x02", 2}}) == "<<1,2>>");
  CHECK(text(otpp::big_integer{true, {0x00, 0x01}}) == "-16#100");
}

TEST_CASE("term: malformed input is refused with where and why") {
  CHECK_THROWS_WITH(otpp::decode_term(""), Catch::Matchers::Contains("1 bytes needed, 0 left"));
  CHECK_THROWS_WITH(otpp::decode_term(bytes({130, 97, 1})), Catch::Matchers::Contains("no version byte"));
  CHECK_THROWS_WITH(otpp::decode_term(bytes({131, 97, 1, 0})), Catch::Matchers::Contains("bytes after the term"));
  CHECK_THROWS_WITH(otpp::decode_term(bytes({131, 200})), Catch::Matchers::Contains("unknown tag 200"));
  // A list that announces 2^32-1 elements in a few bytes: refused before
  // anything is reserved.
  CHECK_THROWS_WITH(otpp::decode_term(bytes({131, 108, 255, 255, 255, 255, 106})),
                    Catch::Matchers::Contains("4294967295 elements announced"));
  CHECK_THROWS_WITH(otpp::decode_term(bytes({131, 116, 0, 0, 0, 9, 97, 1})), Catch::Matchers::Contains("elements announced"));
  CHECK_THROWS_WITH(otpp::decode_term(bytes({131, 109, 0, 0, 0, 9, 1})), Catch::Matchers::Contains("9 bytes needed"));
  // A pid whose node is not an atom.
  CHECK_THROWS_WITH(otpp::decode_term(bytes({131, 88, 97, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})),
                    Catch::Matchers::Contains("not an atom"));
  // Nesting deeper than the decoder allows: 10,000 one-element tuples.
  std::string deep = bytes({131});
  for (int k = 0; k < 10000; ++k) deep += bytes({104, 1});
  deep += bytes({106});
  CHECK_THROWS_WITH(otpp::decode_term(deep), Catch::Matchers::Contains("nesting deeper than"));
  // The encoder refuses what Erlang cannot hold.
  CHECK_THROWS_AS(otpp::encode_term(atom{std::string(2000, 'a')}), otpp::term_error);
  CHECK_THROWS_AS(otpp::encode_term(otpp::remote_ref{"n@h", 0, {}}), otpp::term_error);
}

TEST_CASE("term: funs and bitstrings pass through untouched") {
  // fun erlang:self/0 (EXPORT_EXT) and <<1:3>> (BIT_BINARY_EXT), inside a tuple.
  const std::string in = bytes({131, 104, 2, 113, 100, 0, 6, 101, 114, 108, 97, 110, 103, 100, 0, 4, 115, 101, 108,
                                102, 97, 0, 77, 0, 0, 0, 1, 3, 32});
  const term t = otpp::decode_term(in);
  CHECK(t[0].is<otpp::opaque_term>());
  CHECK(t[1].is<otpp::opaque_term>());
  CHECK(otpp::encode_term(t) == in);
}

TEST_CASE("term: random corruptions of valid encodings never crash the decoder") {
  // Each mutant either decodes (and then re-encodes to bytes that decode
  // and encode to the same bytes) or throws term_error; the sanitizers watch
  // for anything else.
  std::mt19937 rng{20261202};
  const std::string good = otpp::encode_term(everything());
  int refused = 0, accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string m = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % m.size();
      switch (rng() % 4) {
        case 0: m[at] = static_cast<char>(rng()); break;
        case 1: m.erase(at, 1 + rng() % 8); break;
        case 2: m.insert(at, 1, static_cast<char>(rng())); break;
        case 3: m.resize(at); break;
      }
      if (m.empty()) m = "\x83";
    }
    try {
      const term t = otpp::decode_term(m);
      const std::string again = otpp::encode_term(t);  // compared as bytes: a mutant may hold a NaN
      CHECK(otpp::encode_term(otpp::decode_term(again)) == again);
      ++accepted;
    } catch (const otpp::term_error&) {
      ++refused;
    }
  }
  CHECK(refused > 1000);
  CHECK(accepted + refused == 20000);
}
