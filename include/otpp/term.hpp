#pragma once
// Erlang terms, and their external term format (ETF).
//
// otpp::term is the value BEAM nodes exchange: atoms, integers of any size,
// floats, binaries, tuples, lists (proper and improper), maps, pids,
// references and ports. It is what a served otpp process receives from an
// Elixir or Erlang node, and what it answers (see <otpp/node.hpp>).
//
//   otpp::term t = otpp::term::tuple(otpp::atom{"ok"}, 42, "text");  // {:ok, 42, "text"}
//   if (t.is_tuple() && t[0] == otpp::atom{"ok"}) ...
//   std::string wire = otpp::encode_term(t);     // 131, ...
//   otpp::term back = otpp::decode_term(wire);   // throws term_error on bad input
//
// A C++ string becomes a binary (Elixir's string); a charlist is
// term::charlist("abc"). C++ types convert through otpp::term_convert<T>
// (to_term / from_term); the common ones are built in.
//
// The decoder treats its input as hostile: every length is checked against
// the bytes that remain before anything is allocated, nesting is bounded,
// and what is malformed throws term_error naming the offset. Funs, exports
// and bitstrings are kept as opaque_term (their bytes, sent back verbatim).

#include <algorithm>
#include <array>
#include <bit>
#include <compare>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/core.h>

namespace otpp {

class term;

/// A malformed term, or a term that is not what a conversion asked for.
class term_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An atom, by name (UTF-8, at most 255 characters).
struct atom {
  std::string name;  ///< The atom's text.
  friend bool operator==(const atom&, const atom&) = default;
  friend auto operator<=>(const atom&, const atom&) = default;
};

/// A binary: bytes (Elixir's String is a binary of UTF-8).
struct binary {
  std::string bytes;  ///< The binary's bytes.
  friend bool operator==(const binary&, const binary&) = default;
};

/// An integer beyond 64 bits: sign and magnitude, little-endian bytes with
/// no trailing zero byte.
struct big_integer {
  bool negative = false;                 ///< Below zero.
  std::vector<std::uint8_t> magnitude;  ///< The absolute value, least significant byte first.
  friend bool operator==(const big_integer&, const big_integer&) = default;
};

/// A process on some node (Erlang's pid): the node's name, the process's
/// number and serial, and the node's incarnation (creation).
struct remote_pid {
  std::string node;            ///< The node's name, `name@host`.
  std::uint32_t id = 0;        ///< The process's number on that node.
  std::uint32_t serial = 0;    ///< The number's serial (reuse count).
  std::uint32_t creation = 0;  ///< Which incarnation of the node.
  friend bool operator==(const remote_pid&, const remote_pid&) = default;
  friend auto operator<=>(const remote_pid&, const remote_pid&) = default;
};

/// A reference made on some node: up to 5 32-bit words.
struct remote_ref {
  std::string node;                  ///< The node that made it.
  std::uint32_t creation = 0;        ///< Which incarnation of the node.
  std::vector<std::uint32_t> words;  ///< Its 1 to 5 words.
  friend bool operator==(const remote_ref&, const remote_ref&) = default;
  friend auto operator<=>(const remote_ref&, const remote_ref&) = default;
};

/// A port on some node.
struct remote_port {
  std::string node;            ///< The port's node.
  std::uint64_t id = 0;        ///< Its number there.
  std::uint32_t creation = 0;  ///< Which incarnation of the node.
  friend bool operator==(const remote_port&, const remote_port&) = default;
};

/// A term otpp carries but does not look into (a fun, an export, a
/// bitstring): its encoding, without the version byte, sent back as is.
struct opaque_term {
  std::string encoded;  ///< The external format, without the version byte.
  friend bool operator==(const opaque_term&, const opaque_term&) = default;
};

/// The elements of a tuple.
struct term_tuple {
  std::vector<term> elements;  ///< In order.
  friend bool operator==(const term_tuple&, const term_tuple&);
};

/// A list: its elements and, for an improper list, the tail that is not
/// a list (`[1, 2 | 3]`). An empty list is `[]` (Erlang's nil).
struct term_list {
  std::vector<term> elements;  ///< In order.
  std::vector<term> tail;      ///< Empty, or the one improper tail.
  friend bool operator==(const term_list&, const term_list&);
};

/// A map's pairs, in the order they were built or received.
struct term_map {
  std::vector<std::pair<term, term>> pairs;  ///< Key and value.
  friend bool operator==(const term_map&, const term_map&);
};

/// What kind of value a term holds.
enum class term_kind : std::uint8_t {
  integer, big_integer, floating, atom, binary, tuple, list, map, pid, reference, port, opaque
};

/// An Erlang term: a value, copied and compared like one.
class term {
 public:
  /// The alternatives, in term_kind's order.
  using value_type = std::variant<std::int64_t, big_integer, double, atom, binary, term_tuple, term_list, term_map,
                                  remote_pid, remote_ref, remote_port, opaque_term>;

