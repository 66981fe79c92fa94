#pragma once
// otpp::table: ETS. A concurrent table of (key, value) objects that any
// thread or process reads directly, owned by the process that created it.
//
//   using cache_table = otpp::table<std::string, result, otpp::set>;
//   auto t = cache_table::create({.name = "cache", .read_concurrency = true});  // in the owner
//   t.insert("q", r);                           // protected (the default): the owner writes...
//   std::optional<result> hit = t.lookup("q");  // ...anyone reads, without a message
//
// Ownership, as ETS: the table lives until its owner exits, then it is
// deleted, unless an heir was named: then it passes to the heir, which
// receives otpp::table_transfer<Table> in handle_info (ETS-TRANSFER), and
// stays the heir (an heir that is the owner when it exits takes the table
// with it).
// give_away hands it over the same way. Created outside a process, a table
// has no owner: it must be public, and lives until delete_table().
//
// Access: public (anyone reads and writes), protected (the owner writes,
// anyone reads; the default), private (the owner only). A violation, or any
// operation on a deleted table, throws otpp::table_error naming the
// operation and the table; nothing is changed.
//
// Every single-object operation is atomic and isolated; a batch insert is
// atomic as a whole, and all or nothing even when memory runs out.
// Readers never wait for readers: a hash table (set, bag, duplicate_bag)
// is split into shards by key hash, each under a reader-writer lock
// readers share; an ordered_set is one shard. With
// read_concurrency, lookups between bursts of writes take no lock at all
// (the first write of a burst waits for them: detail/read_bias.hpp).
//
// Traversals (select, foldl, to_list) read one shard at a time under its
// lock and copy what they keep, so the caller's function never runs under
// a lock and may write to the table. Guarantee: an object present for the
// whole traversal is seen exactly once; one inserted or erased meanwhile is
// seen at most once. first/next/last/prev walk keys in key order (ordered_set)
// or in shard order (the others); next of a key no longer in a hash table
// throws table_error (use select or foldl to walk a table others write to).

#include <algorithm>
#include <any>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "detail/table_ownership.hpp"
#include "detail/table_store.hpp"
#include "process.hpp"
#include "table_options.hpp"

