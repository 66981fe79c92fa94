#pragma once
// otpp::node: this program as a node of an Erlang/Elixir cluster.
//
//   otpp::node n{{.name = "cpp", .cookie = "secret"}};      // cpp@<host>, in epmd
//   n.serve("counter", counter);                            // callable from Elixir:
//   //   GenServer.call({:counter, :"cpp@host"}, :get)
//   otpp::term r = n.call({"session_store", "app@host"}, otpp::term::tuple(otpp::atom{"get"}, "k"));
//
// A node speaks Erlang's own distribution protocol (epmd, the handshake,
// the external term format), so Elixir and Erlang nodes and other otpp
// nodes are its peers; it connects on first send, as Erlang does. Only
// processes given to serve() answer by name, and only pids the node has
// handed out (pid_of) can be reached from outside: a cluster reaches into
// this program where it says so.
//
// A served server answers remote requests as otpp::term:
//   otpp::term handle_call(otpp::term request);   // GenServer.call
//   void handle_cast(otpp::term message);          // GenServer.cast
//   void handle_info(otpp::term message);          // send/2 (list it in info_types)
// The reply may be any type otpp::to_term converts. Calls to other nodes
// are async calls: co_await them in a coroutine handler (no worker waits),
// or get() them on a thread; they fail with the callee's exit reason, with
// noproc, with noconnection when the node goes away, or with timeout.
//
// The protocol is spoken directly (epmd, the version-6 handshake of OTP
// 23+, the external term format), header-only like the rest of otpp: no
// library to link. See detail/dist_handshake.hpp for why not erl_interface.
// Connection I/O runs on one I/O thread, so a slow peer never holds a
// worker. A node is hidden by default (Erlang lists it under
// nodes(hidden) and does not mesh it with the others, as C nodes are);
// node_options::hidden = false makes it visible.

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "async_call.hpp"
#include "detail/node_core.hpp"
#include "gen_server.hpp"
#include "term.hpp"

namespace otpp {

/// How a node starts.
struct node_options {
  /// "name" (a short name on this host) or "name@host".
  std::string name;
  /// The shared secret; empty: read ~/.erlang.cookie.
  std::string cookie;
  /// Where the node listens: loopback unless told otherwise.
  std::string address = "127.0.0.1";
  /// For a handshake, in or out.
  std::chrono::milliseconds connect_timeout{5000};
  /// Erlang's net_ticktime / 4: how often an idle connection says it is
  /// alive; one that says nothing for 4 ticks is closed.
  std::chrono::milliseconds tick{15000};
  /// A frame longer than this closes its connection.
  std::size_t max_frame = 64 * 1024 * 1024;
  /// Hidden (the default) or visible to the cluster's other nodes.
  bool hidden = true;
  /// After traffic, the I/O thread polls without sleeping this long: a
  /// reply within it is read at once instead of after a wake-up (tens of
  /// microseconds on a VM). 0: always sleep.
  std::chrono::microseconds busy_poll{100};
};

/// A process registered by name on some node: {name, node}.
struct remote_name {
  std::string name;  ///< The registered (served) name.
  std::string node;  ///< The node, `name@host`.
};

/// This program as a node. Not copyable; stopping it (the destructor)
/// closes every connection: remote callers' monitors see noconnection,
/// and local calls still waiting on other nodes fail with it.
class node {
 public:
  /// Starts the node: listens, registers with epmd (starting `epmd
  /// -daemon` if none runs). node_error names what failed.
  explicit node(node_options options) : core_{std::make_unique<detail::dist::node_core>(config(std::move(options)))} {}
  node(const node&) = delete;
  node& operator=(const node&) = delete;
  ~node() = default;

  /// "name@host".
  [[nodiscard]] const std::string& name() const noexcept { return core_->name(); }
  /// The port it listens on (epmd tells peers).
  [[nodiscard]] int port() const noexcept { return core_->port(); }

  /// Makes `s` answer remote calls, casts and sends to `name`. Impl
  /// handles otpp::term calls (and casts, and info, as it chooses). False
  /// if a live process is already served under `name`.
  template <class Impl>
  bool serve(std::string name, const server<Impl>& s) {
    return core_->serve(std::move(name), served_entry(s));
  }
  /// Stops serving `name`; true if it was served.
  bool unserve(std::string_view name) { return core_->unserve(name); }

