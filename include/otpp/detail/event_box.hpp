#pragma once
// One value of any type, owned, for events a state machine keeps for later
// (postponed events, inserted events, timeout contents): small values that
// move without throwing sit inline, so keeping one allocates nothing.

#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace otpp::detail {

class event_box {
 public:
  static constexpr std::size_t inline_size = 48;

  event_box() noexcept = default;
  event_box(const event_box&) = delete;
  event_box& operator=(const event_box&) = delete;
  // The moves are inlined by force: a state machine moves a timeout's
  // content on every re-arm, and GCC at -O3 called them (a call for what is
  // mostly a test and two stores: timer_rearm_ns).
  [[gnu::always_inline]] event_box(event_box&& o) noexcept { take(o); }
  [[gnu::always_inline]] event_box& operator=(event_box&& o) noexcept {
    if (ops_ != nullptr && ops_ == o.ops_ && ops_->empty) {
      o.ops_ = nullptr;  // the same empty value (a timeout's tag, re-armed): nothing to move
      return *this;
    }
    if (this != &o) {
      reset();
      take(o);
    }
    return *this;
  }
  ~event_box() { reset(); }

  /// Holds T(args...) from now on. Throws what T's constructor or
  /// allocation throws (then the box is empty).
  template <class T, class... A>
  T& emplace(A&&... args) {
    reset();
    if constexpr (fits<T>) {
      T* p = ::new (static_cast<void*>(buf_)) T(std::forward<A>(args)...);
      ops_ = &inline_ops<T>;
      return *p;
    } else {
      T* p = new T(std::forward<A>(args)...);
      ::new (static_cast<void*>(buf_)) T*(p);
      ops_ = &heap_ops<T>;
      return *p;
    }
  }
  /// The value, which must be a T.
  template <class T>
  [[nodiscard]] T& get() noexcept {
    if constexpr (fits<T>) {
      return *std::launder(reinterpret_cast<T*>(buf_));
    } else {
      return **std::launder(reinterpret_cast<T**>(buf_));
    }
  }
  [[nodiscard]] bool empty() const noexcept { return ops_ == nullptr; }
  void reset() noexcept {
    if (ops_ != nullptr) drop();  // the common case, moved-from or empty, stays inline
  }

 private:
  struct ops_t {
    void (*move)(unsigned char* to, unsigned char* from) noexcept;  // constructs at `to`, destroys `from`
    void (*destroy)(unsigned char* at) noexcept;
    bool trivial;  // inline and trivially copyable: moved by copying words, nothing to destroy
    bool empty;    // ...and without data: nothing to move either
    unsigned char words;  // trivial: the 8-byte words it spans
  };
  template <class T>
  static constexpr bool fits = sizeof(T) <= inline_size && alignof(T) <= alignof(std::max_align_t) &&
                               std::is_nothrow_move_constructible_v<T>;
  template <class T>
  static constexpr ops_t inline_ops{
      [](unsigned char* to, unsigned char* from) noexcept {
        T* f = std::launder(reinterpret_cast<T*>(from));
        ::new (static_cast<void*>(to)) T(std::move(*f));
        f->~T();
      },
      [](unsigned char* at) noexcept { std::launder(reinterpret_cast<T*>(at))->~T(); },
      std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
      std::is_empty_v<T> && std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
      static_cast<unsigned char>((sizeof(T) + 7) / 8)};
  template <class T>
  static constexpr ops_t heap_ops{
      [](unsigned char* to, unsigned char* from) noexcept {
        ::new (static_cast<void*>(to)) T*(*std::launder(reinterpret_cast<T**>(from)));
      },
      [](unsigned char* at) noexcept { delete *std::launder(reinterpret_cast<T**>(at)); },
      false, false, 0};

  void drop() noexcept {
    const ops_t* ops = std::exchange(ops_, nullptr);
    if (!ops->trivial) ops->destroy(buf_);
  }

  [[gnu::always_inline]] void take(event_box& o) noexcept {
    if (o.ops_ == nullptr) return;
    if (o.ops_->empty) {
      // nothing to copy
    } else if (o.ops_->trivial) {
      // No call for plain data, and a word at a time, only the words it
      // has: a value is usually moved right after it was stored field by
      // field, and a wide copy reading those fields back stalls (a store
      // cannot forward to a load wider than itself). That copy was 7% of a
      // gen_statem call at -O3 (perf), where GCC copied with vector moves.
      // Spelled out: GCC turns a loop over the words into a call to memmove.
      static_assert(inline_size == 6 * 8, "one case per word");
      switch (o.ops_->words) {
        case 6:
          std::memcpy(buf_ + 40, o.buf_ + 40, 8);
          [[fallthrough]];
        case 5:
          std::memcpy(buf_ + 32, o.buf_ + 32, 8);
          [[fallthrough]];
        case 4:
          std::memcpy(buf_ + 24, o.buf_ + 24, 8);
          [[fallthrough]];
        case 3:
          std::memcpy(buf_ + 16, o.buf_ + 16, 8);
          [[fallthrough]];
        case 2:
          std::memcpy(buf_ + 8, o.buf_ + 8, 8);
          [[fallthrough]];
        default:
          std::memcpy(buf_, o.buf_, 8);
      }
    } else {
      o.ops_->move(buf_, o.buf_);
    }
    ops_ = std::exchange(o.ops_, nullptr);
  }

  alignas(std::max_align_t) unsigned char buf_[inline_size];
  const ops_t* ops_ = nullptr;
};

}  // namespace otpp::detail