namespace otpp {

/// Table types (ETS's): one object per key, in hash order.
struct set {};
/// One object per key, traversed in key order.
struct ordered_set {};
/// Several objects per key, no two equal (insertion order kept).
struct bag {};
/// Several objects per key, duplicates allowed (insertion order kept).
struct duplicate_bag {};

/// A table operation that is not allowed: a write to a protected table from
/// another process, any use of a private table by another, any use of a
/// deleted table, a name already taken, a bad argument.
class table_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// What info() reports.
struct table_info {
  std::string name;       ///< empty for an unnamed table
  std::string_view type;  ///< "set", "ordered_set", "bag", "duplicate_bag"
  table_access access;    ///< who may read and write
  pid owner;              ///< empty for an ownerless table
  pid heir;               ///< empty if none
  std::size_t size;    ///< objects
  std::size_t memory;  ///< bytes, an estimate (objects, buckets, shards)
};

/// update_counter's bound (ETS's {Pos, Incr, Threshold, SetValue}): when
/// the counter passes `threshold` (above it for a positive increment, below
/// it for a negative one), it becomes `set_value` instead.
template <class V>
struct counter_bound {
  V threshold;  ///< the value the counter may not pass
  V set_value;  ///< what it becomes when it would
};

/// A key a hash table (set, bag, duplicate_bag) can hold: std::hash<K>
/// (specialise it for a type of your own) and ==.
template <class K>
concept hashable_key = std::equality_comparable<K> && requires(const K& k) {
  { std::hash<K>{}(k) } -> std::convertible_to<std::size_t>;
};
/// A key an ordered_set can hold: a < that orders keys.
template <class K>
concept ordered_key = requires(const K& a, const K& b) {
  { a < b } -> std::convertible_to<bool>;
};
/// A key a table of kind Kind can hold.
template <class K, class Kind>
concept table_key = (std::same_as<Kind, ordered_set> ? ordered_key<K> : hashable_key<K>);

template <class K, class V, class Kind>
  requires table_key<K, Kind>
class table;

/// The message an heir (or a give_away recipient) gets in handle_info when
/// it becomes a table's owner (ETS-TRANSFER).
template <class Table>
struct table_transfer {
  Table table;    ///< the table, now the receiver's
  pid from;       ///< the previous owner
  std::any data;  ///< heir_data, or give_away's data
};

namespace detail {

template <class Kind>
inline constexpr bool is_bag_kind_v = std::is_same_v<Kind, bag> || std::is_same_v<Kind, duplicate_bag>;

template <class Kind>
constexpr const char* kind_name() noexcept {
  if constexpr (std::is_same_v<Kind, set>) return "set";
  if constexpr (std::is_same_v<Kind, ordered_set>) return "ordered_set";
  if constexpr (std::is_same_v<Kind, bag>) return "bag";
  if constexpr (std::is_same_v<Kind, duplicate_bag>) return "duplicate_bag";
}

template <class K, class V, class Kind>
using store_for = table_store<K, V, is_bag_kind_v<Kind>, std::is_same_v<Kind, bag>, std::is_same_v<Kind, ordered_set>>;

template <class K, class V, class Kind>
struct table_state final : table_meta {
  table_state(table_options&& o, std::size_t shards, bool reader_groups, bool decentralized)
      : table_meta{std::move(o), kind_name<Kind>(), type_id<table<K, V, Kind>>}, store{shards, reader_groups, decentralized} {}
  void drop_objects() noexcept override { (void)store.clear(); }
  message_node* make_transfer(const pid& from, std::any& data) override;
  store_for<K, V, Kind> store;
};

}  // namespace detail

/// A page of select's results, and where the next page starts.
template <class K, class V>
struct table_page {
  /// This page's matches, at most the limit.
  std::vector<std::pair<K, V>> objects;
  /// Where select(continuation) goes on; empty after the last page.
  struct continuation {
    std::size_t next_shard = 0;                    ///< hash tables: the next shard to read
    std::vector<std::pair<K, V>> pending;          ///< matches read that did not fit the last page
    std::optional<K> after;                        ///< ordered_set: the last key read
    std::function<bool(const K&, const V&)> pred;  ///< the select's predicate
    std::size_t limit = 0;                         ///< objects per page (0: all)
  };
  /// The rest, if any.
  std::optional<continuation> more;
};

/// A handle to a table of (K, V) objects of type Kind (otpp::set,
/// ordered_set, bag, duplicate_bag). Copies share the table; like a
/// pointer, a const handle still reads and writes the table. K needs
/// std::hash and == (hash tables) or < (ordered_set); V needs == for a bag
/// and for erase_object.
template <class K, class V, class Kind = set>
  requires table_key<K, Kind>
class table {
  using state = detail::table_state<K, V, Kind>;
  using store = detail::store_for<K, V, Kind>;
  static constexpr bool multi = store::multi;
  static constexpr bool ordered = store::ordered;
  static_assert(std::is_same_v<Kind, set> || std::is_same_v<Kind, ordered_set> || std::is_same_v<Kind, bag> ||
                    std::is_same_v<Kind, duplicate_bag>,
                "otpp::table: Kind is otpp::set, otpp::ordered_set, otpp::bag or otpp::duplicate_bag");

 public:
  using key_type = K;    ///< the objects' key
  using value_type = V;  ///< the objects' value
  /// What lookup gives: the object, if any (set, ordered_set), or every
  /// object under the key in insertion order (bag, duplicate_bag).
  using lookup_result = std::conditional_t<multi, std::vector<V>, std::optional<V>>;

  /// An empty handle: every operation throws table_error.
  table() noexcept = default;