  /// The empty list, `[]`. The constructors below are implicit on
  /// purpose: `term::tuple(atom{"ok"}, 42, "text")` reads like the literal.
  term() : v_{term_list{}} {}
  /// As an integer.
  term(std::int64_t i) : v_{i} {}
  /// As an integer (a big_integer beyond 64 bits).
  template <std::integral I>
    requires(!std::same_as<I, bool> && !std::same_as<I, std::int64_t> && !std::same_as<I, char>)
  term(I i) : v_{from_integral(i)} {}
  /// As the atom true or false.
  term(bool b) : v_{atom{b ? "true" : "false"}} {}
  /// As a float.
  term(double d) : v_{d} {}
  /// As an atom.
  term(atom a) : v_{std::move(a)} {}
  /// As a binary.
  term(binary b) : v_{std::move(b)} {}
  /// As a binary, as Elixir strings are.
  term(std::string s) : v_{binary{std::move(s)}} {}
  /// As a binary.
  term(std::string_view s) : v_{binary{std::string{s}}} {}
  /// As a binary.
  term(const char* s) : v_{binary{std::string{s}}} {}
  /// As an integer of any size.
  term(big_integer b) : v_{std::move(b)} {}
  /// As a tuple.
  term(term_tuple t) : v_{std::move(t)} {}
  /// As a list.
  term(term_list l) : v_{std::move(l)} {}
  /// As a map.
  term(term_map m) : v_{std::move(m)} {}
  /// As a pid.
  term(remote_pid p) : v_{std::move(p)} {}
  /// As a reference.
  term(remote_ref r) : v_{std::move(r)} {}
  /// As a port.
  term(remote_port p) : v_{std::move(p)} {}
  /// As a term carried as is.
  term(opaque_term o) : v_{std::move(o)} {}

  /// `{a, b, ...}`.
  template <class... T>
  static term tuple(T&&... elements) {
    term_tuple t;
    t.elements.reserve(sizeof...(T));
    (t.elements.emplace_back(std::forward<T>(elements)), ...);
    return term{std::move(t)};
  }
  /// `[a, b, ...]`.
  template <class... T>
  static term list(T&&... elements) {
    term_list l;
    l.elements.reserve(sizeof...(T));
    (l.elements.emplace_back(std::forward<T>(elements)), ...);
    return term{std::move(l)};
  }
  /// `%{k => v, ...}`.
  static term map(std::initializer_list<std::pair<term, term>> pairs) { return term{term_map{{pairs.begin(), pairs.end()}}}; }
  /// A charlist (`'abc'`): a list of the bytes' values.
  static term charlist(std::string_view s) {
    term_list l;
    l.elements.reserve(s.size());
    for (unsigned char c : s) l.elements.emplace_back(static_cast<std::int64_t>(c));
    return term{std::move(l)};
  }

  /// Which kind of value it holds.
  [[nodiscard]] term_kind kind() const noexcept { return static_cast<term_kind>(v_.index()); }
  /// The value, for std::visit.
  [[nodiscard]] const value_type& value() const noexcept { return v_; }
  /// The value, for std::visit and in-place changes.
  [[nodiscard]] value_type& value() noexcept { return v_; }

  /// Whether it holds a T (std::int64_t, double, atom, binary, term_tuple...).
  template <class T>
  [[nodiscard]] bool is() const noexcept {
    return std::holds_alternative<T>(v_);
  }
  /// The T it holds, or null.
  template <class T>
  [[nodiscard]] const T* get_if() const noexcept {
    return std::get_if<T>(&v_);
  }
  /// The T it holds, or null.
  template <class T>
  [[nodiscard]] T* get_if() noexcept {
    return std::get_if<T>(&v_);
  }
  /// The value as a T, or term_error naming what it is instead.
  template <class T>
  [[nodiscard]] const T& as() const {
    if (const T* p = get_if<T>()) return *p;
    throw term_error{fmt::format("otpp::term: expected {}, got {}", kind_name(index_of<T>()), kind_name(kind()))};
  }

