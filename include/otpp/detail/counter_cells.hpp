#pragma once
// The storage behind otpp::counters: a base word per counter, and with
// write_concurrency a row of cells per thread that adds, which only that
// thread writes. Arithmetic is unsigned, so that passing the 64-bit limits
// wraps (as Erlang's counters do) instead of overflowing. Knows nothing of
// indexes out of range: the caller checks.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "platform.hpp"

namespace otpp::detail {

class counter_cells {
 public:
  counter_cells(std::size_t n, bool per_thread)
      : size_{n}, per_thread_{per_thread}, base_{new std::atomic<std::int64_t>[n]()} {}

  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  void add(std::size_t ix, std::uint64_t incr) {
    if (!per_thread_) {
      base_[ix].fetch_add(static_cast<std::int64_t>(incr), std::memory_order_relaxed);
      return;
    }
    // This thread is the row's only writer: a plain read and write, atomic
    // only so that a sum on another thread reads a whole value.
    std::atomic<std::int64_t>& c = cell(row_of_this_thread(), ix);
    c.store(static_cast<std::int64_t>(static_cast<std::uint64_t>(c.load(std::memory_order_relaxed)) + incr),
            std::memory_order_relaxed);
  }
  [[nodiscard]] std::int64_t get(std::size_t ix) const {
    if (!per_thread_) return base_[ix].load(std::memory_order_relaxed);
    std::lock_guard g{rows_lock_};
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(base_[ix].load(std::memory_order_relaxed)) + rows_sum(ix));
  }
  void put(std::size_t ix, std::int64_t value) {
    if (!per_thread_) {
      base_[ix].store(value, std::memory_order_relaxed);
      return;
    }
    // The rows belong to their threads: the base takes up the difference.
    std::lock_guard g{rows_lock_};
    base_[ix].store(static_cast<std::int64_t>(static_cast<std::uint64_t>(value) - rows_sum(ix)), std::memory_order_relaxed);
  }
  /// Bytes held, rows included.
  [[nodiscard]] std::size_t memory() const {
    std::size_t bytes = sizeof(*this) + size_ * sizeof(std::atomic<std::int64_t>);
    std::lock_guard g{rows_lock_};
    return bytes + rows_.size() * (sizeof(row) + lines_for(size_) * sizeof(line));
  }

 private:
  // A row is whole cache lines: no other thread's row shares one with it.
  static constexpr std::size_t per_line = cache_line / sizeof(std::atomic<std::int64_t>);
  struct alignas(cache_line) line {
    std::array<std::atomic<std::int64_t>, per_line> cells{};
  };
  struct row {
    std::thread::id owner;
    std::unique_ptr<line[]> lines;
  };
  static std::size_t lines_for(std::size_t n) noexcept { return (n + per_line - 1) / per_line; }
  static std::atomic<std::int64_t>& cell(line* r, std::size_t ix) noexcept { return r[ix / per_line].cells[ix % per_line]; }

  // Under rows_lock_.
  std::uint64_t rows_sum(std::size_t ix) const noexcept {
    std::uint64_t n = 0;
    for (const row& r : rows_) n += static_cast<std::uint64_t>(cell(r.lines.get(), ix).load(std::memory_order_relaxed));
    return n;
  }
  // Out of line: a handler's fiber may resume on another thread after a
  // blocking call, and an add inlined into the handler could keep this
  // thread-local's address, computed before it, for the rest of the
  // function: its adds would then go on writing the first thread's row,
  // which that thread also writes. As a call, the address is taken afresh
  // each time (see detail::tls); search_cache's fetches, which add once
  // each, measured the same either way (4 alternated pairs).
  // The search is its own function, apart from the miss: with the miss's
  // calls in the same body, every add paid its five register saves.
  [[gnu::noinline]] line* row_of_this_thread() {
    for (const cached& c : row_cache())
      if (c.id == id_) return c.lines;
    return cache_row();
  }
  // A few (id, row) pairs per thread: a thread that adds to several
  // counters in turn finds each without the lock.
  struct cached {
    std::uint64_t id;
    line* lines;
  };
  static std::array<cached, 4>& row_cache() noexcept {
    thread_local std::array<cached, 4> cache{};  // ids start at 1: none matches
    return cache;
  }
  [[gnu::noinline, gnu::cold]] line* cache_row() {
    thread_local unsigned victim = 0;
    line* lines = find_or_add_row();
    row_cache()[victim++ % row_cache().size()] = {id_, lines};
    return lines;
  }
  line* find_or_add_row() {
    const auto me = std::this_thread::get_id();
    std::lock_guard g{rows_lock_};
    for (row& r : rows_)
      if (r.owner == me) return r.lines.get();  // evicted from the cache, or a new thread with a finished one's id
    rows_.push_back(row{me, std::make_unique<line[]>(lines_for(size_))});
    return rows_.back().lines.get();
  }

  static inline std::atomic<std::uint64_t> next_id{1};
  std::size_t size_;
  bool per_thread_;
  std::uint64_t id_ = next_id.fetch_add(1, std::memory_order_relaxed);  // never reused, unlike an address: keys the threads' caches
  std::unique_ptr<std::atomic<std::int64_t>[]> base_;
  mutable std::mutex rows_lock_;
  std::vector<row> rows_;  // only grows
};

}  // namespace otpp::detail
