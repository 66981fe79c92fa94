#pragma once
// Helpers shared by the tests.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <otpp/gen_server.hpp>
#include <otpp/log.hpp>
#include <otpp/runtime.hpp>
#include <otpp/testing.hpp>

namespace otpp_test {

/// A two-worker runtime whose timers follow a virtual clock.
struct virtual_runtime {
  std::shared_ptr<otpp::testing::virtual_clock> clock = std::make_shared<otpp::testing::virtual_clock>();
  otpp::runtime rt{{.workers = 2, .clock = clock}};
};

/// Polls `f` (typically a flushing call) until it holds, for up to 10 s:
/// for state another thread reaches in its own time, never as a delay.
template <class F>
bool eventually(F&& f) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) {
    if (f()) return true;
    std::this_thread::yield();
  }
  return f();
}

/// A door handlers wait at, opened by the test once it has its answer. The
/// wait is bounded (20 s) so a test that fails does not hang the suite.
struct gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> entered{0};
  void wait() {
    ++entered;
    std::unique_lock lock{m};
    cv.wait_for(lock, std::chrono::seconds(20), [&] { return open; });
  }
  void release() {
    {
      std::lock_guard lock{m};
      open = true;
    }
    cv.notify_all();
  }
};

/// What processes did, written from their threads, read by the test.
struct journal {
  std::mutex mutex;
  std::vector<std::string> events;
  void add(std::string e) {
    std::lock_guard lock{mutex};
    events.push_back(std::move(e));
  }
  std::vector<std::string> get() {
    std::lock_guard lock{mutex};
    return events;
  }
  bool has(const std::string& e) {
    std::lock_guard lock{mutex};
    for (auto& x : events)
      if (x == e) return true;
    return false;
  }
};

/// Captures log lines for the life of the object (restores the default after).
class log_capture {
 public:
  log_capture() {
    otpp::set_logger([this](otpp::log_level lvl, std::string_view line) {
      std::lock_guard lock{mutex_};
      lines_.push_back({lvl, std::string{line}});
    });
  }
  ~log_capture() { otpp::set_logger({}); }
  log_capture(const log_capture&) = delete;
  log_capture& operator=(const log_capture&) = delete;

  [[nodiscard]] bool contains(std::string_view needle) const {
    std::lock_guard lock{mutex_};
    for (auto& l : lines_)
      if (l.text.find(needle) != std::string::npos) return true;
    return false;
  }
  [[nodiscard]] std::size_t size() const {
    std::lock_guard lock{mutex_};
    return lines_.size();
  }
  [[nodiscard]] std::string all() const {
    std::lock_guard lock{mutex_};
    std::string s;
    for (auto& l : lines_) s += l.text + "\n";
    return s;
  }

 private:
  struct line {
    otpp::log_level level;
    std::string text;
  };
  mutable std::mutex mutex_;
  std::vector<line> lines_;
};

/// A server that never answers `hold`: a coroutine that co_awaits
/// `otpp::async_call(h, holder::hold{}, otpp::infinity)` waits holding no
/// thread until it is stopped or killed. `ping` is answered at once.
class holder : public otpp::gen_server<holder> {
 public:
  struct hold {
    using reply_type = int;
  };
  struct ping {};
  void handle_call(hold, otpp::reply_to<int> r) { held_.push_back(std::move(r)); }
  int handle_call(ping) { return 0; }

 private:
  std::vector<otpp::reply_to<int>> held_;
};

}  // namespace otpp_test

#include <otpp/exit_reason.hpp>
#include "catch.hpp"

// Readable exit reasons in assertion failures.
namespace Catch {
template <>
struct StringMaker<otpp::exit_reason> {
  static std::string convert(const otpp::exit_reason& r) { return r.to_string(); }
};
}  // namespace Catch