  /// Whether it is the atom `name`.
  [[nodiscard]] bool is_atom(std::string_view name) const noexcept {
    const atom* a = get_if<atom>();
    return a && a->name == name;
  }
  /// Whether it is a tuple of `arity` elements.
  [[nodiscard]] bool is_tuple(std::size_t arity) const noexcept {
    const term_tuple* t = get_if<term_tuple>();
    return t && t->elements.size() == arity;
  }
  /// Whether it is `[]`.
  [[nodiscard]] bool is_nil() const noexcept {
    const term_list* l = get_if<term_list>();
    return l && l->elements.empty() && l->tail.empty();
  }
  /// A tuple's element i, or term_error.
  [[nodiscard]] const term& operator[](std::size_t i) const {
    const auto& t = as<term_tuple>();
    if (i >= t.elements.size())
      throw term_error{fmt::format("otpp::term: element {} of a tuple of {}", i, t.elements.size())};
    return t.elements[i];
  }
  /// The value under `key` in a map, or null.
  [[nodiscard]] const term* find(const term& key) const {
    const auto& m = as<term_map>();
    for (const auto& [k, v] : m.pairs)
      if (k == key) return &v;
    return nullptr;
  }

  friend bool operator==(const term& a, const term& b) { return a.v_ == b.v_; }

  /// "integer", "atom", "tuple"...: for messages.
  [[nodiscard]] static std::string_view kind_name(term_kind k) noexcept {
    constexpr std::array<std::string_view, 12> names{"integer", "big integer", "float",     "atom",
                                                     "binary",  "tuple",       "list",      "map",
                                                     "pid",     "reference",   "port",      "opaque term"};
    return names[static_cast<std::size_t>(k)];
  }

 private:
  template <class T>
  static term_kind index_of() {  // error paths only
    return static_cast<term_kind>(value_type{std::in_place_type<T>}.index());
  }
  template <class I>
  static value_type from_integral(I i) {
    if constexpr (std::is_unsigned_v<I> && sizeof(I) >= sizeof(std::int64_t)) {
      if (i > static_cast<std::uint64_t>(INT64_MAX)) {
        big_integer b;
        for (std::uint64_t u = i; u != 0; u >>= 8) b.magnitude.push_back(static_cast<std::uint8_t>(u));
        return b;
      }
    }
    return static_cast<std::int64_t>(i);
  }