  /// Makes a table owned by the calling process (ETS's new). Outside a
  /// process the table has no owner and must be public. Throws table_error
  /// for a name already taken, or an ownerless table that is not public.
  [[nodiscard]] static table create(table_options options = {}) {
    detail::process_base* me = detail::tls().current;
    if (me == nullptr && options.access != table_access::public_access)
      throw table_error("otpp::table::create: a table made outside a process has no owner and must be public");
    const std::size_t shards = (options.read_concurrency || options.write_concurrency) ? 64 : 8;
    const bool reader_groups = options.read_concurrency;
    const bool decentralized = options.decentralized_counters.value_or(options.write_concurrency);
    auto t = std::make_shared<state>(std::move(options), shards, reader_groups, decentralized);
    if (!t->name.empty() && !detail::table_names::instance().add(t->name, t))
      throw table_error(fmt::format("otpp::table::create: the name '{}' is taken by another table", t->name));
    if (me != nullptr) {
      try {
        me->cold_state().exit_hooks.push_back(std::make_shared<detail::table_owner_hook>(t));
      } catch (...) {
        if (!t->name.empty()) detail::table_names::instance().remove(t->name, t.get());
        throw;
      }
      t->owner.store(me, std::memory_order_release);
      t->owner_pid = detail::pid_access::make(me);
    }
    return table{std::move(t)};
  }

  /// The live table named `name`, if it has this type.
  [[nodiscard]] static std::optional<table> named(std::string_view name) {
    auto t = detail::table_names::instance().find(name);
    if (t == nullptr || t->type_tag != detail::type_id<table> || t->deleted.load(std::memory_order_acquire)) return std::nullopt;
    return table{std::static_pointer_cast<state>(std::move(t))};
  }

