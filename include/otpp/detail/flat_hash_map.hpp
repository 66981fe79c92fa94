#pragma once
// An open-addressing hash map (linear probing, tombstones) for a table
// shard: each slot holds its state byte beside the object, so a lookup
// costs about one cache miss where a node-based map costs two or three
// (bucket array, node, and the value in another allocation). The state
// byte of a full slot is seven bits of the key's hash, so a probe passes
// other keys without comparing them.
//
// It fills to 7/8 before it doubles. What a lookup costs on a large table
// is mostly how many bytes the table spans: a 100k-key table of strings
// (64 shards) at most 3/4 full spans 12.6 MB and nearly every lookup goes
// to memory; at 7/8 it spans 6.3 MB and lookups run about twice as fast,
// those of absent keys too, despite the longer probes (ets_lookup_ns).
// A Swiss table's separate array of control bytes was measured as well:
// fewer simulated cache misses, but the control byte and then the object
// are two dependent loads, and it ran slower here than either.
//
// Not thread safe: the shard's lock guards it. Iterators are invalidated by
// any insertion (it may rehash); erase leaves the others valid.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "big_blocks.hpp"
#include "key_hash.hpp"

namespace otpp::detail {

inline constexpr std::uint8_t hash_slot_empty = 0x80;

/// One slot of a flat_hash_map: `first` (the key) and `second` (the value),
/// alive while the state byte says full, then the state byte. The more
/// aligned of the two comes first and the state sits in what would be the
/// tail padding: an int key with a std::string value takes 40 bytes where a
/// std::pair and a byte beside it took 48, an int with a long 16 instead of
/// 24. Binds as [key, value] like a pair.
template <class K, class T, bool KeyFirst = (alignof(K) > alignof(T))>
struct hash_slot {
  hash_slot() noexcept {}  // NOLINT: the members start dead; the map constructs them
  ~hash_slot() {}          // NOLINT: the map destroys them, by the state
  hash_slot(const hash_slot&) = delete;
  hash_slot& operator=(const hash_slot&) = delete;
  union {
    T second;
  };
  union {
    K first;
  };
  std::uint8_t state = hash_slot_empty;
};
template <class K, class T>
struct hash_slot<K, T, true> {
  hash_slot() noexcept {}  // NOLINT: as above
  ~hash_slot() {}          // NOLINT
  hash_slot(const hash_slot&) = delete;
  hash_slot& operator=(const hash_slot&) = delete;
  union {
    K first;
  };
  union {
    T second;
  };
  std::uint8_t state = hash_slot_empty;
};
template <std::size_t I, class K, class T, bool B>
auto& get(hash_slot<K, T, B>& s) noexcept {
  if constexpr (I == 0) {
    return s.first;
  } else {
    return s.second;
  }
}
template <std::size_t I, class K, class T, bool B>
const auto& get(const hash_slot<K, T, B>& s) noexcept {
  if constexpr (I == 0) {
    return s.first;
  } else {
    return s.second;
  }
}

template <class K, class T, class Hash = std::hash<K>, class Eq = std::equal_to<K>>
class flat_hash_map {
 public:
  using value_type = hash_slot<K, T>;

 private:
  // A full slot's state is below 0x80: its key hash's top seven bits.
  static constexpr std::uint8_t empty_slot = hash_slot_empty;
  static constexpr std::uint8_t tombstone = 0xfe;
  static constexpr bool is_full(std::uint8_t state) noexcept { return state < 0x80; }
  using slot = value_type;
  static_assert(std::is_nothrow_destructible_v<K> && std::is_nothrow_destructible_v<T>);
  static void destroy_object(slot& s) noexcept {
    s.first.~K();
    s.second.~T();
  }
  // Constructs the key from k and the value from args... in a dead slot;
  // if the value throws, the key is destroyed again.
  template <class KK, class... A>
  static void construct_object(slot& s, KK&& k, A&&... args) {
    ::new (static_cast<void*>(std::addressof(s.first))) K(std::forward<KK>(k));
    try {
      ::new (static_cast<void*>(std::addressof(s.second))) T(std::forward<A>(args)...);
    } catch (...) {
      s.first.~K();
      throw;
    }
  }

 public:
  template <bool Const>
  class basic_iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using difference_type = std::ptrdiff_t;
    using value_type = flat_hash_map::value_type;
    using map_ptr = std::conditional_t<Const, const flat_hash_map*, flat_hash_map*>;
    using reference = std::conditional_t<Const, const value_type&, value_type&>;
    using pointer = std::conditional_t<Const, const value_type*, value_type*>;
    basic_iterator() = default;
    basic_iterator(map_ptr m, std::size_t i) noexcept : m_{m}, i_{i} { skip(); }
    template <bool C = Const, class = std::enable_if_t<C>>
    basic_iterator(const basic_iterator<false>& o) noexcept : m_{o.m_}, i_{o.i_} {}  // NOLINT: iterator to const_iterator
    reference operator*() const noexcept { return m_->slots_[i_]; }
    pointer operator->() const noexcept { return &m_->slots_[i_]; }
    basic_iterator& operator++() noexcept {
      ++i_;
      skip();
      return *this;
    }
    basic_iterator operator++(int) noexcept {
      basic_iterator was = *this;
      ++*this;
      return was;
    }
    friend bool operator==(const basic_iterator& a, const basic_iterator& b) noexcept { return a.i_ == b.i_; }

