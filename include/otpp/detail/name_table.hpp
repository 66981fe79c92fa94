#pragma once
// The local name table (Erlang's registered names): name → live process.
//
// Sharded by the name's hash, one spin lock per shard, so registrations and
// lookups of different names rarely meet, and a lookup loop on one name
// does not put its registrant to sleep. An entry holds no reference: a
// process removes its own name when it exits, before it drops its "alive"
// reference, so a process found under the shard lock is still alive enough
// to take a new reference to.

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "config.hpp"
#include "platform.hpp"
#include "process_base.hpp"

namespace otpp::detail {

class name_table {
 public:
  struct entry {
    process_base* process;
    const void* type;  // type_id of the server's Impl, for typed lookups
  };

  static name_table& instance() {
    static name_table* t = new name_table;  // processes may exit during static destruction
    return *t;
  }

  /// Registers `name` for `p`; on a clash returns the holder (with a new reference).
  process_base* add(const std::string& name, process_base* p, const void* type) {
    auto& sh = shard_of(name);
    std::lock_guard lock{sh.mutex};
    auto [it, inserted] = sh.map.try_emplace(name, entry{p, type});
    if (inserted) return nullptr;
    it->second.process->add_ref();
    return it->second.process;
  }

  /// Removes `name` if it is held by `p`.
  bool remove(std::string_view name, process_base* p) noexcept {
    auto& sh = shard_of(name);
    std::lock_guard lock{sh.mutex};
    auto it = sh.map.find(name);
    if (it == sh.map.end() || it->second.process != p) return false;
    sh.map.erase(it);
    return true;
  }

  /// The holder of `name` with a new reference, or nullptr. With `type`,
  /// only a holder of that server type.
  process_base* find(std::string_view name, const void* type = nullptr) {
    auto& sh = shard_of(name);
    std::lock_guard lock{sh.mutex};
    auto it = sh.map.find(name);
    if (it == sh.map.end()) return nullptr;
    if (type != nullptr && it->second.type != type) return nullptr;
    it->second.process->add_ref();
    return it->second.process;
  }

  template <class F>
  void for_each(F&& f) {
    for (auto& sh : shards_) {
      std::lock_guard lock{sh.mutex};
      for (auto& [name, e] : sh.map) f(std::string_view{name}, e.process);
    }
  }

 private:
  struct hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  struct alignas(cache_line) shard {
    spin_lock mutex;
    std::unordered_map<std::string, entry, hash, std::equal_to<>> map;
  };
  static constexpr std::size_t shard_count = 64;
  shard& shard_of(std::string_view name) noexcept { return shards_[hash{}(name) % shard_count]; }
  shard shards_[shard_count];
};

}  // namespace otpp::detail

#if OTPP_HEADER_ONLY
#include "name_table-inl.hpp"
#endif