  value_type v_;
};

inline bool operator==(const term_tuple& a, const term_tuple& b) { return a.elements == b.elements; }
inline bool operator==(const term_list& a, const term_list& b) { return a.elements == b.elements && a.tail == b.tail; }
inline bool operator==(const term_map& a, const term_map& b) { return a.pairs == b.pairs; }

// -- conversions --------------------------------------------------------------------

/// How a C++ type becomes a term and back: specialize with
/// `static term to(const T&)` and `static std::optional<T> from(const term&)`.
template <class T>
struct term_convert;

/// T has a term_convert specialization (both directions).
template <class T>
concept term_convertible = requires(const T& v, const term& t) {
  { term_convert<T>::to(v) } -> std::convertible_to<term>;
  { term_convert<T>::from(t) } -> std::same_as<std::optional<T>>;
};

/// `v` as a term.
template <class T>
[[nodiscard]] term to_term(const T& v) {
  static_assert(term_convertible<T>, "otpp::to_term: specialize otpp::term_convert<T> with to() and from()");
  return term_convert<T>::to(v);
}
/// `t` as a T, or nothing if it does not have T's shape.
template <class T>
[[nodiscard]] std::optional<T> from_term(const term& t) {
  static_assert(term_convertible<T>, "otpp::from_term: specialize otpp::term_convert<T> with to() and from()");
  return term_convert<T>::from(t);
}

/// @cond OTPP_INTERNAL
// The built-in conversions: bool (atoms), integers, floats, std::string
// (binary), the term types, std::vector (list), std::tuple and std::pair
// (tuple), std::map (map).
template <>
struct term_convert<term> {
  static term to(const term& t) { return t; }
  static std::optional<term> from(const term& t) { return t; }
};
template <>
struct term_convert<bool> {
  static term to(bool b) { return term{b}; }
  static std::optional<bool> from(const term& t) {
    if (t.is_atom("true")) return true;
    if (t.is_atom("false")) return false;
    return std::nullopt;
  }
};
template <std::integral I>
  requires(!std::same_as<I, bool>)
struct term_convert<I> {
  static term to(I i) { return term{i}; }
  static std::optional<I> from(const term& t) {
    if (const auto* i = t.get_if<std::int64_t>()) {
      if constexpr (std::is_unsigned_v<I>) {
        if (*i < 0 || static_cast<std::uint64_t>(*i) > std::numeric_limits<I>::max()) return std::nullopt;
      } else {
        if (*i < std::numeric_limits<I>::min() || *i > std::numeric_limits<I>::max()) return std::nullopt;
      }
      return static_cast<I>(*i);
    }
    if constexpr (std::same_as<I, std::uint64_t>) {
      if (const auto* b = t.get_if<big_integer>(); b && !b->negative && b->magnitude.size() <= 8) {
        std::uint64_t u = 0;
        for (std::size_t k = b->magnitude.size(); k-- > 0;) u = (u << 8) | b->magnitude[k];
        return u;
      }
    }
    return std::nullopt;
  }
};
template <std::floating_point F>
struct term_convert<F> {
  static term to(F f) { return term{static_cast<double>(f)}; }
  static std::optional<F> from(const term& t) {
    if (const auto* d = t.get_if<double>()) return static_cast<F>(*d);
    return std::nullopt;
  }
};
template <>
struct term_convert<std::string> {
  static term to(const std::string& s) { return term{s}; }
  static std::optional<std::string> from(const term& t) {
    if (const auto* b = t.get_if<binary>()) return b->bytes;
    return std::nullopt;
  }
};
template <class T>
  requires(std::same_as<T, atom> || std::same_as<T, binary> || std::same_as<T, remote_pid> ||
           std::same_as<T, remote_ref> || std::same_as<T, big_integer>)
struct term_convert<T> {
  static term to(const T& v) { return term{v}; }
  static std::optional<T> from(const term& t) {
    if (const auto* p = t.get_if<T>()) return *p;
    return std::nullopt;
  }
};
template <class T>
struct term_convert<std::vector<T>> {
  static term to(const std::vector<T>& v) {
    term_list l;
    l.elements.reserve(v.size());
    for (const auto& e : v) l.elements.push_back(to_term(e));
    return term{std::move(l)};
  }
  static std::optional<std::vector<T>> from(const term& t) {
    const auto* l = t.get_if<term_list>();
    if (!l || !l->tail.empty()) return std::nullopt;
    std::vector<T> out;
    out.reserve(l->elements.size());
    for (const auto& e : l->elements) {
      auto x = from_term<T>(e);
      if (!x) return std::nullopt;
      out.push_back(std::move(*x));
    }
    return out;
  }
};
template <class... T>
struct term_convert<std::tuple<T...>> {
  static term to(const std::tuple<T...>& v) {
    return std::apply([](const auto&... e) { return term::tuple(to_term(e)...); }, v);
  }
  static std::optional<std::tuple<T...>> from(const term& t) {
    if (!t.is_tuple(sizeof...(T))) return std::nullopt;
    return from_elements(t.as<term_tuple>(), std::index_sequence_for<T...>{});
  }

 private:
  template <std::size_t... I>
  static std::optional<std::tuple<T...>> from_elements(const term_tuple& t, std::index_sequence<I...>) {
    std::tuple<std::optional<T>...> parts{from_term<T>(t.elements[I])...};
    if (!(std::get<I>(parts).has_value() && ...)) return std::nullopt;
    return std::tuple<T...>{std::move(*std::get<I>(parts))...};
  }
};
template <class A, class B>
struct term_convert<std::pair<A, B>> {
  static term to(const std::pair<A, B>& p) { return term::tuple(to_term(p.first), to_term(p.second)); }
  static std::optional<std::pair<A, B>> from(const term& t) {
    auto x = term_convert<std::tuple<A, B>>::from(t);
    if (!x) return std::nullopt;
    return std::pair<A, B>{std::move(std::get<0>(*x)), std::move(std::get<1>(*x))};
  }
};
template <class K, class V>
struct term_convert<std::map<K, V>> {
  static term to(const std::map<K, V>& m) {
    term_map out;
    out.pairs.reserve(m.size());
    for (const auto& [k, v] : m) out.pairs.emplace_back(to_term(k), to_term(v));
    return term{std::move(out)};
  }
  static std::optional<std::map<K, V>> from(const term& t) {
    const auto* m = t.get_if<term_map>();
    if (!m) return std::nullopt;
    std::map<K, V> out;
    for (const auto& [k, v] : m->pairs) {
      auto kk = from_term<K>(k);
      auto vv = from_term<V>(v);
      if (!kk || !vv) return std::nullopt;
      out.emplace(std::move(*kk), std::move(*vv));
    }
    return out;
  }
};

/// @endcond

// -- the external term format -------------------------------------------------------

namespace detail::etf {
enum tag : std::uint8_t {
  version = 131,
  new_float = 70,
  bit_binary = 77,
  new_pid = 88,
  new_port = 89,
  newer_reference = 90,
  small_integer = 97,
  integer = 98,
  float_old = 99,
  atom_latin1 = 100,
  reference_old = 101,
  port_old = 102,
  pid_old = 103,
  small_tuple = 104,
  large_tuple = 105,
  nil = 106,
  string = 107,
  list = 108,
  binary_ext = 109,
  small_big = 110,
  large_big = 111,
  new_fun = 112,
  export_ext = 113,
  new_reference = 114,
  small_atom_latin1 = 115,
  map_ext = 116,
  atom_utf8 = 118,
  small_atom_utf8 = 119,
  v4_port = 120,
};

/// Deeper nesting than this is refused (each level costs decoder stack).
inline constexpr unsigned max_depth = 512;

inline void put8(std::string& o, std::uint8_t v) { o.push_back(static_cast<char>(v)); }
// Big-endian, appended whole: one capacity check per number, not one per byte.
inline void put16(std::string& o, std::uint16_t v) {
  const char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v)};
  o.append(b, 2);
}
inline void put32(std::string& o, std::uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
  o.append(b, 4);
}
inline void put64(std::string& o, std::uint64_t v) {
  put32(o, static_cast<std::uint32_t>(v >> 32));
  put32(o, static_cast<std::uint32_t>(v));
}