  // -- writes -------------------------------------------------------------------------
  /// Inserts (k, v): a set replaces the object under k, a bag adds it
  /// unless an equal one is there, a duplicate_bag adds it.
  void insert(K k, V v) const {
    store& s = writable("insert");
    auto [sh, hash] = s.place_of(k);
    typename store::write_guard g{s, sh};
    (void)s.put_locked({sh, hash}, std::move(k), std::move(v));
  }
  /// Inserts every object, atomically: no reader sees some without the
  /// others. All or nothing: where one cannot be inserted (std::bad_alloc,
  /// a throwing constructor), the others are taken back and the exception
  /// goes on.
  void insert(std::vector<std::pair<K, V>> objects) const {
    store& s = writable("insert");
    typename store::batch_lock g{s, keys_of(objects)};
    s.put_all_locked(objects);
  }
  /// Inserts (k, v) only if no object has key k; returns whether it did.
  bool insert_new(K k, V v) const {
    store& s = writable("insert_new");
    auto [sh, hash] = s.place_of(k);
    typename store::write_guard g{s, sh};
    if (sh.map.find(k, hash) != sh.map.end()) return false;
    return s.put_locked({sh, hash}, std::move(k), std::move(v));
  }
  /// Inserts every object only if none of their keys is in the table (and
  /// they are distinct); all or nothing.
  bool insert_new(std::vector<std::pair<K, V>> objects) const {
    store& s = writable("insert_new");
    auto keys = keys_of(objects);
    typename store::batch_lock g{s, keys};
    for (std::size_t i = 0; i < objects.size(); ++i) {
      auto& sh = s.shard_of(objects[i].first);
      if (sh.map.find(objects[i].first) != sh.map.end()) return false;
      for (std::size_t j = 0; j < i; ++j)
        if (objects[j].first == objects[i].first) return false;
    }
    s.put_all_locked(objects);
    return true;
  }
  /// Erases every object under k; returns whether there was one.
  bool erase(const K& k) const {
    store& s = writable("erase");
    auto [sh, hash] = s.place_of(k);
    typename store::write_guard g{s, sh};
    auto it = sh.map.find(k, hash);
    if (it == sh.map.end()) return false;
    s.counted(sh, -static_cast<std::ptrdiff_t>(count_of(it->second)));
    sh.map.erase(it);
    return true;
  }
  /// Erases the objects equal to (k, v) (every copy, in a duplicate_bag);
  /// returns whether there was one.
  bool erase_object(const K& k, const V& v) const {
    store& s = writable("erase_object");
    auto [sh, hash] = s.place_of(k);
    typename store::write_guard g{s, sh};
    auto it = sh.map.find(k, hash);
    if (it == sh.map.end()) return false;
    if constexpr (multi) {
      auto& objs = it->second;
      const auto before = objs.size();
      objs.erase(std::remove(objs.begin(), objs.end(), v), objs.end());
      s.counted(sh, -static_cast<std::ptrdiff_t>(before - objs.size()));
      const bool any = objs.size() != before;
      if (objs.empty()) sh.map.erase(it);
      return any;
    } else {
      if (!(it->second == v)) return false;
      sh.map.erase(it);
      s.counted(sh, -1);
      return true;
    }
  }
  /// Removes and returns what is under k (ETS's take).
  lookup_result take(const K& k) const {
    store& s = writable("take");
    auto [sh, hash] = s.place_of(k);
    typename store::write_guard g{s, sh};
    auto it = sh.map.find(k, hash);
    if (it == sh.map.end()) return lookup_result{};
    s.counted(sh, -static_cast<std::ptrdiff_t>(count_of(it->second)));
    lookup_result out{std::move(it->second)};
    sh.map.erase(it);
    return out;
  }
  /// Adds `incr` to the counter under k and returns the new value. Throws
  /// table_error if there is none (ETS's badarg).
  V update_counter(const K& k, V incr) const
    requires(std::integral<V> && !multi)
  {
    return counter("update_counter", k, incr, nullptr, nullptr);
  }
  /// As above; a counter that would pass bound.threshold becomes bound.set_value.
  V update_counter(const K& k, V incr, counter_bound<V> bound) const
    requires(std::integral<V> && !multi)
  {
    return counter("update_counter", k, incr, &bound, nullptr);
  }
  /// As above; a missing counter starts at `initial` (ETS's Default object).
  V update_counter(const K& k, V incr, V initial) const
    requires(std::integral<V> && !multi)
  {
    return counter("update_counter", k, incr, nullptr, &initial);
  }
  /// Both: a missing counter starts at `initial`, the result is bounded.
  V update_counter(const K& k, V incr, counter_bound<V> bound, V initial) const
    requires(std::integral<V> && !multi)
  {
    return counter("update_counter", k, incr, &bound, &initial);
  }
  /// Changes the object under k in place, atomically: fn(V&). Returns
  /// whether there was one (ETS's update_element, for a typed value).
  template <class F>
    requires(std::invocable<F&, V&> && !multi)
  bool update_element(const K& k, F&& fn) const {
    store& s = writable("update_element");
    auto [sh, hash] = s.place_of(k);
    typename store::write_guard g{s, sh};
    auto it = sh.map.find(k, hash);
    if (it == sh.map.end()) return false;
    std::forward<F>(fn)(it->second);
    return true;
  }
  /// Erases every object; returns how many there were.
  std::size_t delete_all_objects() const { return writable("delete_all_objects").clear(); }

