// When the kernel refuses the barrier that read_concurrency tables and the
// timers pair with (membarrier, which allocates per call and may say
// ENOMEM), a writer waits for it rather than writing under readers that
// skip their locks: the write lands once the barrier is made. A refusal
// that retrying cannot mend ends the process with a message, not a race.
//
// This file replaces libc's syscall() for its own executable, to refuse
// membarrier on demand; every other system call goes through unchanged.

#include <atomic>
#include <cstdarg>
#include <string>
#include <thread>

#include <otpp/table.hpp>

#include "catch.hpp"
#include "support.hpp"

#if defined(__linux__)
#include <dlfcn.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#endif

#if defined(__linux__) && defined(SYS_membarrier)
namespace {
std::atomic<int> refuse_with{0};         // errno for the barrier calls; 0: none refused
std::atomic<int> refusals_left{0};       // how many more to refuse (-1: until told)
std::atomic<long> barriers_refused{0};
std::atomic<long> barriers_made{0};
std::atomic<long> registrations{0};
std::atomic<bool> registered{false};  // the process registered for the barrier
}  // namespace

extern "C" long syscall(long number, ...) {
  va_list args;
  va_start(args, number);
  long a[6];
  for (long& x : a) x = va_arg(args, long);
  va_end(args);
  if (number == SYS_membarrier) {
    if (a[0] == MEMBARRIER_CMD_PRIVATE_EXPEDITED) {
      const int error = refuse_with.load();
      int left = refusals_left.load();
      while (error != 0 && left != 0 && !refusals_left.compare_exchange_weak(left, left < 0 ? left : left - 1)) {
      }
      if (error != 0 && left != 0) {
        barriers_refused.fetch_add(1);
        errno = error;
        return -1;
      }
    } else if (a[0] == MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) {
      registrations.fetch_add(1);
    }
  }
  using real_syscall = long (*)(long, ...);
  static const auto real = reinterpret_cast<real_syscall>(dlsym(RTLD_NEXT, "syscall"));
  const long r = real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
  if (number == SYS_membarrier && r == 0) {
    if (a[0] == MEMBARRIER_CMD_PRIVATE_EXPEDITED) barriers_made.fetch_add(1);
    if (a[0] == MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) registered = true;
  }
  return r;
}

namespace {
using table_type = otpp::table<int, std::string>;

// A read_concurrency table with key 1, read often enough to be biased (its
// readers skip the locks; a new table may be biased at once), so that the
// next write revokes the bias: the one write that needs the barrier. False
// where the kernel has none to give (then tables are never biased: it
// warns, and the caller has nothing to test).
bool biased_table(table_type& t) {
  t = table_type::create({.access = otpp::table_access::public_access, .read_concurrency = true});
  t.insert(1, "before");
  for (int i = 0; i < 4096; ++i) REQUIRE(t.lookup(1) == "before");
  if (!registered.load()) WARN("membarrier is not available here: tables are never biased");
  return registered.load();
}
}  // namespace

TEST_CASE("a write waits while the kernel refuses the barrier (ENOMEM), reads go on, and it lands once made") {
  table_type t;
  if (!biased_table(t)) return;
  barriers_refused = 0;
  refusals_left = -1;
  refuse_with = ENOMEM;
  std::atomic<bool> written{false};
  std::jthread writer{[&] {
    t.insert(1, "after");
    written = true;
  }};
  // Past the writer's quick retries and into its sleeping ones.
  REQUIRE(otpp_test::eventually([&] { return barriers_refused.load() >= 24; }));
  CHECK_FALSE(written.load());
  CHECK(t.lookup(1) == "before");  // the writer holds no lock while it waits
  refuse_with = 0;
  writer.join();
  CHECK(written.load());
  CHECK(t.lookup(1) == "after");
}

TEST_CASE("a barrier refused as unregistered (EPERM) registers again and is made") {
  table_type t;
  if (!biased_table(t)) return;
  const long registrations_before = registrations.load();
  const long made = barriers_made.load();
  refusals_left = 1;
  refuse_with = EPERM;
  t.insert(1, "after");
  refuse_with = 0;
  CHECK(registrations.load() == registrations_before + 1);
  CHECK(barriers_made.load() == made + 1);
  CHECK(t.lookup(1) == "after");
}

TEST_CASE("a refusal that retrying cannot mend ends the process with a message naming the call") {
  table_type t;
  if (!biased_table(t)) return;
  int err[2];
  REQUIRE(pipe(err) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    dup2(err[1], STDERR_FILENO);
    std::signal(SIGABRT, SIG_DFL);  // the test framework's handler would report it as this test's failure
    refusals_left = -1;
    refuse_with = EINVAL;
    t.insert(1, "after");  // must not return
    _exit(0);
  }
  close(err[1]);
  std::string message;
  char buf[512];
  for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0;) message.append(buf, static_cast<std::size_t>(n));
  close(err[0]);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  CHECK(message.find("membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed") != std::string::npos);
  CHECK(message.find("Invalid argument") != std::string::npos);
  CHECK(t.lookup(1) == "before");  // the parent's table is its own
}
#else
TEST_CASE("membarrier refusals: not applicable without Linux's membarrier") { SUCCEED(); }
#endif
