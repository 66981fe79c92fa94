#pragma once
// Execution contexts a worker thread switches between, so that a process
// blocked in a call keeps its stack while its worker runs other processes.
//
// A fiber is a stack (mmap'd, a guard page below it, pages committed only
// when touched) with the registers saved when it last switched away. The
// switch saves only what the System V ABI makes callee-saved, plus the
// floating-point control words: everything else is already saved by the
// compiler around the call. Per-execution C++ state that lives in
// thread-local storage travels with the fiber (the exception being caught,
// std::uncaught_exceptions, the current process): see runtime_core's
// switch_to. Sanitizers are told about every switch, or they would report
// the stack change as corruption.
//
// x86-64 Linux only; elsewhere fibers_supported is false and a worker blocked
// in a call hands its queues to a spare thread instead.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "platform.hpp"
#include "reply_slot.hpp"

#if defined(__x86_64__) && defined(__linux__)
#define OTPP_DETAIL_FIBERS 1
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cxxabi.h>
#else
#define OTPP_DETAIL_FIBERS 0
#endif

#if defined(__SANITIZE_THREAD__)
#define OTPP_DETAIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define OTPP_DETAIL_TSAN 1
#endif
#endif
#ifndef OTPP_DETAIL_TSAN
#define OTPP_DETAIL_TSAN 0
#endif