  // -- reads --------------------------------------------------------------------------
  /// What is under k (a copy).
  [[nodiscard]] lookup_result lookup(const K& k) const {
    store& s = readable("lookup");
    auto [sh, hash] = s.place_of(k);
    typename store::read_guard g{s, sh};
    auto it = sh.map.find(k, hash);
    if (it == sh.map.end()) return lookup_result{};
    return lookup_result{it->second};
  }
  /// Calls visit(const V&) on each object under k, in place, as a read
  /// (copies nothing; writers to the shard spin until visit returns, so
  /// visit must not wait for another process, as in a call). visit may read
  /// any table, but must not write to this one; nor to another table whose
  /// own visitors may write to this one, as with two locks taken in
  /// opposite orders. Returns whether there was one.
  template <class F>
    requires std::invocable<F&, const V&>
  bool lookup(const K& k, F&& visit) const {
    store& s = readable("lookup");
    auto [sh, hash] = s.place_of(k);
    typename store::read_guard g{s, sh};
    auto it = sh.map.find(k, hash);
    if (it == sh.map.end()) return false;
    if constexpr (multi) {
      for (const V& v : it->second) visit(v);
    } else {
      visit(std::as_const(it->second));
    }
    return true;
  }
  /// Whether an object has key k.
  [[nodiscard]] bool member(const K& k) const {
    store& s = readable("member");
    auto [sh, hash] = s.place_of(k);
    typename store::read_guard g{s, sh};
    return sh.map.find(k, hash) != sh.map.end();
  }
  /// The objects for which pred(key, value) holds, up to `limit` (0: all)
  /// per page, and a continuation for the next page.
  template <class Pred>
    requires std::predicate<Pred&, const K&, const V&>
  [[nodiscard]] table_page<K, V> select(Pred pred, std::size_t limit = 0) const {
    typename table_page<K, V>::continuation c;
    c.pred = std::move(pred);
    c.limit = limit;
    return select(std::move(c));
  }
  /// The next page of a select.
  [[nodiscard]] table_page<K, V> select(typename table_page<K, V>::continuation c) const {
    store& s = readable("select");
    table_page<K, V> page;
    const std::size_t limit = c.limit == 0 ? SIZE_MAX : c.limit;
    auto take_pending = [&] {
      const std::size_t n = std::min(c.pending.size(), limit - page.objects.size());
      if (n == 0) return;
      const auto last = c.pending.begin() + static_cast<std::ptrdiff_t>(n);
      page.objects.insert(page.objects.end(), std::make_move_iterator(c.pending.begin()), std::make_move_iterator(last));
      c.pending.erase(c.pending.begin(), last);  // one shift per page, not one per object
    };
    take_pending();
    if constexpr (ordered) {
      auto& sh = s.shard_at(0);
      detail::shared_spin_guard g{sh.lock};
      auto it = c.after ? sh.map.upper_bound(*c.after) : sh.map.begin();
      for (; it != sh.map.end() && page.objects.size() < limit; ++it) {
        c.after = it->first;
        if (c.pred(it->first, std::as_const(it->second))) page.objects.emplace_back(it->first, it->second);
      }
      if (it != sh.map.end()) page.more = std::move(c);
    } else {
      while (page.objects.size() < limit && c.next_shard < s.shard_count()) {
        std::vector<std::pair<K, V>> found = scan_shard(s.shard_at(c.next_shard++), c.pred);
        for (auto& o : found) c.pending.push_back(std::move(o));
        take_pending();
      }
      if (!c.pending.empty() || c.next_shard < s.shard_count()) page.more = std::move(c);
    }
    return page;
  }
  /// How many objects pred(key, value) holds for (ETS's select_count). Each
  /// shard is counted under its read lock: objects written meanwhile in
  /// shards not yet counted may count or not.
  template <class Pred>
    requires std::predicate<Pred&, const K&, const V&>
  [[nodiscard]] std::size_t select_count(Pred pred) const {
    store& s = readable("select_count");
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.shard_count(); ++i) {
      auto& sh = s.shard_at(i);
      detail::shared_spin_guard g{sh.lock};
      for (const auto& [k, b] : sh.map) {
        if constexpr (multi) {
          for (const V& v : b) n += pred(k, v) ? 1 : 0;
        } else {
          n += pred(k, b) ? 1 : 0;
        }
      }
    }
    return n;
  }
  /// Erases the objects pred(key, value) holds for and returns how many
  /// (ETS's select_delete). Shard by shard, each under its write lock, so
  /// pred must not use this table. If pred throws, the shards swept before
  /// have lost their matches and the rest are untouched.
  template <class Pred>
    requires std::predicate<Pred&, const K&, const V&>
  std::size_t select_delete(Pred pred) const {
    store& s = writable("select_delete");
    std::size_t n = 0;
    std::vector<K> emptied;
    std::vector<char> hit;
    for (std::size_t i = 0; i < s.shard_count(); ++i) {
      auto& sh = s.shard_at(i);
      typename store::write_guard g{s, sh};
      // pred decides for the whole shard before anything moves, and the
      // allocations come first too: a throw leaves this shard whole.
      emptied.clear();
      emptied.reserve(sh.map.size());
      hit.clear();
      for (const auto& [k, b] : sh.map) {
        if constexpr (multi) {
          for (const V& v : b) hit.push_back(pred(k, v) ? 1 : 0);
        } else {
          hit.push_back(pred(k, b) ? 1 : 0);
        }
      }
      std::size_t h = 0;
      std::size_t removed = 0;
      for (auto& [k, b] : sh.map) {
        if constexpr (multi) {
          std::size_t kept = 0;
          for (std::size_t j = 0; j < b.size(); ++j, ++h)
            if (!hit[h]) {
              if (kept != j) b[kept] = std::move(b[j]);
              ++kept;
            }
          removed += b.size() - kept;
          b.erase(b.begin() + static_cast<std::ptrdiff_t>(kept), b.end());
          if (b.empty()) emptied.push_back(k);
        } else if (hit[h++]) {
          emptied.push_back(k);
          ++removed;
        }
      }
      for (const K& k : emptied) sh.map.erase(sh.map.find(k));
      s.counted(sh, -static_cast<std::ptrdiff_t>(removed));
      n += removed;
    }
    return n;
  }
  /// fn(acc, key, value) over every object, from `init` (foldl). fn runs
  /// outside the table's locks.
  template <class Acc, class F>
  Acc foldl(Acc init, F&& fn) const {
    store& s = readable("foldl");
    for (std::size_t i = 0; i < s.shard_count(); ++i)
      for (auto& [k, v] : scan_shard(s.shard_at(i), [](const K&, const V&) { return true; }))
        init = fn(std::move(init), std::as_const(k), std::as_const(v));
    return init;
  }
  /// Every object (ordered_set: in key order).
  [[nodiscard]] std::vector<std::pair<K, V>> to_list() const {
    return foldl(std::vector<std::pair<K, V>>{}, [](auto acc, const K& k, const V& v) {
      acc.emplace_back(k, v);
      return acc;
    });
  }
  /// The first key (ordered_set: the smallest), if any.
  [[nodiscard]] std::optional<K> first() const {
    store& s = readable("first");
    return first_from(s, 0);
  }
  /// The key after k, if any. Throws table_error for a hash table that no
  /// longer holds k.
  [[nodiscard]] std::optional<K> next(const K& k) const {
    store& s = readable("next");
    if constexpr (ordered) {
      auto& sh = s.shard_at(0);
      detail::shared_spin_guard g{sh.lock};
      auto it = sh.map.upper_bound(k);
      if (it == sh.map.end()) return std::nullopt;
      return it->first;
    } else {
      const std::size_t i = s.index_of(k);
      {
        auto& sh = s.shard_at(i);
        detail::shared_spin_guard g{sh.lock};
        auto it = sh.map.find(k);
        if (it == sh.map.end()) throw error("next", "the key is not in the table");
        if (++it != sh.map.end()) return it->first;
      }
      return first_from(s, i + 1);
    }
  }
  /// The last key (ordered_set: the largest; otherwise as first()).
  [[nodiscard]] std::optional<K> last() const {
    if constexpr (ordered) {
      store& s = readable("last");
      auto& sh = s.shard_at(0);
      detail::shared_spin_guard g{sh.lock};
      if (sh.map.empty()) return std::nullopt;
      return std::prev(sh.map.end())->first;
    } else {
      return first();
    }
  }
  /// The key before k (ordered_set; otherwise as next()).
  [[nodiscard]] std::optional<K> prev(const K& k) const {
    if constexpr (ordered) {
      store& s = readable("prev");
      auto& sh = s.shard_at(0);
      detail::shared_spin_guard g{sh.lock};
      auto it = sh.map.lower_bound(k);
      if (it == sh.map.begin()) return std::nullopt;
      return std::prev(it)->first;
    } else {
      return next(k);
    }
  }
  /// Objects in the table.
  [[nodiscard]] std::size_t size() const { return readable("size").size(); }
  /// Name, type, access, owner, heir, size and memory.
  [[nodiscard]] table_info info() const {
    store& s = readable("info");
    table_info i{t_->name, t_->kind, t_->access, {}, {}, s.size(), 0};
    {
      std::lock_guard lock{t_->m};
      i.owner = t_->owner_pid;
      i.heir = t_->heir;
    }
    i.memory = sizeof(state) + s.shard_count() * sizeof(typename store::shard) +
               i.size * (sizeof(K) + sizeof(V) + 2 * sizeof(void*));
    return i;
  }

