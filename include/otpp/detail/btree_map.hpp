#pragma once
// An ordered map as a B+ tree, for an ordered_set table: keys sit packed in
// nodes of 32, so a lookup in a million keys touches four or five nodes
// where a red-black tree (std::map) chases twenty pointers, each a cache
// miss. Leaves are linked both ways for in-order walks. Not thread safe:
// the shard's lock guards it.
//
// Erase removes a leaf once it is empty (and inner nodes left without
// children), so a table whose keys move (inserted at one end, erased at the
// other) does not grow; leaves that are merely sparse are not merged.
//
// A leaf's objects are a run anywhere in its slots, not always from the
// first: an insert or erase moves whichever side of the position is
// shorter, and has room, and a leaf split off the low end of the tree keeps
// its room at the front. So keys that arrive in descending order go in
// without moving the others, as ascending ones always did (1M descending
// int keys, one thread: 20.3-20.9 -> 16.4-17.2 ns an insert; ascending 15).
// Iterators are invalidated by inserts (a split moves objects) and by
// erasing the object they point at.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>
#include <functional>
#include <iterator>
#include <new>
#include <type_traits>
#include <utility>

#include "big_blocks.hpp"

namespace otpp::detail {

/// Fixed-size blocks for one tree's nodes, cut from chunks the pool owns:
/// chunks double from 16 blocks (rounded up to a power of two of bytes) to
/// 2 MiB. From 64 KiB they come from big_blocks, so on huge pages, and
/// reused by the next tree or hash table once this tree is gone. A
/// million-key tree is ~30,000 nodes; taken one by one from malloc they
/// spread over thousands of 4 KiB pages, each a TLB miss on lookup and a
/// page fault on first touch (both dear under virtualisation: measured in
/// benchmarks/otpp_bench, ets_ordered_*). Freed blocks are reused by the
/// same tree; the chunks go back when the tree does.
class tree_node_pool {
 public:
  explicit tree_node_pool(std::size_t block) noexcept : block_{(block + 63) / 64 * 64} {}
  tree_node_pool(const tree_node_pool&) = delete;
  tree_node_pool& operator=(const tree_node_pool&) = delete;
  ~tree_node_pool() { release(); }

  void swap(tree_node_pool& o) noexcept {
    std::swap(free_, o.free_);
    std::swap(bump_, o.bump_);
    std::swap(end_, o.end_);
    std::swap(chunks_, o.chunks_);
    std::swap(next_bytes_, o.next_bytes_);
    std::swap(bytes_, o.bytes_);
  }

  /// A block of the pool's size. Throws std::bad_alloc.
  [[nodiscard]] void* allocate() {
    if (free_ != nullptr) return std::exchange(free_, free_->next);
    if (bump_ == end_) grow();
    return std::exchange(bump_, bump_ + block_);
  }
  void deallocate(void* p) noexcept { free_ = ::new (p) free_block{free_}; }

  /// Returns every chunk; the blocks must be unused by then.
  void release() noexcept {
    while (chunks_ != nullptr) {
      chunk* c = chunks_;
      chunks_ = c->next;
      if (big_blocks::serves(c->bytes)) {
        big_blocks::deallocate(c, c->bytes);
      } else {
        ::operator delete(static_cast<void*>(c), std::align_val_t{alignof(chunk)});
      }
    }
    free_ = nullptr;
    bump_ = end_ = nullptr;
    next_bytes_ = first_bytes();
    bytes_ = 0;
  }
  /// Bytes held from the system.
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }

 private:
  struct free_block {
    free_block* next;
  };
  struct alignas(64) chunk {
    chunk* next;
    std::size_t bytes;
  };

  std::size_t first_bytes() const noexcept { return std::bit_ceil(sizeof(chunk) + 16 * block_); }
  void grow() {
    const std::size_t bytes = next_bytes_;
    void* raw = big_blocks::serves(bytes) ? big_blocks::allocate(bytes) : ::operator new(bytes, std::align_val_t{alignof(chunk)});
    chunks_ = ::new (raw) chunk{chunks_, bytes};
    bump_ = static_cast<char*>(raw) + sizeof(chunk);
    end_ = bump_ + (bytes - sizeof(chunk)) / block_ * block_;
    bytes_ += bytes;
    if (bytes < huge_page_bytes) next_bytes_ *= 2;
  }

