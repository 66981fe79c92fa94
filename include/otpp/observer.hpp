#pragma once
// otpp::observer: a live web page of the running program, served by one of
// its own processes (Erlang's observer, Phoenix LiveDashboard). The page
// shows the supervision trees, a process table sortable by mailbox length,
// memory, messages handled and restarts, a process's links, monitors and
// state (through its fmt formatter), charts over time of scheduler
// utilisation, messages per second and restarts, and the metrics.
//
//   auto obs = otpp::start<otpp::observer>(otpp::observer_options{.port = 4000}).value();
//   fmt::print("observer at {}\n", otpp::observer_url(obs).value());
//
// An optional component, not in <otpp/otpp.hpp>: it needs standalone asio
// (Debian's libasio-dev; header-only like otpp) and only the programs that
// include it pay for it. The HTTP listener runs on a thread the observer
// owns, never on a worker: a page being built asks each process for its
// info as any thread may (a busy process shows as busy after
// process_timeout rather than holding the page). It binds to 127.0.0.1
// unless told otherwise, and answers only requests addressed to it by a
// loopback name there (a page on another site cannot reach it through DNS
// rebinding). Killing, suspending or resuming a process from the page needs
// allow_actions and the token, sent in a header that no other site's page
// can set.
//
// Endpoints: / (the page), /api/snapshot (overview, processes, history, as
// JSON), /api/process?pid=<0.12.0> (one process), /metrics (Prometheus
// text: the runtime's metrics, then each reporter's), POST
// /api/kill, /api/suspend and /api/resume ?pid=<0.12.0> (header X-Otpp-Token).

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/core.h>

#include "detail/http_server.hpp"
#include "detail/observer_page.hpp"
#include "gen_server.hpp"
#include "metrics.hpp"
#include "process.hpp"
#include "runtime.hpp"
#include "supervisor.hpp"
#include "supervisor_events.hpp"
#include "sys.hpp"
#include "telemetry.hpp"
#include "timer.hpp"

namespace otpp {

/// How an observer listens and what it shows.
struct observer_options {
  std::string address = "127.0.0.1";  ///< The address to listen on: loopback unless told otherwise.
  std::uint16_t port = 0;             ///< 0: a free port the system picks (observer_url tells which).
  /// Lets the page kill, suspend and resume processes, each request carrying the token.
  bool allow_actions = false;
  /// What an action must carry; made up at random (128 bits) when empty.
  std::string token{};
  std::chrono::milliseconds sample_every{1000};      ///< How often the charts get a point.
  std::size_t history = 300;                         ///< Points each chart keeps.
  std::chrono::milliseconds process_timeout{250};    ///< How long a page waits for one process's info.
  runtime* observed = nullptr;                       ///< The runtime shown; null: the default runtime.
  std::vector<std::shared_ptr<const metrics::reporter>> metrics{};  ///< Served on /metrics after the runtime's own.
};

namespace detail {

inline std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

inline std::string json_number(double v) {
  if (!(v == v) || v > 1e300 || v < -1e300) return "0";  // NaN and infinities are not JSON
  return fmt::format("{:.4g}", v);
}

inline const char* status_name(sys::process_snapshot::status_t s) noexcept {
  switch (s) {
    case sys::process_snapshot::status_t::running: return "running";
    case sys::process_snapshot::status_t::waiting: return "waiting";
    case sys::process_snapshot::status_t::hibernating: return "hibernating";
    case sys::process_snapshot::status_t::exited: return "exited";
  }
  return "unknown";
}

// What the page shows as a process's status: peek's, unless its info says
// suspended (peek reads no such thing), or "busy" when no info came in time.
inline const char* status_name(const sys::process_snapshot& peek, const sys::process_info* info) noexcept {
  if (info == nullptr) return "busy";
  return info->suspended ? "suspended" : status_name(peek.status);
}

// What the observer process, its HTTP thread and its telemetry handler
// share. The HTTP thread reads processes as any thread may; the history and
// the restart counts are behind the mutex.
class observer_core {
 public:
  explicit observer_core(observer_options o)
      : opts_{std::move(o)}, rt_{opts_.observed ? opts_.observed : &default_runtime()}, started_{clock::now()} {
    if (opts_.token.empty()) opts_.token = random_token();
    last_ = rt_->schedulers();
    last_at_ = started_;
  }

