#pragma once
// The one reference-counted handle: what pid, reply_to and timer_ref hold.
// T provides add_ref() and release() (release frees it at zero).

#include <utility>

namespace otpp::detail {

template <class T>
class counted {
 public:
  counted() noexcept = default;
  /// Adopts a reference the caller already holds.
  static counted adopt(T* p) noexcept { return counted{p}; }
  /// Takes a new reference to `p`.
  static counted share(T* p) noexcept {
    if (p) p->add_ref();
    return counted{p};
  }

  counted(const counted& o) noexcept : p_{o.p_} {
    if (p_) p_->add_ref();
  }
  counted(counted&& o) noexcept : p_{std::exchange(o.p_, nullptr)} {}
  counted& operator=(counted o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~counted() {
    if (p_) p_->release();
  }

  [[nodiscard]] T* get() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  friend bool operator==(const counted& a, const counted& b) noexcept { return a.p_ == b.p_; }

 private:
  explicit counted(T* p) noexcept : p_{p} {}
  T* p_ = nullptr;
};

}  // namespace otpp::detail