  std::size_t block_;
  free_block* free_ = nullptr;
  char* bump_ = nullptr;
  char* end_ = nullptr;
  chunk* chunks_ = nullptr;
  std::size_t next_bytes_ = first_bytes();
  std::size_t bytes_ = 0;
};

/// An object in a btree_map: binds as [key, value] like a pair, and is
/// trivially copyable when both are, so a leaf moves its objects with one
/// memmove (a pair never is, whatever it holds).
template <class K, class T>
struct btree_entry {
  K first;
  T second;
};

template <class K, class T, class Less = std::less<K>>
class btree_map {
  static constexpr int leaf_slots = 32;
  static constexpr int inner_slots = 32;  // children

 public:
  using value_type = btree_entry<K, T>;

 private:
  struct inner;
  struct node {
    inner* parent = nullptr;
    int count = 0;  // objects (leaf) or children (inner)
    bool leaf = true;
  };
  struct leaf_node : node {
    leaf_node* prev = nullptr;
    leaf_node* next = nullptr;
    int begin = 0;  // the slot of object 0: the objects fill [begin, begin + count)
    alignas(value_type) unsigned char storage[sizeof(value_type) * leaf_slots];
    /// Object i (in key order).
    value_type& at(int i) noexcept { return slot(begin + i); }
    const value_type& at(int i) const noexcept { return slot(begin + i); }
    /// Slot p of the storage, live or not.
    value_type& slot(int p) noexcept { return std::launder(reinterpret_cast<value_type*>(storage))[p]; }
    const value_type& slot(int p) const noexcept { return std::launder(reinterpret_cast<const value_type*>(storage))[p]; }
  };
  struct inner : node {
    // keys[i] is the smallest key under children[i + 1].
    K keys[inner_slots - 1];
    node* children[inner_slots];
  };

 public:
  template <bool Const>
  class basic_iterator {
   public:
    using iterator_category = std::bidirectional_iterator_tag;
    using difference_type = std::ptrdiff_t;
    using value_type = btree_map::value_type;
    using tree_ptr = std::conditional_t<Const, const btree_map*, btree_map*>;
    using reference = std::conditional_t<Const, const value_type&, value_type&>;
    using pointer = std::conditional_t<Const, const value_type*, value_type*>;
    basic_iterator() = default;
    basic_iterator(tree_ptr t, leaf_node* l, int i) noexcept : t_{t}, l_{l}, i_{i} {}
    template <bool C = Const, class = std::enable_if_t<C>>
    basic_iterator(const basic_iterator<false>& o) noexcept : t_{o.t_}, l_{o.l_}, i_{o.i_} {}  // NOLINT: to const
    reference operator*() const noexcept { return l_->at(i_); }
    pointer operator->() const noexcept { return &l_->at(i_); }
    basic_iterator& operator++() noexcept {
      if (++i_ == l_->count) {
        l_ = l_->next;
        i_ = 0;
      }
      return *this;
    }
    basic_iterator& operator--() noexcept {
      if (l_ == nullptr) {
        l_ = t_->last_;
        i_ = l_->count - 1;
      } else if (i_ == 0) {
        l_ = l_->prev;
        i_ = l_->count - 1;
      } else {
        --i_;
      }
      return *this;
    }
    friend bool operator==(const basic_iterator& a, const basic_iterator& b) noexcept {
      return a.l_ == b.l_ && a.i_ == b.i_;
    }

   private:
    friend class btree_map;
    template <bool>
    friend class basic_iterator;
    tree_ptr t_ = nullptr;
    leaf_node* l_ = nullptr;  // null: end
    int i_ = 0;
  };
  using iterator = basic_iterator<false>;
  using const_iterator = basic_iterator<true>;

  btree_map() noexcept = default;
  btree_map(const btree_map&) = delete;
  btree_map& operator=(const btree_map&) = delete;
  ~btree_map() { destroy(root_); }  // before the pools go