  // -- ownership ----------------------------------------------------------------------
  /// Makes `to` the owner (the caller must own the table): `to` receives
  /// table_transfer{table, caller, data}. Throws table_error if `to` is
  /// dead, empty or the caller.
  void give_away(const pid& to, std::any data = {}) const {
    detail::process_base* me = owner_only("give_away");
    if (!to.alive() || detail::pid_access::get(to) == me)
      throw error("give_away", "the new owner must be a live process other than the owner");
    detail::adopt_table(t_, to, detail::pid_access::make(me), data);  // throws before any change
    // Then off our exit hooks: our exit no longer touches the table.
    std::erase_if(me->cold_state().exit_hooks, [&](const auto& h) { return h->owner_tag() == t_.get(); });
  }
  /// Names the process that receives the table when the owner exits, with
  /// `data` (ETS's setopts heir); an empty pid: none. Owner only.
  void set_heir(const pid& heir, std::any data = {}) const {
    (void)owner_only("set_heir");
    std::lock_guard lock{t_->m};
    t_->heir = heir;
    t_->heir_data = std::move(data);
  }
  /// Deletes the table now (the owner, or anyone for an ownerless table).
  void delete_table() const {
    if (t_ == nullptr) throw table_error("otpp::table::delete_table: an empty table handle");
    if (t_->owner.load(std::memory_order_acquire) != nullptr) {
      detail::process_base* me = owner_only("delete_table");
      std::erase_if(me->cold_state().exit_hooks, [&](const auto& h) { return h->owner_tag() == t_.get(); });
    }
    detail::delete_table_now(*t_);
  }
  /// Whether the table was deleted (its owner exited without an heir, or delete_table).
  [[nodiscard]] bool deleted() const noexcept { return t_ == nullptr || t_->deleted.load(std::memory_order_acquire); }
  /// The owner (empty for an ownerless or deleted table).
  [[nodiscard]] pid owner() const {
    if (t_ == nullptr) return {};
    std::lock_guard lock{t_->m};
    return t_->owner_pid;
  }
  /// The same table.
  friend bool operator==(const table& a, const table& b) noexcept { return a.t_ == b.t_; }

