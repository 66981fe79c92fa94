#pragma once
// Memory straight from the kernel in 2 MiB-aligned regions with huge pages
// advised, for the pools that hold many small blocks (message nodes, timers,
// table nodes).
//
// Why: first touch of a fresh page is the dominant cost of a burst of
// allocations on a virtualised host (measured here: ~12-16 µs per 4 KiB page,
// ~1-2 ms per 2 MiB page, so a million 128-byte timers cost 0.5 s in faults
// on small pages and ~0.1 s on huge ones), and a huge page is one TLB entry
// where small ones are 512. Advice only: where the kernel refuses, the
// region is backed by small pages and everything still works.

#include <cstddef>
#include <cstdint>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace otpp::detail {

inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

/// `bytes` (a multiple of huge_page_bytes), aligned to huge_page_bytes.
/// Zero-filled. Throws std::bad_alloc.
[[nodiscard]] inline void* map_huge_region(std::size_t bytes) {
#if defined(__linux__)
  // Over-map by one huge page and trim both ends to the alignment.
  const std::size_t span = bytes + huge_page_bytes;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc{};
  const auto at = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (at + huge_page_bytes - 1) & ~(std::uintptr_t{huge_page_bytes} - 1);
  if (aligned != at) ::munmap(raw, aligned - at);
  if (const std::uintptr_t tail = at + span - (aligned + bytes); tail != 0)
    ::munmap(reinterpret_cast<void*>(aligned + bytes), tail);
  auto* p = reinterpret_cast<void*>(aligned);
#if defined(MADV_HUGEPAGE)
  (void)::madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
#else
  return ::operator new(bytes, std::align_val_t{huge_page_bytes});
#endif
}

/// Returns a region from map_huge_region.
inline void unmap_huge_region(void* p, std::size_t bytes) noexcept {
#if defined(__linux__)
  ::munmap(p, bytes);
#else
  (void)bytes;
  ::operator delete(p, std::align_val_t{huge_page_bytes});
#endif
}

/// Gives the pages of [p, p + bytes) (page-aligned) back to the system while
/// keeping the addresses: they read as zeros when touched again. Where that
/// cannot be done, keeps them. Returns whether the memory went back.
inline bool discard_pages(void* p, std::size_t bytes) noexcept {
#if defined(__linux__)
  return ::madvise(p, bytes, MADV_DONTNEED) == 0;
#else
  (void)p;
  (void)bytes;
  return false;
#endif
}

}  // namespace otpp::detail
