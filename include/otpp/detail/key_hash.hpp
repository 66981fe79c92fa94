#pragma once
// The hash and equality a table gives its keys: std::hash<K> and ==, but
// for strings. The strings' std::hash (libstdc++'s _Hash_bytes: out of
// line, a byte loop at the end) and == (a call to memcmp) were a third of
// a cached search result's lookup. Here strings are read eight bytes at a
// time, from both ends when short; each pair of words is folded by one
// 64x64->128-bit multiply. search_cache's 1000 "query-N" keys, one thread,
// lookups that copy the result into a reused string: 22.8 -> 17.9 ns (with
// flat_hash_map's found iterator no longer looking for a full slot).
//
// A hash whose every bit depends on every input bit says so with
// `is_avalanching`: the table then takes its shard and slot bits from it
// directly, where an identity hash (std::hash of an integer) must be mixed
// first. The shard's mix sat between the key and the lock: search_cache's
// fetches, 4 alternated pairs, 13.9-15.3 -> 13.0-15.1 ns on one thread and
// 121-137 -> 131-150 M/s on two.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

namespace otpp::detail {

/// Folds a and b into 64 bits: the high and low halves of their product.
__extension__ using uint128 = unsigned __int128;  // GCC and Clang on 64-bit targets
inline std::uint64_t fold_multiply(std::uint64_t a, std::uint64_t b) noexcept {
  const uint128 p = static_cast<uint128>(a) * b;
  return static_cast<std::uint64_t>(p) ^ static_cast<std::uint64_t>(p >> 64);
}

inline std::uint64_t load_u64(const char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline std::uint64_t load_u32(const char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// A hash of n bytes at p: equal bytes, equal hash.
inline std::size_t hash_bytes(const char* p, std::size_t n) noexcept {
  // Odd constants with about half their bits set (any such would do).
  constexpr std::uint64_t k0 = 0xa0761d6478bd642full;
  constexpr std::uint64_t k1 = 0xe7037ed1a0b428dbull;
  constexpr std::uint64_t k2 = 0x8ebc6af09c88c6e3ull;
  std::uint64_t seed = k0 ^ n;
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  if (n <= 16) {
    // Two loads that overlap when n < 16, so every byte is read, none twice
    // beyond the overlap, and no load passes the end.
    if (n >= 8) {
      a = load_u64(p);
      b = load_u64(p + n - 8);
    } else if (n >= 4) {
      a = load_u32(p);
      b = load_u32(p + n - 4);
    } else if (n > 0) {
      a = (static_cast<std::uint64_t>(static_cast<unsigned char>(p[0])) << 16) |
          (static_cast<std::uint64_t>(static_cast<unsigned char>(p[n / 2])) << 8) |
          static_cast<unsigned char>(p[n - 1]);
    }
  } else {
    std::size_t left = n;
    for (; left > 16; left -= 16, p += 16) seed = fold_multiply(load_u64(p) ^ k1, load_u64(p + 8) ^ seed);
    a = load_u64(p + left - 16);
    b = load_u64(p + left - 8);
  }
  return static_cast<std::size_t>(fold_multiply(k1 ^ n, fold_multiply(a ^ k1, b ^ seed) ^ k2));
}

/// Whether n bytes at p and q are equal. Short runs are compared a word or
/// two at a time, inline: a key that matched seven bits of hash is nearly
/// always the one looked for, and a call to memcmp cost more than reading it.
inline bool bytes_equal(const char* p, const char* q, std::size_t n) noexcept {
  if (n > 16) return std::memcmp(p, q, n) == 0;
  if (n >= 8) return ((load_u64(p) ^ load_u64(q)) | (load_u64(p + n - 8) ^ load_u64(q + n - 8))) == 0;
  if (n >= 4) return ((load_u32(p) ^ load_u32(q)) | (load_u32(p + n - 4) ^ load_u32(q + n - 4))) == 0;
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != q[i]) return false;
  return true;
}

/// A hash that marks itself `is_avalanching` (every output bit depends on
/// every input bit): tables take their bits from it without mixing it again.
template <class H>
concept avalanching_hash = requires { typename H::is_avalanching; };

/// std::hash<K>, but for strings hash_bytes.
template <class K>
struct key_hash : std::hash<K> {};

template <class Alloc>
struct key_hash<std::basic_string<char, std::char_traits<char>, Alloc>> {
  using is_avalanching = void;  // the last step is a full multiply-fold
  std::size_t operator()(const std::basic_string<char, std::char_traits<char>, Alloc>& s) const noexcept {
    return hash_bytes(s.data(), s.size());
  }
};

template <>
struct key_hash<std::string_view> {
  using is_avalanching = void;
  std::size_t operator()(std::string_view s) const noexcept { return hash_bytes(s.data(), s.size()); }
};

/// std::equal_to<K>, but for strings bytes_equal.
template <class K>
struct key_equal : std::equal_to<K> {};

template <class Alloc>
struct key_equal<std::basic_string<char, std::char_traits<char>, Alloc>> {
  using string = std::basic_string<char, std::char_traits<char>, Alloc>;
  bool operator()(const string& a, const string& b) const noexcept {
    return a.size() == b.size() && bytes_equal(a.data(), b.data(), a.size());
  }
};

template <>
struct key_equal<std::string_view> {
  bool operator()(std::string_view a, std::string_view b) const noexcept {
    return a.size() == b.size() && bytes_equal(a.data(), b.data(), a.size());
  }
};

}  // namespace otpp::detail
