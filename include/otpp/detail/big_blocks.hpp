#pragma once
// Large power-of-two blocks (64 KiB and up) on huge pages, for the slot
// arrays of large hash tables and the node chunks of large ordered sets.
//
// Why: a table of a million objects in 64 shards grows each shard's array
// by doubling, to 512 KiB at the end, and every array is fresh memory. From
// malloc those are 4 KiB pages, each one a page fault on first touch, and a
// page fault costs ~11 µs on a virtualised host (measured here), so the
// faults of a 1M-object fill took more time than the inserts
// (1M inserts into a fresh table: ~9,000 faults, 170-290 ns an insert in a
// fresh process, ~68 once malloc kept the memory of an earlier fill; from
// here, ~600 faults and 84 ns, then 62-68). Here blocks below 2 MiB are cut
// from 2 MiB regions with huge pages advised, by halving (a buddy system),
// so a region costs one fault, and a block given back is merged with its
// free buddy and reused by the next array of any shard or table. A block
// of 2 MiB is a whole region; larger ones are mapped on their own.
//
// Empty regions are kept for reuse up to `kept_empty_regions`, and the
// rest go back to the system. Thread safe; blocks are taken and given back
// only when an array grows or goes, so one lock is enough.

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "huge_pages.hpp"

namespace otpp::detail {

class big_blocks {
 public:
  /// Blocks smaller than this are not served here (malloc does them well).
  static constexpr std::size_t min_block = std::size_t{64} << 10;

  /// A block of `bytes`, a power of two of at least min_block, aligned to
  /// min(bytes, 2 MiB). Throws std::bad_alloc.
  [[nodiscard]] static void* allocate(std::size_t bytes) { return instance().take(bytes); }
  /// Returns a block from allocate, with its size.
  static void deallocate(void* p, std::size_t bytes) noexcept { instance().give(p, bytes); }

  /// Regions held (below 2 MiB blocks are cut from them), and how many of
  /// those are wholly free (for tests).
  struct held {
    std::size_t regions;
    std::size_t empty;
  };
  [[nodiscard]] static held regions_held() {
    big_blocks& b = instance();
    std::lock_guard g{b.mu_};
    return {b.regions_.size(), b.empty_};
  }

  /// Whether allocate serves blocks of this size.
  static constexpr bool serves(std::size_t bytes) noexcept { return bytes >= min_block && std::has_single_bit(bytes); }

 private:
  // Orders 0..5: blocks of 64 KiB .. 2 MiB; a region holds 32, 16, 8, 4, 2
  // and 1 of them. A region's free blocks are bits of one word: order o's
  // block i is bit first_bit[o] + i.
  static constexpr int orders = 6;
  static constexpr std::array<int, orders> first_bit{0, 32, 48, 56, 60, 62};
  static constexpr std::uint64_t order_mask(int o) noexcept {
    const int n = 32 >> o;
    return ((std::uint64_t{1} << n) - 1) << first_bit[static_cast<std::size_t>(o)];
  }
  static constexpr std::size_t kept_empty_regions = 8;  // 16 MiB

  struct region {
    char* base;
    std::uint64_t free;  // bits as above
  };

  static big_blocks& instance() {
    // Never destroyed: tables may be freed by static destructors after it.
    static big_blocks* const b = new big_blocks;
    return *b;
  }

  static int order_of(std::size_t bytes) noexcept { return std::countr_zero(bytes) - std::countr_zero(min_block); }

  void* take(std::size_t bytes) {
    if (bytes > huge_page_bytes) return map_huge_region(bytes);
    const int want = order_of(bytes);
    std::lock_guard g{mu_};
    // The smallest free block that fits, split down to size.
    for (int o = want; o < orders; ++o) {
      for (region& r : regions_) {
        const std::uint64_t bits = r.free & order_mask(o);
        if (bits == 0) continue;
        int i = std::countr_zero(bits) - first_bit[static_cast<std::size_t>(o)];
        r.free &= ~(std::uint64_t{1} << (first_bit[static_cast<std::size_t>(o)] + i));
        if (o == orders - 1) --empty_;
        for (; o > want; --o) {  // keep the right half of each split free
          i *= 2;
          r.free |= std::uint64_t{1} << (first_bit[static_cast<std::size_t>(o - 1)] + i + 1);
        }
        return r.base + static_cast<std::size_t>(i) * bytes;
      }
    }
    regions_.reserve(regions_.size() + 1);  // may throw: before the region is mapped
    region r{static_cast<char*>(map_huge_region(huge_page_bytes)), 0};
    // Its first block of `want`; the right half of each split stays free.
    for (int o = orders - 1; o > want; --o) r.free |= std::uint64_t{1} << (first_bit[static_cast<std::size_t>(o - 1)] + 1);
    regions_.push_back(r);
    return r.base;
  }

  void give(void* p, std::size_t bytes) noexcept {
    if (bytes > huge_page_bytes) {
      unmap_huge_region(p, bytes);
      return;
    }
    const auto at = reinterpret_cast<std::uintptr_t>(p);
    char* const base = reinterpret_cast<char*>(at & ~(std::uintptr_t{huge_page_bytes} - 1));
    std::lock_guard g{mu_};
    std::size_t k = 0;
    while (regions_[k].base != base) ++k;
    region& r = regions_[k];
    int o = order_of(bytes);
    int i = static_cast<int>((at - reinterpret_cast<std::uintptr_t>(base)) / bytes);
    // Merge with the buddy while it is free too.
    for (; o < orders - 1; ++o, i /= 2) {
      const std::uint64_t buddy = std::uint64_t{1} << (first_bit[static_cast<std::size_t>(o)] + (i ^ 1));
      if ((r.free & buddy) == 0) break;
      r.free &= ~buddy;
    }
    r.free |= std::uint64_t{1} << (first_bit[static_cast<std::size_t>(o)] + i);
    if (o < orders - 1) return;
    if (empty_ < kept_empty_regions) {
      ++empty_;
      return;
    }
    unmap_huge_region(r.base, huge_page_bytes);
    regions_[k] = regions_.back();
    regions_.pop_back();
  }

  std::mutex mu_;
  std::vector<region> regions_;
  std::size_t empty_ = 0;  // regions wholly free
};

}  // namespace otpp::detail
