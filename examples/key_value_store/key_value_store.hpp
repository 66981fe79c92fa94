#pragma once
// The classic key-value store server: put / get / remove / keys / size.
//
//   using kv = examples::key_value_store<std::string, int>;
//   auto s = otpp::start<kv>().value();
//   otpp::cast(s, kv::put{"a", 1});
//   otpp::call(s, kv::get{"a"});       // 1
//   otpp::call(s, kv::get{"zz"});      // nothing: an unknown key is not an error

#include <cstddef>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include <otpp/gen_server.hpp>

namespace examples {

template <class K, class V>
class key_value_store : public otpp::gen_server<key_value_store<K, V>> {
 public:
  // Pure bookkeeping, no waits: callers may run it on their own thread
  // (see otpp::declares_nonblocking_handlers).
  static constexpr bool nonblocking_handlers = true;
  struct put {  // cast: inserts or replaces
    K key;
    V value;
  };
  struct get {  // call → the value, or nothing
    K key;
  };
  struct remove {  // call → whether the key was there
    K key;
  };
  struct keys {};  // call → every key, in order
  struct size {};  // call

  void handle_cast(put p) { data_.insert_or_assign(std::move(p.key), std::move(p.value)); }
  std::optional<V> handle_call(const get& g) const {
    auto it = data_.find(g.key);
    if (it == data_.end()) return std::nullopt;
    return it->second;
  }
  bool handle_call(const remove& r) { return data_.erase(r.key) != 0; }
  std::vector<K> handle_call(keys) const {
    std::vector<K> out;
    out.reserve(data_.size());
    for (auto& [k, v] : data_) out.push_back(k);
    return out;
  }
  std::size_t handle_call(size) const { return data_.size(); }

 private:
  std::map<K, V> data_;
};

}  // namespace examples