  void listen() {
    http_ = std::make_unique<http::server>(opts_.address, opts_.port,
                                           [this](const http::request& r) { return handle(r); });
    port_ = http_->port();  // before the first request is read: the Host check needs it
    http_->start();
  }
  void stop() noexcept { http_.reset(); }

  [[nodiscard]] std::string url() const {
    const bool v6 = opts_.address.find(':') != std::string::npos;
    std::string u = fmt::format("http://{}{}{}:{}/", v6 ? "[" : "", opts_.address, v6 ? "]" : "", port_);
    if (opts_.allow_actions) u += "#token=" + opts_.token;
    return u;
  }

  void count_restart(const telemetry::metadata& md) {
    const auto sup = md.get<pid>("supervisor");
    const auto child = md.get<std::string>("child");
    std::lock_guard lock{m_};
    ++restarts_total_;
    if (sup) {
      ++restarts_by_supervisor_[*sup];
      if (child && !child->empty()) ++restarts_by_child_[{*sup, *child}];
    }
  }

  // One point of the charts, from the observer process's timer.
  void sample() {
    const auto now = clock::now();
    auto ss = rt_->schedulers();
    const double dt = std::chrono::duration<double>(now - last_at_).count();
    sample_t s;
    s.t = std::chrono::duration<double>(now - started_).count();
    s.processes = rt_->process_count();
    std::uint64_t messages = 0;
    for (std::size_t i = 0; i < ss.size(); ++i) {
      const auto& before = i < last_.size() ? last_[i] : scheduler_stats{};
      messages += ss[i].messages - before.messages;
      const double idle = std::chrono::duration<double>(ss[i].idle - before.idle).count();
      s.utilisation.push_back(dt > 0 ? std::clamp(1.0 - idle / dt, 0.0, 1.0) : 0.0);
    }
    s.messages_per_s = dt > 0 ? static_cast<double>(messages) / dt : 0.0;
    last_ = std::move(ss);
    last_at_ = now;
    std::lock_guard lock{m_};
    s.restarts = restarts_total_ - restarts_at_last_sample_;
    restarts_at_last_sample_ = restarts_total_;
    history_.push_back(std::move(s));
    while (history_.size() > std::max<std::size_t>(opts_.history, 1)) history_.pop_front();
  }

  [[nodiscard]] http::response handle(const http::request& r) {
    if (!addressed_to_us(r)) return {421, "text/plain", "this observer answers only requests addressed to it by a loopback name\n"};
    if (r.method == "GET") {
      if (r.path == "/" || r.path == "/index.html") return {200, "text/html; charset=utf-8", std::string{observer_page}};
      if (r.path == "/api/snapshot") return {200, "application/json", snapshot()};
      if (r.path == "/api/process") return process_detail(r);
      if (r.path == "/metrics") return {200, "text/plain; version=0.0.4", prometheus()};
      return {404, "application/json", R"({"error":"no such page"})"};
    }
    if (r.method == "POST") {
      if (r.path == "/api/kill") return kill(r);
      if (r.path == "/api/suspend") return suspend_or_resume(r, true);
      if (r.path == "/api/resume") return suspend_or_resume(r, false);
      return {404, "application/json", R"({"error":"no such action"})"};
    }
    return {405, "text/plain", "only GET and POST are answered here\n"};
  }

 private:
  using clock = std::chrono::steady_clock;
  struct sample_t {
    double t = 0;
    std::vector<double> utilisation;
    double messages_per_s = 0;
    std::uint64_t restarts = 0;
    std::size_t processes = 0;
  };
  struct row {
    pid p;
    std::string text;  // the pid as printed
    sys::process_snapshot peek;
    std::optional<sys::process_info> info;
    std::string child_id;
  };

  static std::string random_token() {
    std::random_device rd;
    std::string t;
    for (int i = 0; i < 4; ++i) t += fmt::format("{:08x}", rd());
    return t;
  }

  [[nodiscard]] bool addressed_to_us(const http::request& r) const {
    std::error_code ec;
    const auto a = asio::ip::make_address(opts_.address, ec);
    if (ec || !a.is_loopback()) return true;  // listening beyond loopback: the operator chose so
    std::string_view host = r.header("host");
    if (host.empty()) return r.header("origin").empty();  // HTTP/1.0 without Host: a local tool
    const std::string port = std::to_string(port_);
    for (std::string_view name : {"127.0.0.1", "localhost", "[::1]"}) {
      if (host == name && port_ == 80) return true;
      if (host.size() == name.size() + 1 + port.size() && host.substr(0, name.size()) == name &&
          host[name.size()] == ':' && host.substr(name.size() + 1) == port)
        return true;
    }
    return false;
  }

