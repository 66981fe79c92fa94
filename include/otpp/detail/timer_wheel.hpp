#pragma once
// A hierarchical timing wheel (Varghese & Lauck): four levels of 1024 slots.
// Level k's slots each span 1024^k ticks, so with 1 ms ticks the levels reach
// 1 s, 17 min, 12 days and 35 years; later deadlines park in the top level
// and are re-placed when it comes round. Wide levels matter more than many:
// a cascade walks a slot's list, one cache miss per timer, and with 1024
// slots a timer under a second away is placed once or cascades once.
//
// An entry goes to the level of the highest bit in which its tick differs
// from the wheel's current tick, so every entry of level k expires before any
// entry of level k+1, and the earliest expiry is found from occupancy
// bitmaps without touching entries. Insert and remove are O(1) list
// splices; each entry is re-placed at most once per level on its way down
// (cascading happens only when a slot comes due, never on a sweep).
//
// Single-threaded: the timer service's thread owns the wheel.

#include <bit>
#include <cstdint>
#include <optional>

namespace otpp::detail {

// The tick an entry is due at is not kept here: the wheel is told it on
// insert and asks for it (`when_of`) as a slot comes due, so an owner that
// keeps a deadline anyway does not pay for a second copy in every entry.
struct wheel_entry {
  wheel_entry* wprev = nullptr;
  wheel_entry* wnext = nullptr;
  static constexpr std::uint16_t no_slot = 0xffff;
  std::uint16_t slot = no_slot;  // level * 64 + index while in the wheel

  [[nodiscard]] bool in_wheel() const noexcept { return slot != no_slot; }
};

class timer_wheel {
 public:
  static constexpr unsigned levels = 4;
  static constexpr unsigned slot_bits = 10;
  static constexpr unsigned slots = 1u << slot_bits;
  static constexpr unsigned words = slots / 64;  // bitmap words per level
  static constexpr std::uint64_t span = std::uint64_t{1} << (levels * slot_bits);  // ticks covered

  /// The tick up to which the wheel has been advanced.
  [[nodiscard]] std::uint64_t now() const noexcept { return elapsed_; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }

  /// Adds `e`, due at tick `when`, which must be after now().
  void insert(wheel_entry* e, std::uint64_t when) noexcept {
    const std::uint64_t placed = when - elapsed_ >= span ? elapsed_ + span - 1 : when;
    const unsigned level = level_for(placed);
    const unsigned index = static_cast<unsigned>(placed >> (level * slot_bits)) & (slots - 1);
    const unsigned s = level * slots + index;
    e->slot = static_cast<std::uint16_t>(s);
    e->wprev = nullptr;
    e->wnext = heads_[s];
    if (heads_[s]) heads_[s]->wprev = e;
    heads_[s] = e;
    occupied_[level][index / 64] |= std::uint64_t{1} << (index % 64);
    ++count_;
  }

  void remove(wheel_entry* e) noexcept {
    const unsigned s = e->slot;
    if (e->wprev) {
      e->wprev->wnext = e->wnext;
    } else {
      heads_[s] = e->wnext;
    }
    if (e->wnext) e->wnext->wprev = e->wprev;
    if (heads_[s] == nullptr) {
      const unsigned index = s % slots;
      occupied_[s / slots][index / 64] &= ~(std::uint64_t{1} << (index % 64));
    }
    e->slot = wheel_entry::no_slot;
    e->wprev = e->wnext = nullptr;
    --count_;
  }

  /// The tick at which the next slot comes due (an upper bound on how long
  /// one may sleep), or nothing when empty.
  [[nodiscard]] std::optional<std::uint64_t> next_due() const noexcept {
    for (unsigned level = 0; level < levels; ++level) {
      const int index = next_index(level);
      if (index >= 0) return slot_start(level, static_cast<unsigned>(index));
    }
    return std::nullopt;
  }