 private:
  explicit table(std::shared_ptr<state> t) noexcept : t_{std::move(t)} {}
  friend struct detail::table_state<K, V, Kind>;

  static std::size_t count_of(const typename store::bucket& b) noexcept {
    if constexpr (multi) {
      return b.size();
    } else {
      return 1;
    }
  }
  static std::vector<K> keys_of(const std::vector<std::pair<K, V>>& objects) {
    std::vector<K> keys;
    keys.reserve(objects.size());
    for (auto& o : objects) keys.push_back(o.first);
    return keys;
  }
  template <class Pred>
  static std::vector<std::pair<K, V>> scan_shard(typename store::shard& sh, const Pred& pred) {
    std::vector<std::pair<K, V>> out;
    detail::shared_spin_guard g{sh.lock};
    for (auto& [k, b] : sh.map) {
      if constexpr (multi) {
        for (const V& v : b)
          if (pred(k, v)) out.emplace_back(k, v);
      } else {
        if (pred(k, std::as_const(b))) out.emplace_back(k, b);
      }
    }
    return out;
  }
  static std::optional<K> first_from(store& s, std::size_t i) {
    for (; i < s.shard_count(); ++i) {
      auto& sh = s.shard_at(i);
      detail::shared_spin_guard g{sh.lock};
      if (!sh.map.empty()) return sh.map.begin()->first;
    }
    return std::nullopt;
  }