  /// A call to a remote server: co_await it (the reply, or exit_error) or
  /// get() it. Sends at once, connecting first if needed.
  [[nodiscard]] pending_call<term> async_call(const remote_name& to, term request,
                                              std::chrono::steady_clock::duration timeout = default_call_timeout) {
    return core_->call<true>(to.node, atom{to.name}, std::move(request), timeout, label(to));
  }
  /// As async_call to a name, to a pid.
  [[nodiscard]] pending_call<term> async_call(const remote_pid& to, term request,
                                              std::chrono::steady_clock::duration timeout = default_call_timeout) {
    return core_->call<true>(to.node, to, std::move(request), timeout, label(to));
  }
  /// As async_call; co_await and get() give result<term>.
  [[nodiscard]] pending_try_call<term> async_try_call(const remote_name& to, term request,
                                                      std::chrono::steady_clock::duration timeout = default_call_timeout) {
    return core_->call<false>(to.node, atom{to.name}, std::move(request), timeout, label(to));
  }
  /// As async_try_call to a name, to a pid.
  [[nodiscard]] pending_try_call<term> async_try_call(const remote_pid& to, term request,
                                                      std::chrono::steady_clock::duration timeout = default_call_timeout) {
    return core_->call<false>(to.node, to, std::move(request), timeout, label(to));
  }
  /// A call that waits on this thread: the reply, or the failure as a
  /// result. (In a coroutine handler, co_await async_try_call instead.)
  [[nodiscard]] result<term> try_call(const remote_name& to, term request,
                                      std::chrono::steady_clock::duration timeout = default_call_timeout) {
    return async_try_call(to, std::move(request), timeout).get();
  }
  /// As try_call to a name, to a pid.
  [[nodiscard]] result<term> try_call(const remote_pid& to, term request,
                                      std::chrono::steady_clock::duration timeout = default_call_timeout) {
    return async_try_call(to, std::move(request), timeout).get();
  }
  /// GenServer.cast to a remote server (no answer, no error).
  void cast(const remote_name& to, term message) {
    core_->send_to_name(to.node, to.name, term::tuple(atom{"$gen_cast"}, std::move(message)));
  }
  /// GenServer.cast to a remote pid.
  void cast(const remote_pid& to, term message) {
    core_->send_to_pid(to, term::tuple(atom{"$gen_cast"}, std::move(message)));
  }
  /// send/2 to a remote process (dropped if it cannot be delivered).
  void send(const remote_name& to, term message) { core_->send_to_name(to.node, to.name, message); }
  /// send/2 to a remote pid.
  void send(const remote_pid& to, term message) { core_->send_to_pid(to, message); }

  /// From a process: monitors a remote process, which need not exist yet
  /// nor its node be connected. The caller receives otpp::remote_down
  /// (handle_info) when it exits, with its reason; noproc if there is
  /// none; noconnection if its node goes away.
  remote_ref monitor(const remote_pid& target) {
    not_here(target.node, "monitor", "otpp::monitor");
    return core_->monitor(target.node, target, target, caller("monitor"));
  }
  /// As monitor of a pid, of {name, node}: remote_down names it so.
  remote_ref monitor(const remote_name& target) {
    not_here(target.node, "monitor", "otpp::monitor");
    return core_->monitor(target.node, atom{target.name}, term::tuple(atom{target.name}, atom{target.node}), caller("monitor"));
  }
  /// Stops a monitor from monitor(); false if it already fired.
  bool demonitor(const remote_ref& ref) { return core_->demonitor(ref); }
  /// From a process: links it with a remote process. Either's abnormal
  /// exit reaches the other as an exit signal (kills it unless it traps
  /// exits); a lost connection reaches the local one as noconnection.
  void link(const remote_pid& other) {
    not_here(other.node, "link", "otpp::link");
    core_->link(caller("link"), other);
  }
  /// From a process: removes a link made with link.
  void unlink(const remote_pid& other) { core_->unlink(caller("unlink"), other); }
  /// Sends an exit signal to a remote process (Erlang's exit/2), from the
  /// calling process, or from the node outside one.
  void exit(const remote_pid& target, const exit_reason& reason) {
    if (target.node == name()) {
      otpp::exit(local_pid(target), reason);
    } else {
      core_->exit(self(), target, reason);
    }
  }