#if OTPP_DETAIL_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#define OTPP_DETAIL_ASAN_FIBERS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OTPP_DETAIL_ASAN_FIBERS 1
#endif
#endif
#ifndef OTPP_DETAIL_ASAN_FIBERS
#define OTPP_DETAIL_ASAN_FIBERS 0
#endif
#if OTPP_DETAIL_ASAN_FIBERS
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if OTPP_DETAIL_FIBERS
// The switch itself: saves the callee-saved registers and control words on
// the current stack, stores the stack pointer in *save, loads `to` and
// returns into the fiber saved there. A fresh fiber "returns" into
// otpp_fiber_start, which calls its entry. COMDAT: one copy per program
// however many translation units include this header.
extern "C" void otpp_fiber_jump(void** save, void* to) noexcept;
extern "C" void otpp_fiber_start() noexcept;
asm(R"(
  .pushsection .text.otpp_fiber_jump,"axG",@progbits,otpp_fiber_jump,comdat
  .globl otpp_fiber_jump
  .hidden otpp_fiber_jump
  .type otpp_fiber_jump,@function
  .p2align 4
otpp_fiber_jump:
  .byte 0xf3, 0x0f, 0x1e, 0xfa
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw 12(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr 8(%rsp)
  fldcw 12(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size otpp_fiber_jump, .-otpp_fiber_jump
  .popsection
  .pushsection .text.otpp_fiber_start,"axG",@progbits,otpp_fiber_start,comdat
  .globl otpp_fiber_start
  .hidden otpp_fiber_start
  .type otpp_fiber_start,@function
  .p2align 4
otpp_fiber_start:
  .byte 0xf3, 0x0f, 0x1e, 0xfa
  movq %r12, %rdi
  callq *%r13
  ud2
  .size otpp_fiber_start, .-otpp_fiber_start
  .popsection
)");
#endif

namespace otpp::detail {

class process_base;
class runtime_core;
struct worker_slot;

inline constexpr bool fibers_supported = OTPP_DETAIL_FIBERS != 0;

struct fiber {
  enum : std::uint32_t { running = 0, parked = 1, ready = 2 };

  // -- the saved context ---------------------------------------------------------
  void* sp = nullptr;
  // Thread-local state that belongs to the execution, not the thread.
  process_base* current = nullptr;
  unsigned inline_depth = 0;
  unsigned start_depth = 0;
  void* eh_caught = nullptr;
  unsigned eh_uncaught = 0;
  // Sanitizer bookkeeping.
  void* asan_fake = nullptr;
  const void* stack_lo = nullptr;
  std::size_t stack_len = 0;
  void* tsan = nullptr;

  // -- parking (owned by runtime_core) -------------------------------------------
  runtime_core* rt = nullptr;
  const worker_slot* parked_on = nullptr;  // where it parked
  reply_slot_base* slot = nullptr;
  steady::time_point deadline{};
  std::atomic<std::uint32_t> state{running};
  bool timed = false;          // on the runtime's timed list (under its lock)
  fiber* prev = nullptr;       // timed list
  fiber* next = nullptr;       // timed list
  fiber* link = nullptr;       // ready queue or spare pool
  struct waker_t : slot_waker {
    fiber* self = nullptr;
  } waker;

  // -- the stack -----------------------------------------------------------------
  char* map = nullptr;  // nullptr: a thread's own stack
  std::size_t map_len = 0;
};

#if OTPP_DETAIL_FIBERS
/// A fresh fiber whose first switch-in calls entry(arg) (entry never
/// returns: it switches away for the last time). The fiber object lives at
/// the top of its own mapping. nullptr if no memory could be mapped.
inline fiber* create_fiber(std::size_t stack_size, void (*entry)(void*), void* arg) noexcept {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t usable = (stack_size + page - 1) / page * page;
  const std::size_t len = usable + page;  // the guard page below
  void* m = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  if (::mprotect(m, page, PROT_NONE) != 0) {
    ::munmap(m, len);
    return nullptr;
  }
  char* const base = static_cast<char*>(m);
  char* const top = base + len;
  auto* f = ::new (static_cast<void*>((top - sizeof(fiber)) - (reinterpret_cast<std::uintptr_t>(top - sizeof(fiber)) % 64))) fiber{};
  f->map = base;
  f->map_len = len;
  f->stack_lo = base + page;
  auto stack_top = reinterpret_cast<std::uintptr_t>(f) & ~std::uintptr_t{15};
  f->stack_len = stack_top - reinterpret_cast<std::uintptr_t>(f->stack_lo);
  // The frame otpp_fiber_jump pops: control words, r15..r12, rbx, rbp, then
  // the return address; after the ret the stack is 16-byte aligned for the
  // call into entry.
  auto* frame = reinterpret_cast<std::uint64_t*>(stack_top - 88);
  frame[0] = 0;
  frame[1] = 0x1F80ull | (0x037Full << 32);  // mxcsr at +8, x87 control word at +12
  frame[2] = 0;                                  // r15
  frame[3] = 0;                                  // r14
  frame[4] = reinterpret_cast<std::uint64_t>(entry);  // r13
  frame[5] = reinterpret_cast<std::uint64_t>(arg);    // r12
  frame[6] = 0;                                  // rbx
  frame[7] = 0;                                  // rbp
  frame[8] = reinterpret_cast<std::uint64_t>(&otpp_fiber_start);
  f->sp = frame;
#if OTPP_DETAIL_TSAN
  f->tsan = __tsan_create_fiber(0);
#endif
  f->waker.self = f;
  return f;
}

inline void destroy_fiber(fiber* f) noexcept {
#if OTPP_DETAIL_TSAN
  __tsan_destroy_fiber(f->tsan);
#endif
  char* const map = f->map;
  const std::size_t len = f->map_len;
  f->~fiber();
#if OTPP_DETAIL_ASAN_FIBERS
  // Frames that never returned leave poisoned shadow behind; the next
  // mapping at this address must not inherit it.
  __asan_unpoison_memory_region(map, len);
#endif
  ::munmap(map, len);
}

/// Describes the calling thread's own stack as a fiber it can switch back to.
inline void init_native_fiber(fiber& f) noexcept {
  f.waker.self = &f;
#if OTPP_DETAIL_ASAN_FIBERS
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* lo = nullptr;
    std::size_t len = 0;
    if (pthread_attr_getstack(&attr, &lo, &len) == 0) {
      f.stack_lo = lo;
      f.stack_len = len;
    }
    pthread_attr_destroy(&attr);
  }
#endif
#if OTPP_DETAIL_TSAN
  f.tsan = __tsan_get_current_fiber();
#endif
}

struct eh_globals_layout {  // libstdc++'s and libc++abi's __cxa_eh_globals
  void* caught;
  unsigned int uncaught;
};

/// Moves the exception-handling state of the calling thread into `from` and
/// installs `to`'s (a catch block or a throw in flight may span a switch).
inline void swap_eh_globals(fiber& from, const fiber& to) noexcept {
  auto* g = reinterpret_cast<eh_globals_layout*>(abi::__cxa_get_globals());
  from.eh_caught = g->caught;
  from.eh_uncaught = g->uncaught;
  g->caught = to.eh_caught;
  g->uncaught = to.eh_uncaught;
}

/// Switches from `from` (running on this thread) to `to`; returns when some
/// thread switches back to `from`. `last`: `from` never runs again.
inline void jump_fiber(fiber& from, fiber& to, bool last) noexcept {
#if OTPP_DETAIL_ASAN_FIBERS
  __sanitizer_start_switch_fiber(last ? nullptr : &from.asan_fake, to.stack_lo, to.stack_len);
#else
  (void)last;
#endif
#if OTPP_DETAIL_TSAN
  __tsan_switch_to_fiber(to.tsan, 0);
#endif
  otpp_fiber_jump(&from.sp, to.sp);
#if OTPP_DETAIL_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(from.asan_fake, nullptr, nullptr);
#endif
}

/// The first thing a fresh fiber does (ASan's side of the switch into it).
inline void enter_fiber() noexcept {
#if OTPP_DETAIL_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}
#else
inline fiber* create_fiber(std::size_t, void (*)(void*), void*) noexcept { return nullptr; }
inline void destroy_fiber(fiber*) noexcept {}
inline void init_native_fiber(fiber&) noexcept {}
inline void swap_eh_globals(fiber&, const fiber&) noexcept {}
inline void jump_fiber(fiber&, fiber&, bool) noexcept {}
inline void enter_fiber() noexcept {}
#endif

}  // namespace otpp::detail