  V counter(const char* op, const K& k, V incr, const counter_bound<V>* bound, const V* initial) const
    requires(std::integral<V> && !multi)
  {
    store& s = writable(op);
    auto [sh, hash] = s.place_of(k);
    typename store::write_guard g{s, sh};
    auto it = sh.map.find(k, hash);
    if (it == sh.map.end()) {
      if (initial == nullptr) throw error(op, "no counter under the key (give an initial value to create one)");
      it = sh.map.try_emplace_hashed(hash, k, *initial).first;
      s.counted(sh, 1);
    }
    V v = it->second + incr;
    if (bound != nullptr && ((incr >= 0 && v > bound->threshold) || (incr < 0 && v < bound->threshold))) v = bound->set_value;
    it->second = v;
    return v;
  }

  [[nodiscard]] table_error error(const char* op, std::string_view why) const {
    return table_error(fmt::format("otpp::table::{} on {} table '{}': {}", op, t_ ? t_->kind : "?",
                                   t_ && !t_->name.empty() ? t_->name : std::string{"(unnamed)"}, why));
  }
  // The checks every operation makes, small enough to inline; the error
  // paths (formatting, throwing) stay out of line.
  store& live(const char* op) const {
    if (t_ == nullptr || t_->deleted.load(std::memory_order_acquire)) [[unlikely]]
      throw_dead(op);
    return t_->store;
  }
  detail::process_base* owner_only(const char* op) const {
    (void)live(op);
    detail::process_base* me = detail::tls().current;
    if (me == nullptr || t_->owner.load(std::memory_order_acquire) != me) [[unlikely]]
      throw_not_owner(op, "only its owner ({}) may do this");
    return me;
  }
  store& writable(const char* op) const {
    store& s = live(op);
    if (t_->access != table_access::public_access &&
        t_->owner.load(std::memory_order_acquire) != detail::tls().current) [[unlikely]]
      throw_not_owner(op, t_->access == table_access::private_access ? "the table is private: only its owner ({}) writes"
                                                                      : "the table is protected: only its owner ({}) writes");
    return s;
  }
  store& readable(const char* op) const {
    store& s = live(op);
    if (t_->access == table_access::private_access &&
        t_->owner.load(std::memory_order_acquire) != detail::tls().current) [[unlikely]]
      throw_not_owner(op, "the table is private: only its owner ({}) reads");
    return s;
  }
  [[noreturn, gnu::noinline, gnu::cold]] void throw_dead(const char* op) const {
    if (t_ == nullptr) throw table_error(fmt::format("otpp::table::{}: an empty table handle", op));
    throw error(op, "the table was deleted (its owner exited, or delete_table)");
  }
  [[noreturn, gnu::noinline, gnu::cold]] void throw_not_owner(const char* op, const char* why) const {
    throw error(op, fmt::format(fmt::runtime(why), owner()));
  }

  std::shared_ptr<state> t_;
};

namespace detail {
template <class K, class V, class Kind>
message_node* table_state<K, V, Kind>::make_transfer(const pid& from, std::any& data) {
  using node = untyped_node<table_transfer<table<K, V, Kind>>>;
  static_assert(alignof(node) <= pool_granule);
  void* mem = pool_allocate(sizeof(node));  // first: without it, nothing is taken from `data`
  auto self = std::static_pointer_cast<table_state>(shared_from_this());
  return ::new (mem) node(table_transfer<table<K, V, Kind>>{table<K, V, Kind>{std::move(self)}, from, std::move(data)});
}
}  // namespace detail

}  // namespace otpp
