#pragma once
// Erlang's counters module: a fixed array of 64-bit signed counters that
// any thread or process updates and reads without a message.
//
//   auto hits = otpp::counters{2, {.write_concurrency = true}};
//   hits.add(0, 1);                       // any thread, no lock
//   std::int64_t n = hits.get(0);
//
// A copy shares the counters (as Erlang's counters reference does).
//
// Two layouts, as Erlang's:
// - atomics (the default): one atomic word per counter. add is one locked
//   instruction; get is one load; put is exact.
// - write_concurrency: each thread that adds gets a row of cells of its
//   own, which only it writes, so add is a load and a store on the
//   thread's own cache line: no locked instruction, nothing shared between
//   cores. get sums the rows (its cost grows with the threads that ever
//   added). As with Erlang's write_concurrency, get is not a snapshot of
//   adds in flight, and put is not atomic with adds in flight: an add that
//   races a put may count before it or not at all.
//
// A row outlives its thread: a finished thread's adds still count.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "detail/platform.hpp"

namespace otpp {

/// How counters are laid out (see the header comment).
struct counters_options {
  /// A row of cells per adding thread: adds with no locked instruction,
  /// dearer gets (see the header comment).
  bool write_concurrency = false;
};

/// A fixed array of 64-bit signed counters shared by threads and
/// processes (Erlang's counters); a copy refers to the same counters.
class counters {
 public:
  /// `size` counters, all 0. Throws std::invalid_argument for size 0.
  explicit counters(std::size_t size, counters_options opts = {})
      : s_{std::make_shared<shared>(checked(size), opts.write_concurrency)} {}

  /// Adds incr to counter ix (0-based). Throws std::out_of_range past size().
  void add(std::size_t ix, std::int64_t incr) const {
    check(ix, "add");
    add_wrapping(ix, static_cast<std::uint64_t>(incr));
  }
  /// Subtracts decr from counter ix.
  void sub(std::size_t ix, std::int64_t decr) const {
    check(ix, "sub");
    add_wrapping(ix, std::uint64_t{0} - static_cast<std::uint64_t>(decr));
  }
  /// Counter ix's value (wrapping as 64-bit two's complement, as Erlang's).
  [[nodiscard]] std::int64_t get(std::size_t ix) const {
    check(ix, "get");
    std::uint64_t n = static_cast<std::uint64_t>(s_->base[ix].load(std::memory_order_relaxed));
    if (s_->striped) {
      std::lock_guard g{s_->rows_lock};
      for (const auto& r : s_->rows) n += static_cast<std::uint64_t>(cell(r.lines.get(), ix).load(std::memory_order_relaxed));
    }
    return static_cast<std::int64_t>(n);
  }
  /// Sets counter ix to value.
  void put(std::size_t ix, std::int64_t value) const {
    check(ix, "put");
    if (!s_->striped) {
      s_->base[ix].store(value, std::memory_order_relaxed);
      return;
    }
    // The rows belong to their threads: the base takes up the difference.
    std::lock_guard g{s_->rows_lock};
    std::uint64_t rows = 0;
    for (const auto& r : s_->rows) rows += static_cast<std::uint64_t>(cell(r.lines.get(), ix).load(std::memory_order_relaxed));
    s_->base[ix].store(static_cast<std::int64_t>(static_cast<std::uint64_t>(value) - rows), std::memory_order_relaxed);
  }

  /// How many counters there are.
  [[nodiscard]] std::size_t size() const noexcept { return s_->size; }
  /// Bytes the counters take, rows included (Erlang's info/1 memory).
  [[nodiscard]] std::size_t memory() const {
    std::size_t bytes = sizeof(shared) + s_->size * sizeof(std::atomic<std::int64_t>);
    if (s_->striped) {
      std::lock_guard g{s_->rows_lock};
      bytes += s_->rows.size() * (sizeof(row) + lines_for(s_->size) * sizeof(line));
    }
    return bytes;
  }

 private:
  // Unsigned, so that passing the 64-bit limits wraps (as Erlang's
  // counters do) instead of overflowing.
  void add_wrapping(std::size_t ix, std::uint64_t incr) const {
    if (!s_->striped) {
      s_->base[ix].fetch_add(static_cast<std::int64_t>(incr), std::memory_order_relaxed);
      return;
    }
    // This thread is the row's only writer: a plain read and write, atomic
    // only so that a get on another thread reads a whole value.
    std::atomic<std::int64_t>& c = cell(s_->row_of_this_thread(), ix);
    c.store(static_cast<std::int64_t>(static_cast<std::uint64_t>(c.load(std::memory_order_relaxed)) + incr), std::memory_order_relaxed);
  }

  // A row is whole cache lines: no other thread's row shares one with it.
  static constexpr std::size_t per_line = detail::cache_line / sizeof(std::atomic<std::int64_t>);
  struct alignas(detail::cache_line) line {
    std::array<std::atomic<std::int64_t>, per_line> cells{};
  };
  static std::size_t lines_for(std::size_t n) noexcept { return (n + per_line - 1) / per_line; }
  static std::atomic<std::int64_t>& cell(line* row, std::size_t ix) noexcept { return row[ix / per_line].cells[ix % per_line]; }
  struct row {
    std::thread::id owner;
    std::unique_ptr<line[]> lines;
  };
  struct shared {
    shared(std::size_t n, bool s)
        : size{n}, striped{s}, id{next_id.fetch_add(1, std::memory_order_relaxed)}, base{new std::atomic<std::int64_t>[n]} {
      for (std::size_t i = 0; i < n; ++i) base[i].store(0, std::memory_order_relaxed);
    }
    std::size_t size;
    bool striped;
    std::uint64_t id;  // never reused, unlike an address: keys the threads' caches
    std::unique_ptr<std::atomic<std::int64_t>[]> base;
    mutable std::mutex rows_lock;
    std::vector<row> rows;  // only grows

    line* row_of_this_thread() {
      // A few (id, row) pairs per thread: a thread that adds to several
      // counters in turn finds each without the lock.
      struct cached {
        std::uint64_t id = 0;
        line* lines = nullptr;
      };
      thread_local std::array<cached, 4> cache{};
      thread_local unsigned victim = 0;
      for (const cached& c : cache)
        if (c.id == id) return c.lines;
      line* lines = find_or_add_row();
      cache[victim++ % cache.size()] = {id, lines};
      return lines;
    }
    line* find_or_add_row() {
      const auto me = std::this_thread::get_id();
      std::lock_guard g{rows_lock};
      for (auto& r : rows)
        if (r.owner == me) return r.lines.get();  // evicted from the cache, or a new thread with a finished one's id
      rows.push_back(row{me, std::make_unique<line[]>(lines_for(size))});
      return rows.back().lines.get();
    }
    static inline std::atomic<std::uint64_t> next_id{1};
  };

  static std::size_t checked(std::size_t size) {
    if (size == 0) throw std::invalid_argument("otpp::counters: size must be positive");
    return size;
  }
  void check(std::size_t ix, const char* op) const {
    if (ix >= s_->size) [[unlikely]]
      out_of_range(ix, op);
  }
  [[noreturn, gnu::cold, gnu::noinline]] void out_of_range(std::size_t ix, const char* op) const {
    throw std::out_of_range(std::string{"otpp::counters::"} + op + ": index " + std::to_string(ix) + " past size " +
                            std::to_string(s_->size));
  }

  std::shared_ptr<shared> s_;
};

}  // namespace otpp