inline void put_atom(std::string& o, std::string_view name) {
  if (name.size() > 255 * 4) throw term_error{fmt::format("otpp::encode_term: atom of {} bytes (at most 255 characters)", name.size())};
  if (name.size() < 256) {
    const char head[2] = {static_cast<char>(small_atom_utf8), static_cast<char>(name.size())};
    o.append(head, 2);
  } else {
    put8(o, atom_utf8);
    put16(o, static_cast<std::uint16_t>(name.size()));
  }
  o.append(name);
}

inline void put_length(std::string& o, std::size_t n, const char* what) {
  if (n > UINT32_MAX) throw term_error{fmt::format("otpp::encode_term: {} of {} elements (at most 2^32-1)", what, n)};
  put32(o, static_cast<std::uint32_t>(n));
}

inline void encode(std::string& o, const term& t);

inline void encode_integer(std::string& o, std::int64_t i) {
  if (i >= 0 && i <= 255) {
    put8(o, small_integer);
    put8(o, static_cast<std::uint8_t>(i));
  } else if (i >= INT32_MIN && i <= INT32_MAX) {
    put8(o, integer);
    put32(o, static_cast<std::uint32_t>(static_cast<std::int32_t>(i)));
  } else {
    std::uint64_t mag = i < 0 ? 0 - static_cast<std::uint64_t>(i) : static_cast<std::uint64_t>(i);
    const auto n = static_cast<std::uint8_t>((std::bit_width(mag) + 7) / 8);
    put8(o, small_big);
    put8(o, n);
    put8(o, i < 0 ? 1 : 0);
    for (unsigned k = 0; k < n; ++k) put8(o, static_cast<std::uint8_t>(mag >> (8 * k)));
  }
}