   private:
    friend class flat_hash_map;
    template <bool>
    friend class basic_iterator;
    // At slot i, known full (or the end): nothing to skip. A lookup's
    // iterator, where the skipping loop cost a tenth of its instructions.
    struct at_t {};
    basic_iterator(map_ptr m, std::size_t i, at_t) noexcept : m_{m}, i_{i} {}
    void skip() noexcept {
      while (i_ < m_->cap_ && !is_full(m_->slots_[i_].state)) ++i_;
    }
    map_ptr m_ = nullptr;
    std::size_t i_ = 0;
  };
  using iterator = basic_iterator<false>;
  using const_iterator = basic_iterator<true>;

  flat_hash_map() noexcept = default;
  flat_hash_map(const flat_hash_map&) = delete;
  flat_hash_map& operator=(const flat_hash_map&) = delete;
  flat_hash_map(flat_hash_map&& o) noexcept { swap(o); }
  flat_hash_map& operator=(flat_hash_map&& o) noexcept {
    if (this != &o) {
      flat_hash_map gone{};
      swap(o);
      gone.swap(o);
    }
    return *this;
  }
  ~flat_hash_map() { destroy(); }

  void swap(flat_hash_map& o) noexcept {
    std::swap(slots_, o.slots_);
    std::swap(cap_, o.cap_);
    std::swap(size_, o.size_);
    std::swap(used_, o.used_);
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  iterator begin() noexcept { return iterator{this, 0}; }
  iterator end() noexcept { return at(cap_); }
  const_iterator begin() const noexcept { return const_iterator{this, 0}; }
  const_iterator end() const noexcept { return at(cap_); }

  iterator find(const K& k) noexcept { return at(locate(k)); }
  const_iterator find(const K& k) const noexcept { return at(locate(k)); }
  /// As find(k), given hash == Hash{}(k) (a caller that needed it already).
  iterator find(const K& k, std::size_t hash) noexcept { return at(locate(k, mixed(hash))); }
  const_iterator find(const K& k, std::size_t hash) const noexcept { return at(locate(k, mixed(hash))); }

  /// Inserts (k, T(args...)) unless k is there; the object under k, and
  /// whether it is new. Throws what allocation or T's constructor throws
  /// (the map is unchanged).
  template <class KK, class... A>
  std::pair<iterator, bool> try_emplace(KK&& k, A&&... args) {
    return try_emplace_hashed(Hash{}(k), std::forward<KK>(k), std::forward<A>(args)...);
  }
  /// As try_emplace, given hash == Hash{}(k).
  template <class KK, class... A>
  std::pair<iterator, bool> try_emplace_hashed(std::size_t hash, KK&& k, A&&... args) {
    const std::size_t h = mixed(hash);
    // One walk down k's chain both looks for k and finds where it would go
    // (the chain's first slot that holds nothing): a second walk for the
    // place was a third of an insert into a growing table (callgrind,
    // ets_insert_ns).
    std::size_t i = cap_;
    if (cap_ != 0) {
      const std::uint8_t h2 = h2_of(h);
      for (std::size_t j = h & (cap_ - 1);; j = (j + 1) & (cap_ - 1)) {
        const std::uint8_t st = slots_[j].state;
        if (st == h2 && Eq{}(slots_[j].first, k)) return {at(j), false};
        if (!is_full(st)) {
          if (i == cap_) i = j;
          if (st == empty_slot) break;  // at most 7/8 full: there is one
        }
      }
    }
    // A tombstone is taken as it is; an empty slot only while the table
    // stays within 7/8 (else it grows, and k goes where the new one says).
    if (i == cap_ || (slots_[i].state == empty_slot && (used_ + 1) * 8 > cap_ * 7)) {
      grow();
      i = first_free(h);
    }
    construct_object(slots_[i], std::forward<KK>(k), std::forward<A>(args)...);
    if (slots_[i].state == empty_slot) ++used_;
    slots_[i].state = h2_of(h);
    ++size_;
    return {at(i), true};
  }

  /// Destroys every object and gives the slots back.
  void clear() noexcept {
    destroy();
    cap_ = size_ = used_ = 0;
  }

  void erase(iterator it) noexcept {
    std::size_t i = it.i_;
    destroy_object(slots_[i]);
    --size_;
    // A tombstone keeps the probe chains through this slot intact, until an
    // insert reuses it or the next rehash drops it. No chain goes on past
    // an empty slot, though: before one, this slot and the tombstones just
    // before it can be empty again.
    if (slots_[(i + 1) & (cap_ - 1)].state != empty_slot) {
      slots_[i].state = tombstone;
      return;
    }
    for (std::size_t n = 0; n < cap_; ++n, i = (i - 1) & (cap_ - 1)) {
      if (n > 0 && slots_[i].state != tombstone) break;
      slots_[i].state = empty_slot;
      --used_;
    }
  }

 private:
  iterator at(std::size_t i) noexcept { return iterator{this, i, typename iterator::at_t{}}; }
  const_iterator at(std::size_t i) const noexcept { return const_iterator{this, i, typename const_iterator::at_t{}}; }
  static std::size_t hash_of(const K& k) noexcept { return mixed(Hash{}(k)); }
  static std::size_t mixed(std::size_t hash) noexcept {
    if constexpr (avalanching_hash<Hash>) return hash;  // mixed already
    // Different constants from the shard choice: the slot index must not
    // repeat the bits that picked the shard.
    std::uint64_t x = static_cast<std::uint64_t>(hash);
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    return static_cast<std::size_t>(x);
  }
  // The top seven bits: the index takes the low ones.
  static std::uint8_t h2_of(std::size_t h) noexcept { return static_cast<std::uint8_t>(h >> (8 * sizeof(std::size_t) - 7)); }
  std::size_t locate(const K& k) const noexcept { return locate(k, hash_of(k)); }
  std::size_t locate(const K& k, std::size_t h) const noexcept {
    if (size_ == 0) return cap_;
    const std::uint8_t h2 = h2_of(h);
    for (std::size_t i = h & (cap_ - 1);; i = (i + 1) & (cap_ - 1)) {
      const slot& s = slots_[i];
      if (s.state == h2 && Eq{}(s.first, k)) return i;
      if (s.state == empty_slot) return cap_;  // at most 7/8 full: there is one
    }
  }
  // The first slot of hash h's chain that holds nothing (a table with room).
  std::size_t first_free(std::size_t h) const noexcept {
    std::size_t i = h & (cap_ - 1);
    while (is_full(slots_[i].state)) i = (i + 1) & (cap_ - 1);
    return i;
  }
  void grow() {
    // Double when live objects fill it, else rebuild at the same size to
    // drop tombstones.
    const std::size_t cap = size_ * 2 >= cap_ ? (cap_ ? cap_ * 2 : 8) : cap_;
    static_assert(std::is_nothrow_move_constructible_v<K> || std::is_copy_constructible_v<K>,
                  "flat_hash_map: keys must be movable or copyable");
    static_assert(std::is_nothrow_move_constructible_v<T> || std::is_copy_constructible_v<T>,
                  "flat_hash_map: values must be movable or copyable");
    flat_hash_map fresh;  // destroys what it holds if a copy throws
    fresh.slots_ = allocate_slots(cap);
    fresh.cap_ = cap;
    for (std::size_t i = 0; i < cap_; ++i) {
      slot& s = slots_[i];
      if (!is_full(s.state)) continue;
      const std::size_t j = fresh.first_free(hash_of(s.first));
      construct_object(fresh.slots_[j], std::move_if_noexcept(s.first), std::move_if_noexcept(s.second));
      fresh.slots_[j].state = s.state;
    }
    destroy();
    slots_ = std::exchange(fresh.slots_, nullptr);
    cap_ = cap;
    used_ = size_;
  }
  void destroy() noexcept {
    if (slots_ == nullptr) return;
    for (std::size_t i = 0; i < cap_; ++i)
      if (is_full(slots_[i].state)) destroy_object(slots_[i]);
    free_slots(slots_, cap_);
    slots_ = nullptr;
  }
  // Arrays of a power-of-two size from 64 KiB come from big_blocks (on
  // huge pages: see there why), the rest from new[].
  static slot* allocate_slots(std::size_t cap) {
    if (!big_blocks::serves(cap * sizeof(slot))) return new slot[cap];
    auto* s = static_cast<slot*>(big_blocks::allocate(cap * sizeof(slot)));
    for (std::size_t i = 0; i < cap; ++i) ::new (static_cast<void*>(s + i)) slot;
    return s;
  }
  static void free_slots(slot* s, std::size_t cap) noexcept {
    if (!big_blocks::serves(cap * sizeof(slot))) {
      delete[] s;
      return;
    }
    for (std::size_t i = 0; i < cap; ++i) s[i].~slot();
    big_blocks::deallocate(s, cap * sizeof(slot));
  }

  slot* slots_ = nullptr;
  std::size_t cap_ = 0;   // a power of two, or 0
  std::size_t size_ = 0;  // full slots
  std::size_t used_ = 0;  // full slots and tombstones
};

}  // namespace otpp::detail

// [key, value] = slot, as for a pair.
template <class K, class T, bool B>
struct std::tuple_size<otpp::detail::hash_slot<K, T, B>> : std::integral_constant<std::size_t, 2> {};
template <class K, class T, bool B>
struct std::tuple_element<0, otpp::detail::hash_slot<K, T, B>> {
  using type = K;
};
template <class K, class T, bool B>
struct std::tuple_element<1, otpp::detail::hash_slot<K, T, B>> {
  using type = T;
};