  /// The pid remote nodes know a local process by; they can then send to
  /// it (handle_info(otpp::term)), link to it and monitor it.
  [[nodiscard]] remote_pid pid_of(const pid& p) { return core_->export_pid(p); }
  /// As pid_of, and the server answers calls and casts sent to that pid
  /// (GenServer.call(pid, request)) as a served name does.
  template <class Impl>
  [[nodiscard]] remote_pid pid_of(const server<Impl>& s) {
    return core_->export_served(served_entry(s));
  }
  /// The local process behind a pid from pid_of (empty if unknown).
  [[nodiscard]] pid local_pid(const remote_pid& p) { return core_->local_pid(p); }

  /// Connects now (rather than on first send); true once connected, false
  /// if it failed or `timeout` passed. For plain threads: it waits.
  bool connect(const std::string& peer, std::chrono::steady_clock::duration timeout = std::chrono::seconds{5}) {
    return core_->connect(peer, timeout);
  }
  /// The nodes connected now.
  [[nodiscard]] std::vector<std::string> nodes() const { return core_->nodes(); }
  /// The calling process receives otpp::nodedown{peer} (handle_info) when
  /// the connection to `peer` goes down, or at once if it cannot be made.
  void monitor_node(const std::string& peer) { core_->monitor_node(peer, caller("monitor_node")); }

 private:
  /// Monitors and links within this node are otpp's own: a clear error
  /// rather than a monitor that never fires.
  void not_here(const std::string& peer, const char* operation, const char* instead) const {
    if (peer == name())
      throw std::invalid_argument{fmt::format("otpp::node::{}: the target is on this node ({}): use {}", operation, peer, instead)};
  }

  static pid caller(const char* operation) {
    pid me = self();
    if (!me) throw std::logic_error{fmt::format("otpp::node::{}: call it from a process", operation)};
    return me;
  }

  template <class Impl>
  static detail::dist::served served_entry(const server<Impl>& s) {
    static_assert(handles_call<Impl, term> || handles_cast<Impl, term> || handles_info<Impl, term>,
                  "otpp::node: the server handles no otpp::term (handle_call, handle_cast or handle_info)");
    detail::dist::served entry;
    entry.target = s.pid();
    if constexpr (handles_call<Impl, term>) {
      using R = call_reply_t<Impl, term>;
      static_assert(std::is_void_v<R> || term_convertible<R>,
                    "otpp::node: handle_call(otpp::term) must reply with a type otpp::to_term converts");
      entry.call = [s](term request) -> std::unique_ptr<detail::dist::inbound_call> {
        return std::make_unique<detail::dist::typed_inbound_call<R>>(
            detail::send_call<false>(s, std::move(request), detail::steady::duration::max()));
      };
    }
    if constexpr (handles_cast<Impl, term>) {
      entry.cast = [s](term message) { otpp::cast(s, std::move(message)); };
    }
    return entry;
  }

  static detail::dist::node_config config(node_options o) {
    if (o.cookie.empty()) o.cookie = home_cookie();
    return {std::move(o.name), std::move(o.cookie), std::move(o.address), o.connect_timeout, o.tick, o.max_frame, o.hidden, o.busy_poll};
  }
  static std::string home_cookie() {
    const char* home = std::getenv("HOME");
    std::string path = std::string{home ? home : ""} + "/.erlang.cookie";
    std::ifstream f{path};
    std::string cookie;
    if (!f || !std::getline(f, cookie) || cookie.empty())
      throw node_error{fmt::format("otpp::node: no cookie given and none readable in {}", path)};
    return cookie;
  }
  static std::string_view label(const remote_name& to) {
    return detail::dist::intern(fmt::format("{{{}, {}}}", to.name, to.node));
  }
  // Per node, not per pid: the interned labels stay few.
  static std::string_view label(const remote_pid& to) { return detail::dist::intern(fmt::format("a pid on {}", to.node)); }

  std::unique_ptr<detail::dist::node_core> core_;
};

}  // namespace otpp