  void swap(btree_map& o) noexcept {
    leaves_.swap(o.leaves_);
    inners_.swap(o.inners_);
    std::swap(root_, o.root_);
    std::swap(first_, o.first_);
    std::swap(last_, o.last_);
    std::swap(size_, o.size_);
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// Bytes of node memory held (used and free nodes).
  [[nodiscard]] std::size_t node_bytes() const noexcept { return leaves_.bytes() + inners_.bytes(); }

  iterator begin() noexcept { return size_ ? iterator{this, first_, 0} : end(); }
  iterator end() noexcept { return iterator{this, nullptr, 0}; }
  const_iterator begin() const noexcept { return size_ ? const_iterator{this, first_, 0} : end(); }
  const_iterator end() const noexcept { return const_iterator{this, nullptr, 0}; }

  /// The first object whose key is not less than k.
  iterator lower_bound(const K& k) noexcept {
    if (size_ == 0) return end();
    leaf_node* l = find_leaf(k);
    return normalize(l, leaf_lower_bound(l, k));
  }
  /// The first object whose key is greater than k.
  iterator upper_bound(const K& k) noexcept {
    if (size_ == 0) return end();
    leaf_node* l = find_leaf(k);
    const int i = static_cast<int>(
        std::partition_point(&l->at(0), &l->at(0) + l->count, [&](const value_type& v) { return !less_(k, v.first); }) - &l->at(0));
    return normalize(l, i);
  }
  iterator find(const K& k) noexcept {
    iterator it = lower_bound(k);
    return (it != end() && !less_(k, it->first)) ? it : end();
  }
  // The hash map's hashed forms, for code written over both: no hash here.
  iterator find(const K& k, std::size_t /*hash*/) noexcept { return find(k); }
  template <class KK, class... A>
  std::pair<iterator, bool> try_emplace_hashed(std::size_t /*hash*/, KK&& k, A&&... args) {
    return try_emplace(std::forward<KK>(k), std::forward<A>(args)...);
  }

  /// Inserts (k, T(args...)) unless k is there. Throws what allocation or
  /// T's constructor throws (then the map holds what it held).
  template <class KK, class... A>
  std::pair<iterator, bool> try_emplace(KK&& k, A&&... args) {
    if (root_ == nullptr) {
      auto* l = make<leaf_node>();
      root_ = first_ = last_ = l;
    }
    leaf_node* l;
    int i;
    // Keys that arrive in order (timestamps, sequence numbers) go before
    // the first object or after the last: straight to that leaf, without
    // the walk down from the root. (An end leaf is empty only after a
    // constructor threw mid-insert; then the walk finds the place.)
    if (first_->count > 0 && less_(k, first_->at(0).first)) {
      l = first_;
      i = 0;
    } else if (last_->count > 0 && less_(last_->at(last_->count - 1).first, k)) {
      l = last_;
      i = l->count;
    } else {
      l = find_leaf(k);
      i = leaf_lower_bound(l, k);
      if (i < l->count && !less_(k, l->at(i).first)) return {iterator{this, l, i}, false};
    }
    bool right_edge = false;
    if (l->count == leaf_slots) {
      split_leaf(l, i);  // may throw: nothing moved yet
      if (i > l->count || l->count == leaf_slots) {
        right_edge = l->count == leaf_slots;  // the new leaf is empty: its separator is the new key
        i -= l->count;
        l = l->next;
      }
    }
    // Make room, constructing the new object last: if it throws, close the gap.
    value_type made{K(std::forward<KK>(k)), T(std::forward<A>(args)...)};
    make_room(l, i);
    ::new (static_cast<void*>(&l->at(i))) value_type(std::move(made));
    ++l->count;
    ++size_;
    if (right_edge) set_separator(l, l->at(0).first);
    return {iterator{this, l, i}, true};
  }

  void erase(iterator it) noexcept {
    leaf_node* l = it.l_;
    l->at(it.i_).~value_type();
    close_gap(l, it.i_);
    --size_;
    if (l->count == 0 && l != root_) remove_leaf(l);
  }

 private:
  static_assert(std::is_nothrow_move_constructible_v<K> && std::is_nothrow_move_constructible_v<T>,
                "an ordered_set table needs keys and values that move without throwing");
  static_assert(std::is_default_constructible_v<K> && std::is_copy_assignable_v<K>,
                "an ordered_set table needs keys that are default constructible and copy assignable");

  leaf_node* find_leaf(const K& k) const noexcept {
    node* n = root_;
    while (!n->leaf) {
      auto* in = static_cast<inner*>(n);
      n = in->children[child_for(in, k)];
      prefetch_node(n);
    }
    return static_cast<leaf_node*>(n);
  }
  // Keys compared by the built-in `<`: searched without branches on them.
  // A binary search's branches depend on keys that arrive from memory late
  // and go either way at random, so about half of them are mispredicted,
  // each throwing away the work begun after it; computing each step's
  // position from the comparison's result costs no more instructions and
  // throws nothing away. A million int keys, lookups in a scattered order
  // (otpp_bench's ets_ordered_lookup_ns): 205-335 ns -> 126-205 ns.
  static constexpr bool plain_keys =
      std::is_arithmetic_v<K> && (std::is_same_v<Less, std::less<K>> || std::is_same_v<Less, std::less<>>);

  // How many of the first n slots (n <= Slots) pass `below`, which holds for
  // a run of slots and then for none: the largest such count, found bit by
  // bit from the top bit of Slots (slots from n on count as failing).
  //
  // The spelling is chosen by measurement, as compilers differ on it: each
  // step probes a slot that does not depend on n (so its load starts before
  // the node's count arrives) and branches only on `j < n`, which goes the
  // same way for most nodes; the comparison's result is added as a mask,
  // and the loop is unrolled. Written as `c = below(j) ? c + step : c`,
  // GCC -O3 unrolled the loop and turned the comparisons back into
  // branches, and Clang branched on them at any level; clamping j to n
  // instead of branching made every step wait for the count; a search
  // narrowing over [0, n) made the first probe wait for it. Table lookups
  // in a 1M-key ordered_set, the benchmark's loop alone in a process: GCC
  // -O2 88-95 -> 80 ns, GCC -O3 115-124 -> 76-78, Clang -O3 143-160 ->
  // 70-73; otpp_bench's ets_ordered_lookup_ns (GCC -O3) 119-123 -> 80-84.
  template <int Slots, class Below>
  static int run_length(int n, Below below) noexcept {
    int c = 0;
#pragma GCC unroll 8
    for (int step = std::bit_floor(static_cast<unsigned>(Slots)); step > 0; step /= 2) {
      const int j = c + step - 1;
      if (j < n) c += step & -static_cast<int>(below(j));
    }
    return c;
  }
  // The child whose range holds k: after every separator not greater than k.
  int child_for(const inner* in, const K& k) const noexcept {
    const int seps = in->count - 1;
    if constexpr (plain_keys) {
      return run_length<inner_slots - 1>(seps, [&](int j) { return !(k < in->keys[j]); });
    } else {
      return static_cast<int>(std::upper_bound(in->keys, in->keys + seps, k, less_) - in->keys);
    }
  }
  // How many of leaf l's objects have keys less than k.
  int leaf_lower_bound(const leaf_node* l, const K& k) const noexcept {
    const int n = l->count;
    if constexpr (plain_keys) {
      return run_length<leaf_slots>(n, [&](int j) { return l->at(j).first < k; });
    } else {
      return static_cast<int>(
          std::partition_point(&l->at(0), &l->at(0) + n, [&](const value_type& v) { return less_(v.first, k); }) - &l->at(0));
    }
  }
  // A binary search in a node of several cache lines misses on each line it
  // reads, one after the other; asking for all of them first makes those
  // misses overlap (one memory round trip per level instead of three or four).
  static void prefetch_node(const node* n) noexcept {
    constexpr std::size_t bytes = std::max(sizeof(leaf_node), sizeof(inner));
    const char* p = reinterpret_cast<const char*>(n);
    for (std::size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
  }
  iterator normalize(leaf_node* l, int i) noexcept {
    if (i < l->count) return iterator{this, l, i};
    return l->next ? iterator{this, l->next, 0} : end();
  }
  // Opens a dead slot at object position i of leaf l (not full), moving
  // the objects before it one slot down or those from it one slot up:
  // the shorter side that has room.
  static void make_room(leaf_node* l, int i) noexcept {
    const int b = l->begin;
    const int n = l->count;
    const bool room_below = b > 0;
    const bool room_above = b + n < leaf_slots;
    if (room_below && (!room_above || i < n - i)) {
      move_slots(l, b, l, b - 1, i);
      l->begin = b - 1;
    } else {
      move_slots(l, b + i, l, b + i + 1, n - i);
    }
  }
  // Closes the dead slot of object i (destroyed): the shorter side moves.
  static void close_gap(leaf_node* l, int i) noexcept {
    const int b = l->begin;
    const int n = l->count;
    if (i < n - 1 - i) {
      move_slots(l, b, l, b + 1, i);
      l->begin = b + 1;
    } else {
      move_slots(l, b + i + 1, l, b + i, n - 1 - i);
    }
    l->count = n - 1;
  }
  // Moves n objects from slots [i, i + n) of one leaf to [j, j + n) of
  // another or the same (the runs may overlap), leaving the source slots dead.
  static void move_slots(leaf_node* from, int i, leaf_node* to, int j, int n) noexcept {
    if (n <= 0) return;
    if constexpr (std::is_trivially_copyable_v<value_type>) {
      std::memmove(to->storage + static_cast<std::size_t>(j) * sizeof(value_type),
                   from->storage + static_cast<std::size_t>(i) * sizeof(value_type), static_cast<std::size_t>(n) * sizeof(value_type));
    } else if (from != to || j < i) {
      for (int m = 0; m < n; ++m) {
        ::new (static_cast<void*>(&to->slot(j + m))) value_type(std::move(from->slot(i + m)));
        from->slot(i + m).~value_type();
      }
    } else {
      for (int m = n - 1; m >= 0; --m) {
        ::new (static_cast<void*>(&to->slot(j + m))) value_type(std::move(from->slot(i + m)));
        from->slot(i + m).~value_type();
      }
    }
  }

  // Splits full leaf `l`, where an object is about to go at position `at`.
  // Keys that arrive in order (ascending or descending: timestamps,
  // sequence numbers) always land at an end of the tree; splitting such a
  // leaf at the end instead of the middle leaves every node full, not half
  // full, which saves a level and half the memory for a million keys.
  void split_leaf(leaf_node* l, int at) {
    const edge e = (at == 0 && l == first_) ? edge::left : (at == l->count && l == last_) ? edge::right : edge::none;
    auto* r = make<leaf_node>();
    try {
      insert_child(l, r, e);  // separator set below: allocations first
    } catch (...) {
      delete_node(r);
      throw;
    }
    const int keep = e == edge::left ? 0 : e == edge::right ? l->count : l->count / 2;
    move_slots(l, l->begin + keep, r, 0, l->count - keep);
    r->count = l->count - keep;
    l->count = keep;
    // The low end's new leaf fills downwards: its room at the front.
    if (e == edge::left) l->begin = leaf_slots;
    r->prev = l;
    r->next = l->next;
    if (l->next) l->next->prev = r;
    l->next = r;
    if (last_ == l) last_ = r;
    if (r->count > 0) set_separator(r, r->at(0).first);  // else try_emplace sets it
  }

  // Which end of the tree a split is at (see split_leaf).
  enum class edge { none, left, right };

  // Links `right` into l's parent just after l (growing the tree as
  // needed); its separator is set by the caller (set_separator). Throws
  // std::bad_alloc with nothing linked.
  void insert_child(node* l, node* right, edge e) {
    inner* p = l->parent;
    if (p == nullptr) {
      p = make<inner>();
      p->leaf = false;
      p->count = 1;
      p->children[0] = l;
      l->parent = p;
      root_ = p;
    }
    if (p->count == inner_slots) {
      split_inner(p, e);  // may throw before anything moved
      p = l->parent;
    }
    int pos = 0;
    while (p->children[pos] != l) ++pos;
    for (int j = p->count; j > pos + 1; --j) {
      p->children[j] = p->children[j - 1];
      p->keys[j - 1] = std::move(p->keys[j - 2]);
    }
    p->children[pos + 1] = right;
    ++p->count;
    right->parent = p;
  }

  void split_inner(inner* p, edge e) {
    auto* r = make<inner>();
    r->leaf = false;
    try {
      insert_child(p, r, e);
    } catch (...) {
      delete_node(r);
      throw;
    }
    // Children kept on the left. At an edge the new child goes beside the
    // first or the last one: keep the rest together in one full node.
    const int keep = e == edge::left ? 1 : e == edge::right ? p->count - 1 : p->count / 2;
    K up = std::move(p->keys[keep - 1]);
    for (int j = keep; j < p->count; ++j) {
      r->children[j - keep] = p->children[j];
      r->children[j - keep]->parent = r;
      if (j > keep) r->keys[j - keep - 1] = std::move(p->keys[j - 1]);
    }
    r->count = p->count - keep;
    p->count = keep;
    set_separator(r, up);
  }

  // The separator before child `n` in its parent becomes `k`.
  static void set_separator(node* n, const K& k) {
    inner* p = n->parent;
    int pos = 0;
    while (p->children[pos] != n) ++pos;
    if (pos > 0) p->keys[pos - 1] = k;
  }

  void remove_leaf(leaf_node* l) noexcept {
    if (l->prev) l->prev->next = l->next;
    if (l->next) l->next->prev = l->prev;
    if (first_ == l) first_ = l->next;
    if (last_ == l) last_ = l->prev;
    remove_node(l);
  }
  // Drops `n` (empty) from its parent, and the parent too if it is left
  // without children; a root with one child gives way to it.
  void remove_node(node* n) noexcept {
    inner* p = n->parent;
    int pos = 0;
    while (p->children[pos] != n) ++pos;
    delete_node(n);
    for (int j = pos; j + 1 < p->count; ++j) p->children[j] = p->children[j + 1];
    // The separators: drop the one before the removed child (or, for the
    // first child, the one after it: the next child now starts the node).
    const int drop = pos > 0 ? pos - 1 : 0;
    for (int j = drop; j + 2 < p->count; ++j) p->keys[j] = std::move(p->keys[j + 1]);
    --p->count;
    if (p->count == 0) {
      remove_node(p);
      return;
    }
    if (p == root_ && p->count == 1) {
      root_ = p->children[0];
      root_->parent = nullptr;
      delete_node(p);
    }
  }
  template <class N>
  N* make() {
    static_assert(alignof(N) <= 64, "ordered_set: keys and values aligned to more than 64 bytes are not supported");
    if constexpr (std::is_same_v<N, inner>) {
      return ::new (inners_.allocate()) N;
    } else {
      return ::new (leaves_.allocate()) N;
    }
  }
  void delete_node(node* n) noexcept {
    if (n->leaf) {
      leaves_.deallocate(n);  // its objects are gone already
    } else {
      static_cast<inner*>(n)->~inner();
      inners_.deallocate(n);
    }
  }
  void destroy(node* n) noexcept {
    if (n == nullptr) return;
    if (n->leaf) {
      auto* l = static_cast<leaf_node*>(n);
      for (int i = 0; i < l->count; ++i) l->at(i).~value_type();
    } else {
      auto* in = static_cast<inner*>(n);
      for (int i = 0; i < in->count; ++i) destroy(in->children[i]);
      in->~inner();
    }
    // The blocks go back with the pool's chunks.
  }

  // Leaves and inner nodes in pools of their own sizes: the inner nodes,
  // read by every lookup, then lie closer together in the caches.
  tree_node_pool leaves_{sizeof(leaf_node)};
  tree_node_pool inners_{sizeof(inner)};
  node* root_ = nullptr;
  leaf_node* first_ = nullptr;
  leaf_node* last_ = nullptr;
  std::size_t size_ = 0;
  [[no_unique_address]] Less less_{};
};

}  // namespace otpp::detail