  [[nodiscard]] bool token_ok(std::string_view given) const noexcept {
    // Compared in constant time: how long a wrong token takes says nothing.
    const std::string& t = opts_.token;
    unsigned diff = given.size() == t.size() ? 0u : 1u;
    for (std::size_t i = 0; i < t.size(); ++i) diff |= static_cast<unsigned char>(t[i]) ^ static_cast<unsigned char>(i < given.size() ? given[i] : 0);
    return diff == 0;
  }

  [[nodiscard]] std::optional<pid> find(std::string_view text) const {
    for (const pid& p : sys::processes(*rt_))
      if (fmt::format("{}", p) == text) return p;
    return std::nullopt;
  }

  [[nodiscard]] std::vector<row> rows() const {
    std::vector<row> out;
    for (pid& p : sys::processes(*rt_)) {
      row x;
      x.peek = sys::peek(p);
      if (x.peek.status == sys::process_snapshot::status_t::exited) continue;
      x.text = fmt::format("{}", p);
      if (auto i = sys::info(p, opts_.process_timeout)) x.info = std::move(*i);
      x.p = std::move(p);
      out.push_back(std::move(x));
    }
    // A supervisor names its children: their ids label the tree.
    const std::string_view sup_type = type_name<supervisor>();
    std::map<pid, std::string> ids;
    for (const row& x : out) {
      if (!x.info || x.info->type != sup_type) continue;
      auto sup = server_cast<supervisor>(x.p);
      if (!sup) continue;
      if (auto kids = which_children(*sup, opts_.process_timeout))
        for (const child_info& c : *kids)
          if (c.process) ids[c.process] = c.id;
    }
    for (row& x : out)
      if (auto it = ids.find(x.p); it != ids.end()) x.child_id = it->second;
    return out;
  }

  [[nodiscard]] static bool is_supervisor(std::string_view type) noexcept {
    return type == type_name<supervisor>() || type.substr(0, 30) == "otpp::basic_dynamic_supervisor";
  }

  [[nodiscard]] std::uint64_t restarts_of(const row& x) const {
    // Under the lock: a supervisor's restarts, or how often this child was restarted.
    if (auto it = restarts_by_supervisor_.find(x.p); it != restarts_by_supervisor_.end()) return it->second;
    if (!x.child_id.empty() && x.info && x.info->parent) {
      if (auto it = restarts_by_child_.find({x.info->parent, x.child_id}); it != restarts_by_child_.end()) return it->second;
    }
    return 0;
  }

  [[nodiscard]] std::string snapshot() const {
    const auto rs = rows();
    std::string out = "{\"overview\":{";
    out += fmt::format("\"workers\":{},\"processes\":{},\"threads\":{},\"timers\":{},\"uptime\":{},\"actions\":{},",
                       rt_->workers(), rt_->process_count(), rt_->thread_count(), rt_->timer_count(),
                       json_number(std::chrono::duration<double>(clock::now() - started_).count()),
                       opts_.allow_actions ? "true" : "false");
    std::lock_guard lock{m_};
    out += fmt::format("\"restarts\":{},\"sample_every\":{}}},\"processes\":[", restarts_total_, opts_.sample_every.count());
    bool first = true;
    for (const row& x : rs) {
      if (!first) out += ',';
      first = false;
      out += fmt::format("{{\"pid\":{},\"status\":\"{}\",\"queue\":{},\"capacity\":{},\"dropped\":{},\"restarts\":{},\"id\":{}",
                         json_string(x.text), status_name(x.peek, x.info ? &*x.info : nullptr), x.peek.message_queue_len,
                         x.peek.mailbox_capacity, x.peek.dropped, restarts_of(x), json_string(x.child_id));
      if (x.info) {
        out += fmt::format(",\"name\":{},\"type\":{},\"memory\":{},\"handled\":{},\"parent\":{},\"supervisor\":{}",
                           json_string(x.info->name), json_string(x.info->type), x.info->memory, x.info->messages_handled,
                           json_string(x.info->parent ? fmt::format("{}", x.info->parent) : std::string{}),
                           is_supervisor(x.info->type) ? "true" : "false");
      }
      out += '}';
    }
    out += "],\"history\":[";
    first = true;
    for (const sample_t& s : history_) {
      if (!first) out += ',';
      first = false;
      out += fmt::format("{{\"t\":{},\"messages_per_s\":{},\"restarts\":{},\"processes\":{},\"utilisation\":[", json_number(s.t),
                         json_number(s.messages_per_s), s.restarts, s.processes);
      for (std::size_t i = 0; i < s.utilisation.size(); ++i) out += (i ? "," : "") + json_number(s.utilisation[i]);
      out += "]}";
    }
    out += "]}";
    return out;
  }

