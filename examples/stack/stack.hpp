#pragma once
// The classic stack server (Elixir's GenServer guide): push is a cast, pop
// and peek are calls that answer nothing on an empty stack.
//
//   auto s = otpp::start<examples::stack<std::string>>().value();
//   otpp::cast(s, examples::stack<std::string>::push{"a"});
//   otpp::call(s, examples::stack<std::string>::pop{});   // "a"

#include <cstddef>
#include <optional>
#include <utility>
#include <vector>

#include <otpp/gen_server.hpp>

namespace examples {

template <class T>
class stack : public otpp::gen_server<stack<T>> {
 public:
  // Pure bookkeeping, no waits: callers may run it on their own thread
  // (see otpp::declares_nonblocking_handlers).
  static constexpr bool nonblocking_handlers = true;
  struct push {  // cast
    T value;
  };
  struct pop {};   // call → the top, removed; nothing if empty
  struct peek {};  // call → the top; nothing if empty
  struct size {};  // call

  explicit stack(std::vector<T> initial = {}) : items_{std::move(initial)} {}

  void handle_cast(push p) { items_.push_back(std::move(p.value)); }
  std::optional<T> handle_call(pop) {
    if (items_.empty()) return std::nullopt;
    T top = std::move(items_.back());
    items_.pop_back();
    return top;
  }
  std::optional<T> handle_call(peek) const {
    if (items_.empty()) return std::nullopt;
    return items_.back();
  }
  std::size_t handle_call(size) const { return items_.size(); }

 private:
  std::vector<T> items_;  // top at the back
};

}  // namespace examples
