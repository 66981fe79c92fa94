#pragma once
// A child process whose stdout is read line by line (with a deadline) and
// whose stdin is closed to tell it to finish: a real Elixir node for the
// distribution tests and benchmarks (beam_peer), or another otpp program.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

extern char** environ;

namespace otpp_test {

class child_process {
 public:
  explicit child_process(std::vector<std::string> argv_s) {
    int out[2], in[2];
    if (::pipe(out) != 0 || ::pipe(in) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(in[0]);
    out_ = out[0];
    in_ = in[1];
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    finish();
    if (out_ >= 0) ::close(out_);
  }

  [[nodiscard]] bool started() const { return pid_ > 0; }

  /// The next line it prints, or nothing by the deadline (or at its exit).
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = std::chrono::seconds{30}) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n <= 0) return std::nullopt;
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  /// Closes its stdin (the scripts finish then) and waits for its exit
  /// status, killing it after 20 s. Returns the status.
  int finish() {
    if (in_ >= 0) {
      ::close(in_);
      in_ = -1;
    }
    if (pid_ <= 0) return status_;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds{20};
    for (;;) {
      int st = 0;
      const pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        pid_ = -1;
        return status_;
      }
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
      } else {
        pollfd none{-1, 0, 0};
        ::poll(&none, 0, 10);  // a child's exit has no descriptor to wait on
      }
    }
  }

  /// Kills it at once (its connections drop as a crash drops them).
  void kill_now() {
    if (pid_ > 0) ::kill(pid_, SIGKILL);
    (void)finish();
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1, in_ = -1;
  int status_ = -1;
  std::string buf_;
};

/// `elixir --sname NAME --cookie COOKIE script args...`.
class beam_peer : public child_process {
 public:
  beam_peer(const std::string& sname, const std::string& cookie, const std::string& script,
            const std::vector<std::string>& args = {})
      : child_process{command(sname, cookie, script, args)} {}

 private:
  static std::vector<std::string> command(const std::string& sname, const std::string& cookie, const std::string& script,
                                          const std::vector<std::string>& args) {
    std::vector<std::string> argv{"elixir", "--sname", sname, "--cookie", cookie, script};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
};

}  // namespace otpp_test