struct encoder {
  std::string& o;
  void operator()(std::int64_t i) const { encode_integer(o, i); }
  void operator()(const big_integer& b) const {
    if (b.magnitude.size() < 256) {
      put8(o, small_big);
      put8(o, static_cast<std::uint8_t>(b.magnitude.size()));
    } else {
      put8(o, large_big);
      put_length(o, b.magnitude.size(), "big integer");
    }
    put8(o, b.negative ? 1 : 0);
    o.append(reinterpret_cast<const char*>(b.magnitude.data()), b.magnitude.size());
  }
  void operator()(double d) const {
    put8(o, new_float);
    put64(o, std::bit_cast<std::uint64_t>(d));
  }
  void operator()(const atom& a) const { put_atom(o, a.name); }
  void operator()(const binary& b) const {
    put8(o, binary_ext);
    put_length(o, b.bytes.size(), "binary");
    o.append(b.bytes);
  }
  void operator()(const term_tuple& t) const {
    if (t.elements.size() < 256) {
      put8(o, small_tuple);
      put8(o, static_cast<std::uint8_t>(t.elements.size()));
    } else {
      put8(o, large_tuple);
      put_length(o, t.elements.size(), "tuple");
    }
    for (const auto& e : t.elements) encode(o, e);
  }
  void operator()(const term_list& l) const {
    if (l.elements.empty()) {
      if (l.tail.empty()) {
        put8(o, nil);
      } else {
        encode(o, l.tail.front());  // [| x] is x
      }
      return;
    }
    put8(o, list);
    put_length(o, l.elements.size(), "list");
    for (const auto& e : l.elements) encode(o, e);
    if (l.tail.empty()) {
      put8(o, nil);
    } else {
      encode(o, l.tail.front());
    }
  }
  void operator()(const term_map& m) const {
    put8(o, map_ext);
    put_length(o, m.pairs.size(), "map");
    for (const auto& [k, v] : m.pairs) {
      encode(o, k);
      encode(o, v);
    }
  }
  void operator()(const remote_pid& p) const {
    put8(o, new_pid);
    put_atom(o, p.node);
    put32(o, p.id);
    put32(o, p.serial);
    put32(o, p.creation);
  }
  void operator()(const remote_ref& r) const {
    if (r.words.empty() || r.words.size() > 5)
      throw term_error{fmt::format("otpp::encode_term: a reference of {} words (1 to 5)", r.words.size())};
    put8(o, newer_reference);
    put16(o, static_cast<std::uint16_t>(r.words.size()));
    put_atom(o, r.node);
    put32(o, r.creation);
    for (auto w : r.words) put32(o, w);
  }
  void operator()(const remote_port& p) const {
    put8(o, v4_port);
    put_atom(o, p.node);
    put64(o, p.id);
    put32(o, p.creation);
  }
  void operator()(const opaque_term& x) const { o.append(x.encoded); }
};

inline void encode(std::string& o, const term& t) { std::visit(encoder{o}, t.value()); }

class decoder {
 public:
  explicit decoder(std::string_view in, std::size_t pos = 0) noexcept : in_{in}, pos_{pos} {}

  term read(unsigned depth = 0) {
    if (depth > max_depth) fail(fmt::format("nesting deeper than {}", max_depth));
    const std::size_t start = pos_;
    const std::uint8_t t = u8();
    switch (t) {
      case small_integer: return term{static_cast<std::int64_t>(u8())};
      case integer: return term{static_cast<std::int64_t>(static_cast<std::int32_t>(u32()))};
      case new_float: return term{std::bit_cast<double>(u64())};
      case float_old: {
        std::string text{bytes(31)};
        char* end = nullptr;
        const double d = std::strtod(text.c_str(), &end);
        if (end == text.c_str()) fail("a float that is not a number");
        return term{d};
      }
      case small_big: return big(u8());
      case large_big: return big(u32());
      case atom_latin1: return term{atom{latin1(bytes(u16()))}};
      case small_atom_latin1: return term{atom{latin1(bytes(u8()))}};
      case atom_utf8: return term{atom{std::string{bytes(u16())}}};
      case small_atom_utf8: return term{atom{std::string{bytes(u8())}}};
      case small_tuple: return tuple(u8(), depth);
      case large_tuple: return tuple(u32(), depth);
      case nil: return term{};
      case string: {
        const std::string_view s = bytes(u16());
        return term::charlist(s);
      }
      case list: {
        const std::uint32_t n = u32();
        room(n, 1);
        term_list l;
        l.elements.reserve(n);
        for (std::uint32_t k = 0; k < n; ++k) l.elements.push_back(read(depth + 1));
        term tail = read(depth + 1);
        if (!tail.is_nil()) {
          // [a | [b, c]] arrives as one list only if the sender built it so;
          // a list tail that is itself a proper list is spliced.
          if (auto* tl = tail.get_if<term_list>()) {
            for (auto& e : tl->elements) l.elements.push_back(std::move(e));
            l.tail = std::move(tl->tail);
          } else {
            l.tail.push_back(std::move(tail));
          }
        }
        return term{std::move(l)};
      }
      case binary_ext: return term{binary{std::string{bytes(u32())}}};
      case map_ext: {
        const std::uint32_t n = u32();
        room(n, 2);
        term_map m;
        m.pairs.reserve(n);
        for (std::uint32_t k = 0; k < n; ++k) {
          term key = read(depth + 1);
          term value = read(depth + 1);
          m.pairs.emplace_back(std::move(key), std::move(value));
        }
        return term{std::move(m)};
      }
      case pid_old:
      case new_pid: {
        remote_pid p;
        p.node = node_name(depth);
        p.id = u32();
        p.serial = u32();
        p.creation = t == new_pid ? u32() : u8();
        return term{std::move(p)};
      }
      case newer_reference:
      case new_reference: {
        const std::uint16_t n = u16();
        if (n == 0 || n > 5) fail(fmt::format("a reference of {} words", n));
        remote_ref r;
        r.node = node_name(depth);
        r.creation = t == newer_reference ? u32() : u8();
        r.words.reserve(n);
        for (unsigned k = 0; k < n; ++k) r.words.push_back(u32());
        return term{std::move(r)};
      }
      case reference_old: {
        remote_ref r;
        r.node = node_name(depth);
        r.words.push_back(u32());
        r.creation = u8();
        return term{std::move(r)};
      }
      case port_old:
      case new_port:
      case v4_port: {
        remote_port p;
        p.node = node_name(depth);
        p.id = t == v4_port ? u64() : u32();
        p.creation = t == port_old ? u8() : u32();
        return term{std::move(p)};
      }
      case new_fun: {
        const std::uint32_t size = u32();  // counts itself, not the tag
        if (size < 4) fail("a fun of impossible size");
        (void)bytes(size - 4);
        return term{opaque_term{std::string{in_.substr(start, pos_ - start)}}};
      }
      case export_ext: {
        (void)read(depth + 1);
        (void)read(depth + 1);
        (void)read(depth + 1);
        return term{opaque_term{std::string{in_.substr(start, pos_ - start)}}};
      }
      case bit_binary: {
        const std::uint32_t n = u32();
        (void)u8();
        (void)bytes(n);
        return term{opaque_term{std::string{in_.substr(start, pos_ - start)}}};
      }
      default: pos_ = start; fail(fmt::format("unknown tag {}", t));
    }
  }