  // The live process a request's ?pid= names, or the answer that says why not.
  [[nodiscard]] std::variant<pid, http::response> target_of(const http::request& r) const {
    const auto text = r.param("pid");
    if (!text) return http::response{400, "application/json", R"({"error":"which process? ?pid=<0.12.0>"})"};
    if (auto p = find(*text)) return *p;
    return http::response{404, "application/json", "{\"error\":" + json_string(fmt::format("no live process {}", *text)) + "}"};
  }

  [[nodiscard]] http::response process_detail(const http::request& r) const {
    auto t = target_of(r);
    if (auto* answer = std::get_if<http::response>(&t)) return std::move(*answer);
    const pid* p = std::get_if<pid>(&t);
    const std::string text = fmt::format("{}", *p);
    auto info = sys::info(*p, opts_.process_timeout);
    const auto peek = sys::peek(*p);
    if (!info) {
      return {200, "application/json",
              fmt::format(R"({{"pid":{},"status":"busy","queue":{},"error":{}}})", json_string(text), peek.message_queue_len,
                          json_string(fmt::format("no answer within {} ms: {}", opts_.process_timeout.count(), info.error())))};
    }
    std::string out = fmt::format(
        "{{\"pid\":{},\"name\":{},\"type\":{},\"status\":\"{}\",\"queue\":{},\"capacity\":{},\"dropped\":{},\"memory\":{},"
        "\"handled\":{},\"parent\":{},\"trap_exit\":{},\"monitored_by\":{},\"monitoring\":{},\"links\":[",
        json_string(text), json_string(info->name), json_string(info->type),
        status_name(peek, &*info), peek.message_queue_len,
        peek.mailbox_capacity, peek.dropped, info->memory, info->messages_handled,
        json_string(info->parent ? fmt::format("{}", info->parent) : std::string{}), info->trap_exit ? "true" : "false",
        info->monitored_by, info->monitoring);
    for (std::size_t i = 0; i < info->links.size(); ++i) out += (i ? "," : "") + json_string(fmt::format("{}", info->links[i]));
    out += "],\"state\":";
    if (auto st = sys::format_state(*p, opts_.process_timeout)) {
      out += *st ? json_string(**st) : std::string{"null"};
    } else {
      out += json_string(fmt::format("(not read: {})", st.error()));
    }
    out += ",\"children\":[";
    if (info->type == type_name<supervisor>()) {
      if (auto sup = server_cast<supervisor>(*p)) {
        if (auto kids = which_children(*sup, opts_.process_timeout)) {
          bool first = true;
          for (const child_info& c : *kids) {
            if (!first) out += ',';
            first = false;
            static constexpr std::array<const char*, 4> states{"running", "restarting", "stopped", "ignored"};
            out += fmt::format(R"({{"id":{},"pid":{},"state":"{}"}})", json_string(c.id),
                               json_string(c.process ? fmt::format("{}", c.process) : std::string{}),
                               states[static_cast<std::size_t>(c.state)]);
          }
        }
      }
    }
    out += "]}";
    return {200, "application/json", std::move(out)};
  }

  // The process an action names, once the action is allowed and carries the token.
  [[nodiscard]] std::variant<pid, http::response> action_target(const http::request& r) const {
    if (!opts_.allow_actions)
      return http::response{403, "application/json", R"({"error":"actions are off: start the observer with allow_actions"})"};
    if (!token_ok(r.header("x-otpp-token"))) return http::response{403, "application/json", R"({"error":"wrong or missing token"})"};
    return target_of(r);
  }

  [[nodiscard]] http::response kill(const http::request& r) const {
    auto t = action_target(r);
    if (auto* answer = std::get_if<http::response>(&t)) return std::move(*answer);
    const pid& p = std::get<pid>(t);
    otpp::exit(p, exit_reason::kill());
    return {200, "application/json", fmt::format(R"({{"killed":{}}})", json_string(fmt::format("{}", p)))};
  }

