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

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "detail/counter_cells.hpp"

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
      : c_{std::make_shared<detail::counter_cells>(checked(size), opts.write_concurrency)} {}

  /// Adds incr to counter ix (0-based). Throws std::out_of_range past size().
  void add(std::size_t ix, std::int64_t incr) const {
    check(ix, "add");
    c_->add(ix, static_cast<std::uint64_t>(incr));
  }
  /// Subtracts decr from counter ix.
  void sub(std::size_t ix, std::int64_t decr) const {
    check(ix, "sub");
    c_->add(ix, std::uint64_t{0} - static_cast<std::uint64_t>(decr));
  }
  /// Counter ix's value (wrapping as 64-bit two's complement, as Erlang's).
  [[nodiscard]] std::int64_t get(std::size_t ix) const {
    check(ix, "get");
    return c_->get(ix);
  }
  /// Sets counter ix to value.
  void put(std::size_t ix, std::int64_t value) const {
    check(ix, "put");
    c_->put(ix, value);
  }

  /// How many counters there are.
  [[nodiscard]] std::size_t size() const noexcept { return c_->size(); }
  /// Bytes the counters take, rows included (Erlang's info/1 memory).
  [[nodiscard]] std::size_t memory() const { return c_->memory(); }

 private:
  static std::size_t checked(std::size_t size) {
    if (size == 0) throw std::invalid_argument("otpp::counters: size must be positive");
    return size;
  }
  void check(std::size_t ix, const char* op) const {
    if (ix >= c_->size()) [[unlikely]]
      out_of_range(ix, op);
  }
  [[noreturn, gnu::cold, gnu::noinline]] void out_of_range(std::size_t ix, const char* op) const {
    throw std::out_of_range(std::string{"otpp::counters::"} + op + ": index " + std::to_string(ix) + " past size " +
                            std::to_string(c_->size()));
  }

  std::shared_ptr<detail::counter_cells> c_;
};

}  // namespace otpp