  [[nodiscard]] std::size_t position() const noexcept { return pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw term_error{fmt::format("otpp::decode_term: {} at byte {} of {}", what, pos_, in_.size())};
  }

  std::uint8_t u8() {
    need(1);
    return static_cast<std::uint8_t>(in_[pos_++]);
  }
  std::uint16_t u16() {
    need(2);
    auto v = static_cast<std::uint16_t>((byte(0) << 8) | byte(1));
    pos_ += 2;
    return v;
  }
  std::uint32_t u32() {
    need(4);
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v = (v << 8) | byte(k);
    pos_ += 4;
    return v;
  }
  std::uint64_t u64() {
    need(8);
    std::uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v = (v << 8) | byte(k);
    pos_ += 8;
    return v;
  }
  std::string_view bytes(std::size_t n) {
    need(n);
    auto s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  [[nodiscard]] std::uint32_t byte(int k) const noexcept { return static_cast<std::uint8_t>(in_[pos_ + static_cast<std::size_t>(k)]); }
  void need(std::size_t n) const {
    if (in_.size() - pos_ < n) fail(fmt::format("{} bytes needed, {} left", n, in_.size() - pos_));
  }
  /// n elements of at least `each` bytes must fit in what is left: a hostile
  /// length cannot make the decoder reserve more than the input's size.
  void room(std::uint64_t n, std::uint64_t each) const {
    if (n * each > in_.size() - pos_) fail(fmt::format("{} elements announced, {} bytes left", n, in_.size() - pos_));
  }
  term tuple(std::uint32_t n, unsigned depth) {
    room(n, 1);
    term_tuple t;
    t.elements.reserve(n);
    for (std::uint32_t k = 0; k < n; ++k) t.elements.push_back(read(depth + 1));
    return term{std::move(t)};
  }
  term big(std::uint32_t n) {
    const bool negative = u8() != 0;
    const std::string_view digits = bytes(n);
    std::size_t used = n;
    while (used > 0 && digits[used - 1] == 0) --used;
    if (used <= 8) {
      std::uint64_t mag = 0;
      for (std::size_t k = used; k-- > 0;) mag = (mag << 8) | static_cast<std::uint8_t>(digits[k]);
      if (!negative && mag <= static_cast<std::uint64_t>(INT64_MAX)) return term{static_cast<std::int64_t>(mag)};
      if (negative && mag <= static_cast<std::uint64_t>(INT64_MAX) + 1) return term{static_cast<std::int64_t>(0 - mag)};
    }
    big_integer b;
    b.negative = negative;
    b.magnitude.assign(digits.begin(), digits.begin() + static_cast<std::ptrdiff_t>(used));
    return term{std::move(b)};
  }
  std::string node_name(unsigned depth) {
    term n = read(depth + 1);
    auto* a = n.get_if<atom>();
    if (!a) fail("a node name that is not an atom");
    return std::move(a->name);
  }
  static std::string latin1(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (unsigned char c : s) {
      if (c < 0x80) {
        out.push_back(static_cast<char>(c));
      } else {
        out.push_back(static_cast<char>(0xC0 | (c >> 6)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
      }
    }
    return out;
  }

  std::string_view in_;
  std::size_t pos_;
};
}  // namespace detail::etf

/// Appends `t` in the external term format, without the version byte (the
/// form terms take inside a larger encoding).
inline void encode_term_to(std::string& out, const term& t) { detail::etf::encode(out, t); }

/// `t` in the external term format, as term_to_binary/1 gives it.
[[nodiscard]] inline std::string encode_term(const term& t) {
  std::string out;
  out.push_back(static_cast<char>(detail::etf::version));
  detail::etf::encode(out, t);
  return out;
}

/// The term in `bytes` (binary_to_term/1): a version byte, then exactly one
/// term. term_error if anything is malformed or left over.
[[nodiscard]] inline term decode_term(std::string_view bytes) {
  detail::etf::decoder d{bytes};
  if (d.u8() != detail::etf::version) d.fail("no version byte (131)");
  term t = d.read();
  if (d.position() != bytes.size()) d.fail("bytes after the term");
  return t;
}

}  // namespace otpp

/// @cond OTPP_INTERNAL
/// Prints a term as Erlang writes it: {ok, 42}, <<"abc">>, [1, 2 | 3], #{a => 1}.
template <>
struct fmt::formatter<otpp::term> {
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  template <class Ctx>
  auto format(const otpp::term& t, Ctx& ctx) const {
    std::string s;
    write(s, t);
    return fmt::format_to(ctx.out(), "{}", s);
  }