  // sys::suspend / sys::resume from the page: a process to look at while
  // its mailbox fills, without killing it.
  [[nodiscard]] http::response suspend_or_resume(const http::request& r, bool suspend) const {
    auto t = action_target(r);
    if (auto* answer = std::get_if<http::response>(&t)) return std::move(*answer);
    const pid& p = std::get<pid>(t);
    const auto done = suspend ? sys::suspend(p, opts_.process_timeout) : sys::resume(p, opts_.process_timeout);
    const char* what = suspend ? "suspended" : "resumed";
    if (!done) {
      return {409, "application/json",
              fmt::format(R"({{"error":{}}})", json_string(fmt::format("{} not {}: {}", p, what, done.error())))};
    }
    return {200, "application/json", fmt::format(R"({{"{}":{}}})", what, json_string(fmt::format("{}", p)))};
  }

  [[nodiscard]] std::string prometheus() const {
    std::string out = metrics::runtime_prometheus(*rt_);
    {
      std::lock_guard lock{m_};
      out += fmt::format("# HELP otpp_restarts_total Children restarted by supervisors.\n# TYPE otpp_restarts_total counter\n"
                         "otpp_restarts_total {}\n",
                         restarts_total_);
    }
    for (const auto& rep : opts_.metrics)
      if (rep) out += rep->prometheus();
    return out;
  }

  observer_options opts_;
  runtime* rt_;
  clock::time_point started_;
  std::uint16_t port_ = 0;
  std::unique_ptr<http::server> http_;
  // The sampler's own (the observer process only).
  std::vector<scheduler_stats> last_;
  clock::time_point last_at_;
  // Shared, behind m_.
  mutable std::mutex m_;
  std::deque<sample_t> history_;
  std::uint64_t restarts_total_ = 0;
  std::uint64_t restarts_at_last_sample_ = 0;
  std::map<pid, std::uint64_t> restarts_by_supervisor_;
  std::map<std::pair<pid, std::string>, std::uint64_t> restarts_by_child_;
};

}  // namespace detail

/// The observer process: start it like any server (or as a supervisor's
/// child) with observer_options. Its start fails, naming the address, when
/// it cannot listen.
class observer : public gen_server<observer> {
 public:
  /// @cond OTPP_INTERNAL
  struct url_req {
    using reply_type = std::string;
  };
  struct tick {};
  /// @endcond

  /// An observer that will listen as `opts` says once started.
  explicit observer(observer_options opts = {}) : opts_{std::move(opts)} {}
  observer(const observer&) = delete;
  observer& operator=(const observer&) = delete;
  ~observer() { stop(); }

  /// @cond OTPP_INTERNAL
  init_result init() {
    const auto every = opts_.sample_every.count() > 0 ? opts_.sample_every : std::chrono::milliseconds{1000};
    core_ = std::make_shared<detail::observer_core>(std::move(opts_));
    try {
      core_->listen();
    } catch (const std::exception& e) {
      return init_result{init_result::kind::error, exit_reason::error(fmt::format("otpp::observer: {}", e.what()))};
    }
    handler_id_ = fmt::format("otpp.observer.{}", self());
    std::weak_ptr<detail::observer_core> weak = core_;
    (void)telemetry::attach(handler_id_, supervisor_events::child_restarting,
                            [weak](const telemetry::event&, const telemetry::measurements&, const telemetry::metadata& md) {
                              if (auto c = weak.lock()) c->count_restart(md);
                            });
    (void)send_interval(self(), tick{}, every);
    return {};
  }
  void handle_info(tick) { core_->sample(); }
  std::string handle_call(url_req) const { return core_->url(); }
  /// @endcond

 private:
  // Also from the destructor: a killed observer runs no terminate, and its
  // listener must still be stopped and its handler detached.
  void stop() noexcept {
    try {
      if (!handler_id_.empty()) (void)telemetry::detach(handler_id_);
    } catch (...) {
      // Out of memory building detach's answer: the handler holds only a weak reference.
    }
    handler_id_.clear();
    if (core_) core_->stop();
  }

  observer_options opts_;
  std::shared_ptr<detail::observer_core> core_;
  std::string handler_id_;
};

/// Where the observer's page is: "http://127.0.0.1:PORT/", followed by
/// "#token=..." when actions are allowed (the page reads the token from
/// there; the part after '#' never reaches a server or its logs).
[[nodiscard]] inline result<std::string> observer_url(const server<observer>& o,
                                                      std::chrono::steady_clock::duration timeout = default_call_timeout) {
  return try_call(o, observer::url_req{}, timeout);
}

}  // namespace otpp
