// Shutdown under memory exhaustion: with every large allocation failing
// (the list of live processes among them), shutdown still stops every
// process and joins every thread, and a second shutdown has nothing left.

// GCC cannot see that the replaced operator new below pairs with free.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include <otpp/otpp.hpp>

#include "catch.hpp"
#include "support.hpp"

namespace {
std::atomic<bool> refuse_large{false};
std::atomic<long> refused{0};
}  // namespace

// Replaces the global allocator (every unaligned form, so that sanitizers'
// own never pair with these): large requests fail while refuse_large is set.
namespace {
void* allocate(std::size_t n) noexcept {
  if (n >= 4096 && refuse_large.load(std::memory_order_relaxed)) {
    refused.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  return std::malloc(n == 0 ? 1 : n);
}
void* allocate_or_throw(std::size_t n) {
  if (void* p = allocate(n)) return p;
  throw std::bad_alloc{};
}
}  // namespace
void* operator new(std::size_t n) { return allocate_or_throw(n); }
void* operator new[](std::size_t n) { return allocate_or_throw(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {
class plain : public otpp::gen_server<plain> {
 public:
  struct get {};
  int handle_call(get) { return 1; }
};
}  // namespace

TEST_CASE("shutdown with no memory for its list of processes still stops them all") {
  otpp_test::log_capture logs;
  otpp::runtime rt{{.workers = 2}};
  std::vector<otpp::server<plain>> procs;
  for (int i = 0; i < 2000; ++i) procs.push_back(rt.start<plain>().value());
  refuse_large = true;
  rt.shutdown();  // the 16 KB list cannot be had: one at a time instead
  refuse_large = false;
  CHECK(refused.load() > 0);
  CHECK(rt.process_count() == 0);
  for (auto& p : procs) CHECK_FALSE(p.alive());
  rt.shutdown();  // done already: returns at once
  CHECK(rt.process_count() == 0);
}