 private:
  static void write_seq(std::string& s, const std::vector<otpp::term>& v) {
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i) s += ", ";
      write(s, v[i]);
    }
  }
  static bool printable(std::string_view b) {
    return std::all_of(b.begin(), b.end(), [](unsigned char c) { return c >= 0x20 && c != 0x7f && c != '"' && c != '\\'; });
  }
  static void write(std::string& s, const otpp::term& t) {
    struct visitor {
      std::string& s;
      void operator()(std::int64_t i) const { s += fmt::format("{}", i); }
      void operator()(const otpp::big_integer& b) const {
        s += b.negative ? "-16#" : "16#";
        if (b.magnitude.empty()) s += '0';
        for (std::size_t k = b.magnitude.size(); k-- > 0;)
          s += k + 1 == b.magnitude.size() ? fmt::format("{:X}", b.magnitude[k]) : fmt::format("{:02X}", b.magnitude[k]);
      }
      void operator()(double d) const { s += fmt::format("{}", d); }
      void operator()(const otpp::atom& a) const { s += a.name; }
      void operator()(const otpp::binary& b) const {
        if (printable(b.bytes)) {
          s += "<<\"" + b.bytes + "\">>";
          return;
        }
        s += "<<";
        for (std::size_t i = 0; i < b.bytes.size(); ++i) s += fmt::format("{}{}", i ? "," : "", static_cast<unsigned char>(b.bytes[i]));
        s += ">>";
      }
      void operator()(const otpp::term_tuple& t) const {
        s += '{';
        write_seq(s, t.elements);
        s += '}';
      }
      void operator()(const otpp::term_list& l) const {
        s += '[';
        write_seq(s, l.elements);
        if (!l.tail.empty()) {
          s += " | ";
          write(s, l.tail.front());
        }
        s += ']';
      }
      void operator()(const otpp::term_map& m) const {
        s += "#{";
        for (std::size_t i = 0; i < m.pairs.size(); ++i) {
          if (i) s += ", ";
          write(s, m.pairs[i].first);
          s += " => ";
          write(s, m.pairs[i].second);
        }
        s += '}';
      }
      void operator()(const otpp::remote_pid& p) const { s += fmt::format("<{}.{}.{}>", p.node, p.id, p.serial); }
      void operator()(const otpp::remote_ref& r) const {
        s += fmt::format("#Ref<{}", r.node);
        for (auto w : r.words) s += fmt::format(".{}", w);
        s += '>';
      }
      void operator()(const otpp::remote_port& p) const { s += fmt::format("#Port<{}.{}>", p.node, p.id); }
      void operator()(const otpp::opaque_term& o) const { s += fmt::format("#Opaque<{} bytes>", o.encoded.size()); }
    };
    std::visit(visitor{s}, t.value());
  }
};
/// @endcond