  /// Takes out every entry `pred` selects, handing each to `f`: O(entries).
  template <class Pred, class F>
  std::size_t sweep(Pred&& pred, F&& f) {
    std::size_t n = 0;
    for (unsigned s = 0; s < levels * slots; ++s) {
      for (wheel_entry* e = heads_[s]; e != nullptr;) {
        wheel_entry* next = e->wnext;
        if (pred(e)) {
          remove(e);
          f(e);
          ++n;
        }
        e = next;
      }
    }
    return n;
  }

  /// Takes every entry out, handing each to `f`.
  template <class F>
  void clear(F&& f) {
    for (unsigned s = 0; s < levels * slots; ++s) {
      while (wheel_entry* e = heads_[s]) {
        remove(e);
        f(e);
      }
    }
  }

  /// Moves time forward to `tick`, handing every entry due by then to `due`
  /// (taken out of the wheel first; `due` may insert or free it).
  /// `when_of(e)` gives the tick an entry was inserted for.
  template <class WhenOf, class F>
  void advance(std::uint64_t tick, WhenOf&& when_of, F&& due) {
    while (auto next = next_due()) {
      if (*next > tick) break;
      // The lowest occupied level holds the earliest slot.
      unsigned level = 0;
      int found = next_index(0);
      while (found < 0) found = next_index(++level);
      const auto index = static_cast<unsigned>(found);
      const unsigned s = level * slots + index;
      wheel_entry* list = heads_[s];
      heads_[s] = nullptr;
      occupied_[level][index / 64] &= ~(std::uint64_t{1} << (index % 64));
      if (*next > elapsed_) elapsed_ = *next;
      while (list) {
        wheel_entry* e = list;
        list = e->wnext;
        e->slot = wheel_entry::no_slot;
        e->wprev = e->wnext = nullptr;
        --count_;
        if (const std::uint64_t when = when_of(e); when <= elapsed_) {
          due(e);
        } else {
          insert(e, when);  // cascades to a lower level
        }
      }
    }
    if (tick > elapsed_) elapsed_ = tick;
  }

 private:
  [[nodiscard]] unsigned level_for(std::uint64_t when) const noexcept {
    const std::uint64_t diff = (elapsed_ ^ when) | (slots - 1);
    const unsigned significant = 63u - static_cast<unsigned>(std::countl_zero(diff));
    const unsigned level = significant / slot_bits;
    return level < levels ? level : levels - 1;
  }

  // The first occupied slot of `level` at or after the current position,
  // going round; -1 if the level is empty.
  [[nodiscard]] int next_index(unsigned level) const noexcept {
    const unsigned pos = static_cast<unsigned>(elapsed_ >> (level * slot_bits)) & (slots - 1);
    const std::uint64_t* occ = occupied_[level];
    const unsigned w0 = pos / 64;
    const std::uint64_t first = occ[w0] & (~std::uint64_t{0} << (pos % 64));
    if (first) return static_cast<int>(w0 * 64 + static_cast<unsigned>(std::countr_zero(first)));
    for (unsigned i = 1; i <= words; ++i) {
      const unsigned w = (w0 + i) % words;
      std::uint64_t bits = occ[w];
      if (i == words) bits &= (std::uint64_t{1} << (pos % 64)) - 1;  // back to the start: below pos
      if (bits) return static_cast<int>(w * 64 + static_cast<unsigned>(std::countr_zero(bits)));
    }
    return -1;
  }

  [[nodiscard]] std::uint64_t slot_start(unsigned level, unsigned index) const noexcept {
    const unsigned shift = level * slot_bits;
    const std::uint64_t level_span = shift + slot_bits >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << (shift + slot_bits));
    const std::uint64_t base = elapsed_ & ~(level_span - 1);
    std::uint64_t start = base + (std::uint64_t{index} << shift);
    const unsigned pos = static_cast<unsigned>(elapsed_ >> shift) & (slots - 1);
    if (index < pos) start += level_span;  // the slot comes round in the next rotation
    return start;
  }

  std::uint64_t elapsed_ = 0;
  std::size_t count_ = 0;
  std::uint64_t occupied_[levels][words] = {};
  wheel_entry* heads_[levels * slots] = {};
};

}  // namespace otpp::detail
