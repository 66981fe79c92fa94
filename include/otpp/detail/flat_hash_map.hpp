#pragma once
// An open-addressing hash map (linear probing, tombstones) for a table
// shard: each slot holds its state byte beside the object, so a lookup
// costs about one cache miss where a node-based map costs two or three
// (bucket array, node, and the value in another allocation). Not thread
// safe: the shard's lock guards it. Iterators are invalidated by any
// insertion (it may rehash); erase leaves the others valid.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <new>
#include <type_traits>
#include <utility>

namespace otpp::detail {

template <class K, class T, class Hash = std::hash<K>, class Eq = std::equal_to<K>>
class flat_hash_map {
 public:
  using value_type = std::pair<K, T>;

 private:
  enum : std::uint8_t { empty_slot = 0, tombstone = 1, full = 2 };
  struct slot {
    std::uint8_t state = empty_slot;
    alignas(value_type) unsigned char storage[sizeof(value_type)];
    value_type& object() noexcept { return *std::launder(reinterpret_cast<value_type*>(storage)); }
    const value_type& object() const noexcept { return *std::launder(reinterpret_cast<const value_type*>(storage)); }
  };

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
    reference operator*() const noexcept { return m_->slots_[i_].object(); }
    pointer operator->() const noexcept { return &m_->slots_[i_].object(); }
    basic_iterator& operator++() noexcept {
      ++i_;
      skip();
      return *this;
    }
    friend bool operator==(const basic_iterator& a, const basic_iterator& b) noexcept { return a.i_ == b.i_; }

   private:
    friend class flat_hash_map;
    template <bool>
    friend class basic_iterator;
    void skip() noexcept {
      while (i_ < m_->cap_ && m_->slots_[i_].state != full) ++i_;
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
  iterator end() noexcept { return iterator{this, cap_}; }
  const_iterator begin() const noexcept { return const_iterator{this, 0}; }
  const_iterator end() const noexcept { return const_iterator{this, cap_}; }

  iterator find(const K& k) noexcept { return iterator{this, locate(k)}; }
  const_iterator find(const K& k) const noexcept { return const_iterator{this, locate(k)}; }

  /// Inserts (k, T(args...)) unless k is there; the object under k, and
  /// whether it is new. Throws what allocation or T's constructor throws
  /// (the map is unchanged).
  template <class KK, class... A>
  std::pair<iterator, bool> try_emplace(KK&& k, A&&... args) {
    if (std::size_t i = locate(k); i != cap_) return {iterator{this, i}, false};
    if ((used_ + 1) * 4 > cap_ * 3) grow();
    std::size_t i = index_of(k);
    while (slots_[i].state == full) i = (i + 1) & (cap_ - 1);
    ::new (static_cast<void*>(slots_[i].storage))
        value_type(std::piecewise_construct, std::forward_as_tuple(std::forward<KK>(k)), std::forward_as_tuple(std::forward<A>(args)...));
    if (slots_[i].state == empty_slot) ++used_;
    slots_[i].state = full;
    ++size_;
    return {iterator{this, i}, true};
  }

  void erase(iterator it) noexcept {
    slot& s = slots_[it.i_];
    s.object().~value_type();
    // A tombstone keeps the probe chains through this slot intact; it is
    // reused by inserts and dropped at the next rehash.
    s.state = tombstone;
    --size_;
  }

 private:
  static std::size_t mix(std::size_t h) noexcept {
    // Different constants from the shard choice: the slot index must not
    // repeat the bits that picked the shard.
    std::uint64_t x = static_cast<std::uint64_t>(h);
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    return static_cast<std::size_t>(x);
  }
  std::size_t index_of(const K& k) const noexcept { return mix(Hash{}(k)) & (cap_ - 1); }
  std::size_t locate(const K& k) const noexcept {
    if (size_ == 0) return cap_;
    for (std::size_t i = index_of(k);; i = (i + 1) & (cap_ - 1)) {
      const slot& s = slots_[i];
      if (s.state == empty_slot) return cap_;
      if (s.state == full && Eq{}(s.object().first, k)) return i;
    }
  }
  void grow() {
    // Double when live objects fill it, else rebuild at the same size to
    // drop tombstones.
    const std::size_t cap = size_ * 2 >= cap_ ? (cap_ ? cap_ * 2 : 8) : cap_;
    static_assert(std::is_nothrow_move_constructible_v<value_type> || std::is_copy_constructible_v<value_type>,
                  "flat_hash_map: objects must be movable or copyable");
    flat_hash_map fresh;  // destroys what it holds if a copy throws
    fresh.slots_ = new slot[cap];
    fresh.cap_ = cap;
    for (std::size_t i = 0; i < cap_; ++i) {
      slot& s = slots_[i];
      if (s.state != full) continue;
      std::size_t j = mix(Hash{}(s.object().first)) & (cap - 1);
      while (fresh.slots_[j].state == full) j = (j + 1) & (cap - 1);
      ::new (static_cast<void*>(fresh.slots_[j].storage)) value_type(std::move_if_noexcept(s.object()));
      fresh.slots_[j].state = full;
    }
    destroy();
    slots_ = std::exchange(fresh.slots_, nullptr);
    cap_ = cap;
    used_ = size_;
  }
  void destroy() noexcept {
    if (slots_ == nullptr) return;
    for (std::size_t i = 0; i < cap_; ++i)
      if (slots_[i].state == full) slots_[i].object().~value_type();
    delete[] slots_;
    slots_ = nullptr;
  }

  slot* slots_ = nullptr;
  std::size_t cap_ = 0;   // a power of two, or 0
  std::size_t size_ = 0;  // full slots
  std::size_t used_ = 0;  // full slots and tombstones
};

}  // namespace otpp::detail
