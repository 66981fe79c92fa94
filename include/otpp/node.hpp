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
// Connection I/O runs on an I/O thread, or, while traffic flows, on a worker
// that has nothing else to run (as BEAM's schedulers poll): a slow peer
// never holds a worker, and a busy node crosses no thread per frame. A node
// is hidden by default (Erlang lists it under nodes(hidden) and does not
// mesh it with the others, as C nodes are); node_options::hidden = false
// makes it visible.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "async_call.hpp"
#include "detail/coarse_clock.hpp"
#include "detail/dist_handshake.hpp"
#include "detail/flat_hash_map.hpp"
#include "detail/idle_poll.hpp"
#include "detail/parking.hpp"
#include "exit_reason.hpp"
#include "gen_server.hpp"
#include "log.hpp"
#include "process.hpp"
#include "term.hpp"

namespace otpp {
/// A node could not start, or was given something it cannot use.
class node_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// What a process that called node::monitor_node receives when the
/// connection to that node goes down (or cannot be made): Erlang's
/// {nodedown, Node}.
struct nodedown {
  std::string node;  ///< The node that went down.
};

/// What a process that called node::monitor receives when the remote
/// process exits (Erlang's {'DOWN', Ref, process, Target, Reason}): noproc
/// if there was none, noconnection if its node went away.
struct remote_down {
  remote_ref ref;       ///< What node::monitor returned.
  term target;          ///< The pid, or {name, node} as given.
  exit_reason reason;   ///< Why it exited: its reason, noproc or noconnection.
};
}  // namespace otpp

namespace otpp::detail::dist {

// -- the engine ----------------------------------------------------------------------
// Threads: one I/O thread owns every established connection (epoll): it
// reads and parses frames, dispatches them, sends ticks, and writes what
// writers left to it. Handshakes block (with deadlines), so they run off
// it: an acceptor thread, and one short thread per handshake, in or out.
// A writer (any thread) sends on the socket itself under the connection's
// lock, or, while the I/O thread is polling after traffic, leaves the
// bytes to it, so that a burst goes out in one system call.
//
// While traffic flows (within busy_poll of the last frame), one idle worker
// of any runtime in the program polls instead (detail/idle_poll.hpp),
// holding io_mu_ as the I/O thread does, and the I/O thread sleeps until
// their lease lapses (every worker busy for lease_ns) or one parks. A frame
// read there queues its process on that worker, whose answer goes out
// from it: a call's round trip crosses no thread on either side. A
// process's writes then wait until its worker runs out of processes (at
// most cork_ns, or the lease), so that a burst leaves in one system call.
//
// Waiting never holds a worker: a call from a remote node is an async call
// to the local server whose reply slot wakes an `inbound_call` once the
// answer is final, on the server's worker, which sends it. A local process
// monitored or linked from afar has one `watch` (a thread-style monitor
// whose resolution is queued to the I/O thread) holding all its remote
// monitors and links.

/// Control message operations (the distribution protocol's numbering).
enum op : std::int64_t {
  op_link = 1,
  op_send = 2,
  op_exit = 3,
  op_unlink = 4,
  op_reg_send = 6,
  op_exit2 = 8,
  op_send_tt = 12,
  op_exit_tt = 13,
  op_reg_send_tt = 16,
  op_exit2_tt = 18,
  op_monitor_p = 19,
  op_demonitor_p = 20,
  op_monitor_p_exit = 21,
  op_send_sender = 22,
  op_send_sender_tt = 23,
  op_payload_exit = 24,
  op_payload_exit_tt = 25,
  op_payload_exit2 = 26,
  op_payload_exit2_tt = 27,
  op_payload_monitor_p_exit = 28,
  op_alias_send = 33,
  op_alias_send_tt = 34,
  op_unlink_id = 35,
  op_unlink_id_ack = 36,
};

/// When a peer was last heard from and written to, for the net tick: the
/// coarse clock, a few milliseconds behind at most where ticks are seconds
/// apart. It is read on every read and send; with the exact clock there,
/// otpp_dist_bench's sequential calls took 8.2-8.5 us instead of
/// 7.9-8.1 us (4 alternated pairs; the 64-caller rate did not move).
inline std::int64_t now_ms() noexcept { return detail::coarse_now_ns() / 1'000'000; }

/// The text of an exit reason as Erlang reads it.
inline term reason_to_term(const exit_reason& r) {
  switch (r.kind()) {
    case exit_kind::normal: return atom{"normal"};
    case exit_kind::shutdown:
      if (r.detail().empty()) return atom{"shutdown"};
      return term::tuple(atom{"shutdown"}, r.detail());
    case exit_kind::kill: return atom{"kill"};
    case exit_kind::killed: return atom{"killed"};
    case exit_kind::noproc: return atom{"noproc"};
    case exit_kind::noconnection: return atom{"noconnection"};
    case exit_kind::timeout: return atom{"timeout"};
    case exit_kind::out_of_memory: return atom{"out_of_memory"};
    default: return term::tuple(atom{std::string{exit_reason::kind_name(r.kind())}}, r.detail());
  }
}

/// An Erlang exit reason as otpp's.
inline exit_reason reason_from_term(const term& t) {
  if (const auto* a = t.get_if<atom>()) {
    if (a->name == "normal") return exit_reason::normal();
    if (a->name == "shutdown") return exit_reason::shutdown();
    if (a->name == "kill") return exit_reason::kill();
    if (a->name == "killed") return exit_reason::killed();
    if (a->name == "noproc") return exit_reason::noproc();
    if (a->name == "noconnection") return exit_reason::noconnection();
    if (a->name == "timeout") return exit_reason::timeout();
    if (a->name == "out_of_memory") return exit_reason::out_of_memory();
  }
  if (t.is_tuple(2) && t[0].is_atom("shutdown")) {
    if (const auto* b = t[1].get_if<binary>()) return exit_reason::shutdown(b->bytes);
    return exit_reason::shutdown(fmt::format("{}", t[1]));
  }
  return exit_reason::error(fmt::format("{}", t));
}

/// Strings that pending calls name themselves by (views must outlive them).
inline std::string_view intern(std::string s) {
  static std::mutex mu;
  static std::set<std::string, std::less<>> strings;
  std::lock_guard lock{mu};
  auto it = strings.find(s);
  if (it == strings.end()) it = strings.insert(std::move(s)).first;
  return *it;
}

class node_core;
struct connection;

/// Something the I/O thread finishes once a slot it awaits is resolved.
struct completion : slot_waker {
  node_core* core = nullptr;
  completion* next = nullptr;
  bool cancelled = false;  // under the node's lock: the peer went; free without answering
  completion() { wake = &on_wake; }
  virtual ~completion() = default;
  virtual void complete(node_core& c) = 0;
  /// The node it answers, for log lines (empty: none).
  [[nodiscard]] virtual std::string_view peer_name() const noexcept { return {}; }
  static void on_wake(slot_waker* w) noexcept;
};

struct connection;

/// Bytes kept inline up to N, on the heap past that.
template <std::size_t N>
class inline_bytes {
 public:
  void append(std::string_view b) {
    if (heap_.empty() && len_ + b.size() <= N) {
      std::memcpy(buf_ + len_, b.data(), b.size());
      len_ += static_cast<std::uint32_t>(b.size());
      return;
    }
    if (heap_.empty()) heap_.assign(buf_, len_);
    heap_ += b;
  }
  [[nodiscard]] std::string_view view() const noexcept {
    return heap_.empty() ? std::string_view{buf_, len_} : std::string_view{heap_};
  }
  void clear() noexcept {
    len_ = 0;
    heap_.clear();
  }

 private:
  char buf_[N];
  std::uint32_t len_ = 0;
  std::string heap_;
};

/// A call from a remote node, being answered by a local server.
struct inbound_call : completion {
  // One per remote call: from the node pool, as a message is.
  static void* operator new(std::size_t n) { return pool_allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { pool_deallocate(p, n); }
  inbound_call() {
    wake = &on_answer;
    after_publish = true;
  }
  static void on_answer(slot_waker* w) noexcept;
  term from;
  term tag;
  // Read in place (the usual case): the reply's frame from its 112 up to
  // the reply, {send, '', From} and {Tag, ...; from and tag are then
  // unused. Inline for node names up to about 60 bytes.
  inline_bytes<184> reply_head;
  std::shared_ptr<connection> conn;  // the one the call came on (the reply goes back on it)
  [[nodiscard]] std::string_view peer_name() const noexcept override;
  inbound_call* prev_in = nullptr;   // in the node's inbound_list, under its lock
  inbound_call* next_in = nullptr;
  bool listed = false;
  virtual result<term> collect() = 0;
  virtual reply_slot_base* slot() = 0;
  void complete(node_core& c) override;
};

/// The calls being answered, linked through themselves: listing one and
/// taking it off allocate nothing (there is one of each per remote call).
class inbound_list {
 public:
  void insert(inbound_call* c) noexcept {
    c->prev_in = nullptr;
    c->next_in = head_;
    if (head_) head_->prev_in = c;
    head_ = c;
    c->listed = true;
  }
  void erase(inbound_call* c) noexcept {
    if (!c->listed) return;
    (c->prev_in ? c->prev_in->next_in : head_) = c->next_in;
    if (c->next_in) c->next_in->prev_in = c->prev_in;
    c->prev_in = c->next_in = nullptr;
    c->listed = false;
  }
  [[nodiscard]] bool empty() const noexcept { return head_ == nullptr; }
  /// `f` may erase (and free) the call it is given.
  template <class F>
  void for_each(F&& f) {
    for (inbound_call* c = head_; c != nullptr;) {
      inbound_call* next = c->next_in;
      f(c);
      c = next;
    }
  }

 private:
  inbound_call* head_ = nullptr;
};

template <class R>
struct typed_inbound_call final : inbound_call {
  explicit typed_inbound_call(pending_try_call<R> c) : call{std::move(c)} {}
  pending_try_call<R> call;
  result<term> collect() override {
    auto r = call.get();  // resolved: does not wait
    if (!r) return r.error();
    if constexpr (std::is_void_v<R>) {
      return term{atom{"ok"}};
    } else {
      return to_term(*r);
    }
  }
  reply_slot_base* slot() override { return pending_call_access::slot(call); }
};

struct watch;

/// A remote monitor's key: the connection it came on and its reference's
/// encoding (in the map, a view of the entry's own bytes).
struct monitor_key {
  const connection* conn = nullptr;
  std::string_view ref;  // in the map: the same bytes, the entry's own
  friend bool operator==(const monitor_key& a, const monitor_key& b) noexcept { return a.conn == b.conn && a.ref == b.ref; }
};
struct monitor_key_hash {
  std::size_t operator()(const monitor_key& k) const noexcept {
    // A reference's last twelve bytes are its words: what tells two apart.
    std::uint64_t a = 0;
    std::uint32_t b = 0;
    if (k.ref.size() >= 12) {
      std::memcpy(&a, k.ref.data() + k.ref.size() - 12, 8);
      std::memcpy(&b, k.ref.data() + k.ref.size() - 4, 4);
    } else {
      a = std::hash<std::string_view>{}(k.ref);
    }
    const std::uint64_t x = (a ^ (std::uint64_t{b} << 32) ^ reinterpret_cast<std::uintptr_t>(k.conn)) * 0x9e3779b97f4a7c15ull;
    return static_cast<std::size_t>(x ^ (x >> 29));
  }
};

/// A remote process's monitor of a local one: an entry of the node's map
/// (by monitor_key), linked into its watch's list through itself, so that
/// a call's monitor and demonitor cost one map operation each and no
/// allocation besides the entry. Guarded by the node's lock.
struct remote_monitor {
  // One per remote call: from the node pool, as a message is.
  static void* operator new(std::size_t n) { return pool_allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { pool_deallocate(p, n); }
  watch* owner = nullptr;
  remote_monitor* prev = nullptr;
  remote_monitor* next = nullptr;
  std::shared_ptr<connection> conn;  // the one it came on: its monitor_p_exit goes there
  // The target as the remote named it, the watcher and the reference,
  // encoded back to back: the middle of the monitor_p_exit it is owed.
  // Inline for node names up to about 40 bytes.
  inline_bytes<160> wire;
  std::uint32_t ref_size = 0;  // the reference is the last bytes of wire
  [[nodiscard]] monitor_key key() const noexcept {
    const std::string_view w = wire.view();
    return {conn.get(), {w.data() + w.size() - ref_size, ref_size}};
  }
};

/// A local process that remote nodes monitor or are linked to: one
/// otpp monitor on it, however many remote monitors and links it has, so
/// a call's monitor and demonitor send no signal to the process. Its lists
/// are guarded by the node's lock.
struct watch : completion {
  struct remote_link {
    std::string peer;
    term other;  // the remote pid
    // The connection it was made over: its close ends the link, and a
    // later connection to the same peer's does not.
    std::shared_ptr<connection> conn;
  };
  reply_slot<exit_reason>* slot = nullptr;
  std::uint64_t id = 0;
  std::uint32_t index = 0;  // the target's wire index
  pid target;
  term local_pid;  // the target's wire pid
  remote_monitor* monitors = nullptr;  // its remote monitors' list
  std::vector<remote_link> links;
  void complete(node_core& c) override;
  /// Ends the watch early (the node stops): the demonitor, or the exit if
  /// it came first, wakes it once more, and then it is freed.
  void cancel() {
    if (cancelled) return;
    cancelled = true;
    if (process_base* p = pid_access::get(target)) p->enqueue_signal(make_node<demonitor_node>(id));
  }
};

/// Reads the frames of the call protocol in place, in the forms nodes write
/// them: each step checks and advances, or fails (false) and the frame
/// takes the general path, which reads it as terms. Its readers of atoms,
/// pids and references are inlined by force: a call's three frames take
/// nine of them, and GCC -O3 called each (5% of the serving side's
/// instructions per call, callgrind).
struct wire_cursor {
  std::string_view in;
  std::size_t pos = 0;

  /// in's bytes [at, at + n), already checked to be there (substr's own
  /// check made GCC call it out of line: 4% of a served call).
  [[nodiscard]] std::string_view span(std::size_t at, std::size_t n) const noexcept { return {in.data() + at, n}; }

  [[nodiscard]] bool has(std::size_t n) const noexcept { return in.size() - pos >= n; }
  bool byte(std::uint8_t v) noexcept {
    if (!has(1) || static_cast<std::uint8_t>(in[pos]) != v) return false;
    ++pos;
    return true;
  }
  bool bytes(std::string_view v) noexcept {
    if (!has(v.size()) || span(pos, v.size()) != v) return false;
    pos += v.size();
    return true;
  }
  /// A small tuple's head with `arity` elements.
  bool tuple(std::uint8_t arity) noexcept { return byte(etf::small_tuple) && byte(arity); }
  bool u32(std::uint32_t& v) noexcept {
    if (!has(4)) return false;
    v = 0;
    for (std::size_t k = 0; k < 4; ++k) v = (v << 8) | static_cast<std::uint8_t>(in[pos + k]);
    pos += 4;
    return true;
  }
  bool skip(std::size_t n) noexcept {
    if (!has(n)) return false;
    pos += n;
    return true;
  }
  /// An atom; `text` is its bytes as sent. Latin-1 atoms are taken only
  /// where their bytes are carried, not read (`utf8_only`).
  [[gnu::always_inline]] bool atom(std::string_view& text, bool utf8_only = false) noexcept {
    if (!has(2)) return false;
    const auto tag = static_cast<std::uint8_t>(in[pos]);
    std::size_t n, head;
    if (tag == etf::small_atom_utf8 || (tag == etf::small_atom_latin1 && !utf8_only)) {
      n = static_cast<std::uint8_t>(in[pos + 1]);
      head = 2;
    } else if ((tag == etf::atom_utf8 || (tag == etf::atom_latin1 && !utf8_only)) && has(3)) {
      n = (std::size_t{static_cast<std::uint8_t>(in[pos + 1])} << 8) | static_cast<std::uint8_t>(in[pos + 2]);
      head = 3;
    } else {
      return false;
    }
    if (!has(head + n)) return false;
    text = span(pos + head, n);
    pos += head + n;
    return true;
  }
  /// A pid (its encoding in `wire`, its node's name in `node`).
  [[gnu::always_inline]] bool pid(std::string_view& wire, std::string_view& node) noexcept {
    const std::size_t at = pos;
    if (!byte(etf::new_pid) || !atom(node, true) || !skip(12)) return false;
    wire = span(at, pos - at);
    return true;
  }
  /// A reference in the one form this node writes and keys remote
  /// monitors by (as a reference decoded and encoded again comes out).
  [[gnu::always_inline]] bool canonical_ref(std::string_view& wire) noexcept {
    const std::size_t at = pos;
    if (!has(4) || !byte(etf::newer_reference)) return false;
    const std::size_t words = (std::size_t{static_cast<std::uint8_t>(in[pos])} << 8) | static_cast<std::uint8_t>(in[pos + 1]);
    pos += 2;
    if (words == 0 || words > 5 || !has(2) || static_cast<std::uint8_t>(in[pos]) != etf::small_atom_utf8) return false;
    std::string_view node;
    if (!atom(node) || !skip(4 + 4 * words)) return false;
    wire = span(at, pos - at);
    return true;
  }
  /// A call's tag: a reference, or OTP 24's [alias | Ref] (its head the
  /// atom, or a reference).
  bool tag(std::string_view& wire) noexcept {
    const std::size_t at = pos;
    std::string_view r, head;
    if (canonical_ref(r)) {
      wire = r;
      return true;
    }
    pos = at;
    if (!byte(etf::list) || !bytes(std::string_view{"\0\0\0\1", 4})) return false;
    const std::size_t head_at = pos;
    if (!atom(head)) {
      pos = head_at;
      if (!canonical_ref(head)) return false;
    }
    if (!canonical_ref(r)) return false;
    wire = span(at, pos - at);
    return true;
  }
};

/// A small tuple's head (fewer than 256 elements).
inline void put_tuple(std::string& o, std::uint8_t arity) {
  const char head[2] = {static_cast<char>(etf::small_tuple), static_cast<char>(arity)};
  o.append(head, 2);
}
/// A control message's head: its tuple and its operation.
inline void put_control(std::string& o, std::uint8_t arity, std::int64_t operation) {
  put_tuple(o, arity);
  etf::encode_integer(o, operation);
}

/// A frame under construction: its length is filled in by end_frame.
inline std::size_t begin_frame(std::string& o) {
  const std::size_t at = o.size();
  o.append(4, '\0');
  etf::put8(o, 112);
  etf::put8(o, etf::version);
  return at;
}
inline void end_frame(std::string& o, std::size_t at) {
  const auto len = static_cast<std::uint32_t>(o.size() - at - 4);
  for (std::size_t k = 0; k < 4; ++k) o[at + k] = static_cast<char>(len >> (24 - 8 * k));
}

/// A served process: how a remote request reaches it.
struct served {
  using call_fn = std::function<std::unique_ptr<inbound_call>(term)>;
  using cast_fn = std::function<void(term)>;
  pid target;
  // Shared, so that copying an entry out from under the node's lock (once
  // per request) allocates nothing.
  std::shared_ptr<const call_fn> call;  // null: it answers no calls
  std::shared_ptr<const cast_fn> cast;  // null: it takes no casts
  // multi_call to this node itself: the call made here, typed, its reply
  // made a term (null where `call` is).
  using local_call_fn = std::function<result<term>(term, steady::duration)>;
  using local_async_fn = std::function<async<result<term>>(term, steady::duration)>;
  std::shared_ptr<const local_call_fn> local_call;
  std::shared_ptr<const local_async_fn> local_async;
};

/// What a call's frames hold that depends only on its target, encoded once
/// per connection and served name: the monitor, the '$gen_call' and the
/// demonitor, each from the frame's 112 up to the reference's words, which
/// with the request are all a call writes of its own.
struct call_heads {
  term target;
  std::string monitor;
  std::string call;
  std::string demonitor;
};

struct connection {
  std::string peer;
  // Call heads by served name and by pid (under the node's lock).
  std::map<std::string, std::shared_ptr<const call_heads>, std::less<>> heads;
  std::shared_ptr<const call_heads> last_heads;  // of heads, the one found last (of a served name)
  std::map<std::array<std::uint32_t, 3>, std::shared_ptr<const call_heads>> pid_heads;  // by id, serial, creation
  std::mutex mu;        // guards fd's writes, out, up, closed
  int fd = -1;
  bool up = false;      // handshake done, on the I/O thread's epoll
  bool closed = false;  // gone: writes are dropped
  bool want_out = false;
  bool superseded = false;  // our handshake lost to the peer's (simultaneous connect)
  bool replaces = false;    // the peer's, while we had one up (it answered "alive" with true): not in conns_ yet
  bool dirty = false;       // listed for the I/O thread to flush
  std::int64_t corked_at = 0;  // when `out` last went from empty to not (steady ns)
  std::string out;      // what a writer could not send yet (or before `up`)
  std::string in;       // I/O thread only
  std::atomic<std::int64_t> last_in{0}, last_out{0};
};

/// A local process's monitor of a remote one.
struct proc_monitor {
  pid watcher;
  term target;
  std::shared_ptr<connection> conn;  // made over this one: its close ends it
};

/// A local process told nodedown when this connection closes.
struct node_watcher {
  pid watcher;
  std::shared_ptr<connection> conn;
};

/// A call to a remote server, waiting for its reply.
struct outbound {
  reply_slot<term>* slot = nullptr;
  std::shared_ptr<connection> conn;         // the one the call went out on (its peer's name too)
  std::shared_ptr<const call_heads> heads;  // its target (what the monitor names) and its demonitor
};

struct node_config {
  std::string name;
  std::string cookie;
  std::string address;
  std::chrono::milliseconds connect_timeout;
  std::chrono::milliseconds tick;
  std::size_t max_frame;
  bool hidden;
  std::chrono::microseconds busy_poll;
};

class node_core {
 public:
  explicit node_core(node_config cfg) : cfg_{std::move(cfg)} { start(); }
  node_core(const node_core&) = delete;
  node_core& operator=(const node_core&) = delete;
  ~node_core() { stop(); }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint32_t creation() const noexcept { return creation_; }
  [[nodiscard]] int port() const noexcept { return port_; }

  // -- serving ---------------------------------------------------------------------
  bool serve(std::string name, served s) {
    std::lock_guard lock{mu_};
    auto it = served_.find(name);
    if (it != served_.end() && it->second.target.alive()) return false;
    const remote_pid wire = export_locked(s.target);
    served_by_index_[wire_index(wire)] = s;
    served_[std::move(name)] = std::move(s);
    return true;
  }
  /// The entry served as `name` (a copy), if any.
  std::optional<served> find_served(std::string_view name) {
    std::lock_guard lock{mu_};
    auto it = served_.find(name);
    if (it == served_.end()) return std::nullopt;
    return it->second;
  }
  bool unserve(std::string_view name) {
    std::lock_guard lock{mu_};
    auto it = served_.find(name);
    if (it == served_.end()) return false;
    served_.erase(it);
    return true;
  }
  /// A local server reachable by pid: calls and casts to it work as to a
  /// served name.
  remote_pid export_served(served s) {
    std::lock_guard lock{mu_};
    const remote_pid wire = export_locked(s.target);
    served_by_index_[wire_index(wire)] = std::move(s);
    return wire;
  }

  /// The wire identity of a local process (exported: remote nodes can now
  /// send to it, link to it and monitor it).
  remote_pid export_pid(const pid& p) {
    std::lock_guard lock{mu_};
    return export_locked(p);
  }
  [[nodiscard]] pid local_pid(const remote_pid& r) {
    std::lock_guard lock{mu_};
    return lookup_pid_locked(r);
  }

  // -- sending ----------------------------------------------------------------------
  /// Frames `control` (and `message`) and sends them to `peer`, connecting
  /// first if needed (a send to a node that cannot be reached is dropped).
  void send_control(const std::string& peer, const term& control, const term* message = nullptr) {
    std::string frame = make_frame(control, message);
    write(peer, frame);
  }

  void send_to_name(const std::string& peer, const std::string& name, const term& msg) {
    send_control(peer, term::tuple(std::int64_t{op_reg_send}, proxy(), atom{""}, atom{name}), &msg);
  }
  void send_to_pid(const remote_pid& to, const term& msg) {
    if (to.node == name_) {
      deliver_local(to, msg);
      return;
    }
    send_control(to.node, term::tuple(std::int64_t{op_send}, atom{""}, to), &msg);
  }

  /// A call to a remote server: a monitor on it (so its death or absence
  /// fails the call with its reason) and the '$gen_call'.
  template <bool Throws>
  basic_pending_call<term, Throws> call(const std::string& peer, term target, term request,
                                        std::chrono::steady_clock::duration timeout, std::string_view label) {
    if (peer == name_)
      return pending_call_access::failed<term, Throws>(
          exit_reason::error("otpp::node: a call to this node itself goes to the local server directly"));
    // The request first: one that cannot be encoded leaves nothing behind.
    // Built in buffers of the thread's (nothing here switches threads).
    std::string& req = scratch(0);
    encode_term_to(req, request);
    const std::uint64_t n = next_ref_.fetch_add(1, std::memory_order_relaxed);
    auto* slot = reply_slot<term>::make();
    std::shared_ptr<connection> conn;
    std::shared_ptr<const call_heads> heads;
    try {
      // One hold of the lock: a connection that closes meanwhile either
      // fails this call with the others (it is listed before the close
      // looks) or is replaced by a fresh one here.
      std::lock_guard lock{mu_};
      conn = connection_for_locked(peer);
      heads = heads_locked(*conn, target);
      outbound_.try_emplace(n, outbound{slot, conn, heads});
    } catch (...) {
      slot->release();  // both references: nobody else has it
      slot->release();
      throw;
    }
    // {monitor_p, Proxy, Target, Ref}, then {reg_send, Proxy, '', Name} (or
    // {send, '', Pid}) with {'$gen_call', {Proxy, Ref}, Request}: the heads
    // and the reference's words, then the request.
    std::string& frames = scratch(1);
    frames.resize(2 * (4 + 12) + heads->monitor.size() + heads->call.size() + req.size());
    char* p = put_frame(frames.data(), heads->monitor, n, {});
    (void)put_frame(p, heads->call, n, req);
    const process_base* const caller = tls().current;
    const wait_due due = pending_call_access::due(caller, timeout);
    write(conn, frames);
    return pending_call_access::sent<term, Throws>(caller, slot, timeout, due, 0, label, "otpp::term");
  }

  bool connect(const std::string& peer, std::chrono::steady_clock::duration timeout) {
    auto c = connection_for(peer);
    std::unique_lock lock{conn_mu_};
    return conn_cv_.wait_for(lock, timeout, [&] {
      std::lock_guard l{c->mu};
      return c->up || c->closed;
    }) && [&] {
      std::lock_guard l{c->mu};
      return c->up;
    }();
  }

  [[nodiscard]] std::vector<std::string> nodes() {
    std::vector<std::string> out;
    std::lock_guard lock{mu_};
    for (auto& [name, c] : conns_) {
      std::lock_guard l{c->mu};
      if (c->up && !c->closed) out.push_back(name);
    }
    return out;
  }

  void monitor_node(const std::string& peer, const pid& watcher) {
    {
      // One hold of the lock: a connection found in the table has not had
      // its close's sweep yet, which will tell the watcher.
      std::lock_guard lock{mu_};
      auto c = connection_for_locked(peer);
      if (registered_locked(c)) {
        node_watchers_[peer].push_back(node_watcher{watcher, std::move(c)});
        return;
      }
    }
    otpp::send(watcher, nodedown{peer});  // the node stops, or this is its own name
  }

  /// `watcher` (a local process) monitors a remote process: it receives
  /// remote_down when that exits.
  remote_ref monitor(const std::string& peer, const term& target, const term& target_as_given, const pid& watcher) {
    const std::uint64_t n = next_ref_.fetch_add(1, std::memory_order_relaxed);
    term ref = make_ref(n);
    term from;
    std::shared_ptr<connection> c;
    {
      std::lock_guard lock{mu_};
      from = export_locked(watcher);
      c = connection_for_locked(peer);
      proc_monitors_[n] = proc_monitor{watcher, target_as_given, c};
    }
    write(c, make_frame(term::tuple(std::int64_t{op_monitor_p}, from, target, ref)));
    return ref.as<remote_ref>();
  }
  bool demonitor(const remote_ref& ref) {
    auto n = ref_number(&ref);
    if (!n) return false;
    proc_monitor pm;
    term from;
    {
      std::lock_guard lock{mu_};
      auto it = proc_monitors_.find(*n);
      if (it == proc_monitors_.end()) return false;
      pm = std::move(it->second);
      proc_monitors_.erase(it);
      from = export_locked(pm.watcher);
    }
    term target = pm.target.is_tuple(2) ? pm.target[0] : pm.target;
    write(pm.conn, make_frame(term::tuple(std::int64_t{op_demonitor_p}, from, target, term{ref})));
    return true;
  }
  /// Links a local process and a remote one: either's exit reaches the other.
  void link(const pid& local, const remote_pid& remote) {
    if (!local.alive()) return;
    term wire;
    std::shared_ptr<connection> c;
    {
      std::lock_guard lock{mu_};
      watch& w = watch_locked(local);
      c = connection_for_locked(remote.node);
      w.links.push_back({remote.node, remote, c});
      wire = w.local_pid;
    }
    write(c, make_frame(term::tuple(std::int64_t{op_link}, wire, remote)));
  }
  void unlink(const pid& local, const remote_pid& remote) {
    const term wire = export_pid(local);
    drop_link(remote.node, remote, wire);
    const std::uint64_t id = next_ref_.fetch_add(1, std::memory_order_relaxed);
    send_control(remote.node, term::tuple(std::int64_t{op_unlink_id}, id, wire, remote));
  }
  /// exit(Pid, Reason) to a remote process, from `from` (or the node).
  void exit(const pid& from, const remote_pid& to, const exit_reason& reason) {
    const term sender = from ? term{export_pid(from)} : proxy();
    send_control(to.node, term::tuple(std::int64_t{op_exit2}, sender, to, reason_to_term(reason)));
  }

  // -- the completion queue ----------------------------------------------------------
  void post_completion(completion* c) noexcept {
    {
      std::lock_guard lock{done_mu_};
      c->next = done_;
      done_ = c;
    }
    notify();
  }

  // -- used by completions (I/O thread) ----------------------------------------------
  void finish_inbound(inbound_call& c) {
    {
      std::lock_guard lock{mu_};
      inbound_.erase(&c);
      if (c.cancelled) return;
    }
    result<term> r = c.collect();
    if (!r) {
      // The server failed to answer (it died): the caller's monitor, if it
      // has one, reports the reason; a reply would be wrong.
      log_rt(log_level::debug, "otpp::node {}: a call from {} ended without a reply: {}", name_, c.peer_name(),
             r.error().to_string());
      return;
    }
    if (const std::string_view head = c.reply_head.view(); !head.empty()) {
      std::string& frame = scratch(1);
      frame.resize(4);
      frame += head;
      encode_term_to(frame, *r);
      end_frame(frame, 0);
      write(c.conn, frame);
      return;
    }
    term reply = term::tuple(c.tag, std::move(*r));
    if (const auto* to = c.from.get_if<remote_pid>()) send_to_pid(*to, reply);
  }
  void finish_watch(watch& w) {
    exit_reason why = exit_reason::noproc();
    if (w.slot->settled_state() == reply_slot_base::ready) why = w.slot->take();
    w.slot->release();
    w.slot = nullptr;
    std::vector<std::pair<std::shared_ptr<connection>, std::string>> exits;  // of its remote monitors
    std::vector<std::pair<std::shared_ptr<connection>, std::string>> out;  // of its links
    {
      std::lock_guard lock{mu_};
      auto it = watches_.find(w.index);
      if (it != watches_.end() && it->second == &w) watches_.erase(it);
      const term reason = reason_to_term(why);
      std::string reason_wire;
      encode_term_to(reason_wire, reason);
      // Its remote monitors go with it, told (unless the node stops) why.
      for (remote_monitor* m = w.monitors; m != nullptr;) {
        remote_monitor* next = m->next;
        if (!w.cancelled) exits.emplace_back(m->conn, monitor_exit_frame(m->wire.view(), reason_wire));
        remote_monitors_.erase(remote_monitors_.find(m->key()));  // frees m
        m = next;
      }
      w.monitors = nullptr;
      if (w.cancelled) return;
      for (auto& l : w.links)
        out.emplace_back(l.conn, make_frame(term::tuple(std::int64_t{op_exit}, w.local_pid, l.other, reason)));
    }
    for (auto& [conn, frame] : exits) write(conn, frame);
    for (auto& [conn, frame] : out) write(conn, frame);
  }

 private:
  // -- start and stop ----------------------------------------------------------------
  void start() {
    const auto at = cfg_.name.find('@');
    alive_ = cfg_.name.substr(0, at);
    std::string host;
    if (at != std::string::npos) {
      host = cfg_.name.substr(at + 1);
    } else {
      char buf[256] = {};
      if (::gethostname(buf, sizeof buf - 1) != 0) throw node_error{"otpp::node: gethostname failed"};
      host = buf;
      host = host.substr(0, host.find('.'));  // a short name, as `--sname` gives
    }
    if (alive_.empty() || host.empty() || alive_.size() > 255 || host.size() > 255)
      throw node_error{fmt::format("otpp::node: bad node name '{}' (want name or name@host)", cfg_.name)};
    name_ = alive_ + "@" + host;
    if (cfg_.cookie.empty()) throw node_error{fmt::format("otpp::node {}: an empty cookie", name_)};
    flags_ = our_flags | (cfg_.hidden ? 0 : dflag_published);
    busy_poll_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.busy_poll).count();

    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    if (::inet_pton(AF_INET, cfg_.address.c_str(), &addr.sin_addr) != 1)
      throw node_error{fmt::format("otpp::node {}: bad listen address '{}' (an IPv4 address)", name_, cfg_.address)};
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof addr;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 64) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      const int e = errno;
      close_fds();
      throw node_error{fmt::format("otpp::node {}: cannot listen on {}: {}", name_, cfg_.address, std::strerror(e))};
    }
    port_ = ntohs(addr.sin_port);
    publish();

    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_ < 0 || wake_fd_ < 0 || stop_fd_ < 0) {
      const int e = errno;
      close_fds();
      throw node_error{fmt::format("otpp::node {}: epoll/eventfd: {}", name_, std::strerror(e))};
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_fd_;
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_fd_, &ev);
    std::random_device rd;
    ref_salt_ = rd();
    encode_term_to(proxy_wire_, proxy());
    const term ref = make_ref(0);
    encode_term_to(ref_head_, ref);
    ref_head_.resize(ref_head_.size() - 12);  // all but the words
    io_ = std::thread{[this] { io_loop(); }};
    acceptor_ = std::thread{[this] { accept_loop(); }};
    if (busy_poll_ns_ > 0) polled_by_workers_ = idle_pollers::add(&poller_);
  }

  /// Registers with epmd, starting `epmd -daemon` if none answers.
  void publish() {
    std::string error;
    auto deadline = [] { return clock::now() + std::chrono::seconds{2}; };
    publish_fd_ = epmd_register(alive_, static_cast<std::uint16_t>(port_), cfg_.hidden, creation_, error, deadline());
    if (publish_fd_ < 0 && error.rfind("epmd does not answer", 0) == 0) {
      pid_t child = 0;
      const char* argv[] = {"epmd", "-daemon", nullptr};
      if (::posix_spawnp(&child, "epmd", nullptr, nullptr, const_cast<char* const*>(argv), environ) == 0) {
        int status = 0;
        ::waitpid(child, &status, 0);  // -daemon forks and returns
      }
      for (int attempt = 0; attempt < 40 && publish_fd_ < 0; ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds{50});  // epmd starting: nothing to wait on but its port
        error.clear();
        publish_fd_ = epmd_register(alive_, static_cast<std::uint16_t>(port_), cfg_.hidden, creation_, error, deadline());
      }
    }
    if (publish_fd_ < 0) {
      close_fds();
      throw node_error{fmt::format("otpp::node {}: cannot register with epmd: {}", name_, error)};
    }
  }

  void stop() {
    if (polled_by_workers_) idle_pollers::remove(&poller_);  // no worker polls from here on
    stopping_.store(true);
    poll_mode_.store(io_thread_polls);
    unpark_one(poll_mode_);
    std::uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
    notify();
    if (acceptor_.joinable()) acceptor_.join();
    {
      // A handshake in flight ends within connect_timeout.
      std::unique_lock lock{mu_};
      connectors_done_.wait(lock, [&] { return connecting_ == 0; });
    }
    if (io_.joinable()) io_.join();
    // Whatever is still open ends here: callers fail, watches go.
    std::vector<std::shared_ptr<connection>> all;
    {
      std::lock_guard lock{mu_};
      for (auto& [n, c] : conns_) all.push_back(c);
    }
    for (auto& c : all) close_connection(c, "node stopped");
    drain_completions();
    cancel_leftovers();
    close_fds();
  }

  void close_fds() {
    for (int* fd : {&publish_fd_, &listen_fd_, &epoll_, &wake_fd_, &stop_fd_}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }

  void wake_connect_waiters() {
    { std::lock_guard g{conn_mu_}; }  // a waiter between its check and its sleep is not missed
    conn_cv_.notify_all();
  }

  void notify() noexcept {
    std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }

  // -- connections ---------------------------------------------------------------------
  std::shared_ptr<connection> connection_for(const std::string& peer) {
    std::lock_guard lock{mu_};
    return connection_for_locked(peer);
  }
  std::shared_ptr<connection> connection_for_locked(const std::string& peer) {
    // A caller calls the same node many times in a row: the last one found
    // is tried first (a close forgets it).
    if (last_conn_ && last_conn_->peer == peer) return last_conn_;
    auto it = conns_.find(peer);
    if (it != conns_.end()) {
      last_conn_ = it->second;
      return it->second;
    }
    auto c = std::make_shared<connection>();
    c->peer = peer;
    if (stopping_.load() || peer == name_) {
      c->closed = true;  // nothing goes out: the node stops, or this is us
      return c;
    }
    conns_[peer] = c;
    ++connecting_;
    try {
      std::thread{[this, c] { connect_to(c); }}.detach();
    } catch (...) {
      --connecting_;
      c->closed = true;
    }
    return c;
  }

  /// Under mu_: whether c is the table's connection to its peer (one that
  /// will be closed, and swept, through close_connection).
  bool registered_locked(const std::shared_ptr<connection>& c) const {
    auto it = conns_.find(c->peer);
    return it != conns_.end() && it->second == c;
  }

  void connect_to(const std::shared_ptr<connection>& c) {
    const std::string& peer = c->peer;
    const auto deadline = clock::now() + cfg_.connect_timeout;
    std::string error;
    int fd = -1;
    const auto at = peer.find('@');
    if (at == std::string::npos || at == 0 || at + 1 == peer.size()) {
      error = "not a node name (name@host)";
    } else if (auto port = epmd_lookup(peer.substr(at + 1), peer.substr(0, at), error, deadline)) {
      fd = tcp_connect(peer.substr(at + 1), *port, deadline);
      if (fd < 0) {
        error = fmt::format("TCP connect failed: {}", std::strerror(errno));
      } else {
        handshake_result r = handshake_out(fd, name_, flags_, creation_, cfg_.cookie, peer, deadline);
        if (!r.error.empty()) {
          error = std::move(r.error);
          ::close(fd);
          fd = -1;
        }
      }
    }
    if (fd < 0) log_rt(log_level::warning, "otpp::node {}: cannot connect to {}: {}", name_, peer, error);
    new_conns_push(c, fd);
    std::lock_guard lock{mu_};
    if (--connecting_ == 0) connectors_done_.notify_all();
  }

  void accept_loop() {
    for (;;) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (stopping_.load()) return;
      if (!(fds[0].revents & POLLIN)) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      {
        std::lock_guard lock{mu_};
        ++connecting_;
      }
      try {
        std::thread{[this, fd] { accept_from(fd); }}.detach();
      } catch (...) {
        ::close(fd);
        std::lock_guard lock{mu_};
        if (--connecting_ == 0) connectors_done_.notify_all();
      }
    }
  }

  /// A handshake thread for one incoming connection.
  void accept_from(int fd) {
    std::shared_ptr<connection> c;
    auto status_for = [&](const std::string& peer) -> std::string {
      std::lock_guard lock{mu_};
      if (stopping_.load()) return "not_allowed";
      auto fresh = [&] {
        c = std::make_shared<connection>();
        c->peer = peer;
        conns_[peer] = c;
        return "ok";
      };
      auto it = conns_.find(peer);
      if (it == conns_.end()) return fresh();
      std::unique_lock l{it->second->mu};
      if (it->second->closed) {
        // Closing, not yet forgotten (close_connection forgets it after it
        // has marked it): the peer reconnects, and this is a connection of
        // its own, not the other half of a simultaneous connect.
        l.unlock();
        return fresh();
      }
      if (it->second->up) {
        // The peer connects while we have a connection to it: it restarted,
        // or the old one is dead and we have not noticed yet. It says which
        // (OTP's "alive"); if it goes on, the new one replaces ours.
        c = std::make_shared<connection>();
        c->peer = peer;
        c->replaces = true;
        return "alive";
      }
      // Both sides are connecting: the greater name keeps its own.
      if (name_ > peer) return "nok";
      it->second->superseded = true;
      c = it->second;
      return "ok_simultaneous";
    };
    handshake_result r =
        handshake_in(fd, name_, flags_, creation_, cfg_.cookie, status_for, clock::now() + cfg_.connect_timeout);
    if (!r.error.empty()) {
      log_rt(log_level::warning, "otpp::node {}: refused an incoming connection: {}", name_, r.error);
      ::close(fd);
      if (c) new_conns_push(c, -1);
    } else {
      new_conns_push(c, fd);
    }
    std::lock_guard lock{mu_};
    if (--connecting_ == 0) connectors_done_.notify_all();
  }

  void new_conns_push(const std::shared_ptr<connection>& c, int fd) {
    {
      std::lock_guard lock{done_mu_};
      new_conns_.emplace_back(c, fd);
    }
    notify();
  }

  /// I/O thread: a handshake finished (fd >= 0) or failed.
  void adopt(const std::shared_ptr<connection>& c, int fd) {
    if (c->replaces) {
      if (fd >= 0) adopt_replacement(c, fd);
      return;  // its handshake failed: the connection we have stays
    }
    if (fd < 0) {
      {
        std::lock_guard l{c->mu};
        if (c->up) return;  // the other side's connection won meanwhile
        if (c->superseded) {
          c->superseded = false;  // the incoming handshake is still running: it decides
          return;
        }
      }
      close_connection(c, "cannot connect");
      return;
    }
    {
      std::lock_guard l{c->mu};
      if (c->up || c->closed) {
        ::close(fd);
        return;
      }
      c->fd = fd;
      c->up = true;
      c->last_in = c->last_out = now_ms();
      by_fd_[fd] = c;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = fd;
      ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
      flush_locked(*c);
    }
    wake_connect_waiters();
    log_rt(log_level::info, "otpp::node {}: connected to {}", name_, c->peer);
  }

  /// I/O thread: the peer connected again while we had a connection up,
  /// and said the old one is dead. That one closes as if the peer had
  /// closed it (calls on it fail, watchers hear nodedown), and this one
  /// takes its place.
  void adopt_replacement(const std::shared_ptr<connection>& fresh, int fd) {
    std::shared_ptr<connection> old;
    {
      std::lock_guard lock{mu_};
      if (auto it = conns_.find(fresh->peer); it != conns_.end()) old = it->second;
    }
    if (old) {
      bool up, closed;
      {
        std::lock_guard l{old->mu};
        up = old->up;
        closed = old->closed;
      }
      if (up) {
        close_connection(old, "the peer connected again (it restarted, or this connection was dead)");
      } else if (!closed) {
        adopt(old, fd);  // we were connecting to it meanwhile: this is that connection
        return;
      }
    }
    std::shared_ptr<connection> c;
    {
      std::lock_guard lock{mu_};
      if (stopping_.load()) {
        ::close(fd);
        return;
      }
      auto it = conns_.find(fresh->peer);
      if (it == conns_.end()) {
        fresh->replaces = false;
        conns_[fresh->peer] = fresh;
        c = fresh;
      } else {
        c = it->second;  // a connect started since the close: this is that connection
      }
    }
    adopt(c, fd);
  }

  void write(const std::string& peer, const std::string& frames) { write(connection_for(peer), frames); }
  /// As write(peer, ...) on a connection already looked up: frames for a
  /// connection that has closed meanwhile are dropped with it.
  void write(const std::shared_ptr<connection>& c, const std::string& frames) {
    const std::int64_t now = polled_by_workers_ ? note_traffic() : 0;
    std::unique_lock l{c->mu};
    if (c->closed) return;
    if (c->up && poll_mode_.load(std::memory_order_relaxed) == workers_poll && tls().slot != nullptr) {
      // Workers poll, and this is one: the bytes wait until it runs out of
      // processes to run, and go out with what the others it runs wrote,
      // in one system call (a worker that stays busy sends them itself
      // once they have waited cork_ns).
      if (!c->out.empty() && now - c->corked_at > cork_ns) {
        c->out += frames;
        if (!flush_locked(*c)) c->out.clear();
        return;
      }
      leave_output(c, l, frames, now);
      // The I/O thread took polling back meanwhile: it flushes, once awake.
      if (poll_mode_.load() != workers_poll && !io_hot_.load()) notify();
      return;
    }
    if (c->up && io_hot_.load()) {
      // The I/O thread is polling: it sends this with whatever else comes
      // meanwhile, in one system call.
      leave_output(c, l, frames, now);
      if (!io_hot_.load()) notify();  // it stopped polling meanwhile: wake it
      return;
    }
    if (!c->up || !c->out.empty()) {
      if (room_for(*c, frames)) c->out += frames;
      return;
    }
    std::size_t done = 0;
    while (done < frames.size()) {
      const ssize_t n = ::send(c->fd, frames.data() + done, frames.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;  // full, or broken: the I/O thread finds out which
    }
    c->last_out.store(now_ms(), std::memory_order_relaxed);
    if (done < frames.size()) {
      c->out.append(frames, done);
      want_out_locked(*c);
    }
  }

  /// False (and a log line) if `frames` would take the connection's
  /// backlog past its bound: the message is dropped.
  bool room_for(const connection& c, const std::string& frames) {
    if (c.out.size() + frames.size() <= cfg_.max_frame * 4) return true;
    log_rt(log_level::warning, "otpp::node {}: output to {} backed up past {} bytes: message dropped", name_, c.peer,
           cfg_.max_frame * 4);
    return false;
  }

  /// Adds `frames` to what flush_dirty sends (unlocking `l`); `now` is when
  /// they were written (steady ns; read only while workers poll).
  void leave_output(const std::shared_ptr<connection>& c, std::unique_lock<std::mutex>& l, const std::string& frames,
                    std::int64_t now) {
    if (!room_for(*c, frames)) return;
    if (c->out.empty()) c->corked_at = now;
    c->out += frames;
    const bool first = !c->dirty;
    c->dirty = true;
    l.unlock();
    if (first) {
      std::lock_guard d{dirty_mu_};
      dirty_.push_back(c);
    }
  }

  void want_out_locked(connection& c) {
    if (c.want_out || c.fd < 0) return;
    c.want_out = true;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.fd = c.fd;
    ::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
  }

  /// Writes what is buffered; true unless the socket is broken.
  bool flush_locked(connection& c) {
    std::size_t done = 0;
    while (done < c.out.size()) {
      const ssize_t n = ::send(c.fd, c.out.data() + done, c.out.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        return false;
      }
    }
    c.out.erase(0, done);
    if (done) c.last_out.store(now_ms(), std::memory_order_relaxed);
    if (!c.out.empty()) {
      want_out_locked(c);
    } else if (c.want_out) {
      c.want_out = false;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = c.fd;
      ::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
    }
    return true;
  }

  /// I/O thread (or stop): the connection is gone. Everything that depended
  /// on it learns so now: calls fail with noconnection, links get an exit
  /// signal, watchers get nodedown.
  void close_connection(const std::shared_ptr<connection>& c, std::string_view why) {
    {
      std::lock_guard l{c->mu};
      if (c->closed) return;
      c->closed = true;
      c->up = false;
      if (c->fd >= 0) {
        ::epoll_ctl(epoll_, EPOLL_CTL_DEL, c->fd, nullptr);
        ::close(c->fd);
        by_fd_.erase(c->fd);
        c->fd = -1;
      }
      c->out.clear();
    }
    wake_connect_waiters();
    log_rt(log_level::info, "otpp::node {}: connection to {} closed: {}", name_, c->peer, why);
    std::vector<reply_slot<term>*> failed;
    std::vector<pid> to_tell;
    std::vector<pid> unlinked;
    std::vector<remote_down> downs;
    std::vector<pid> watchers;
    {
      std::lock_guard lock{mu_};
      auto it = conns_.find(c->peer);
      if (it != conns_.end() && it->second == c) conns_.erase(it);
      if (last_conn_ == c) last_conn_.reset();
      for (auto o = outbound_.begin(); o != outbound_.end();) {
        if (o->second.conn == c) {  // not by name: a reconnection's calls are its own
          failed.push_back(o->second.slot);
          outbound_.erase(o++);
        } else {
          ++o;
        }
      }
      inbound_.for_each([&](inbound_call* in) {
        if (in->conn == c) in->cancelled = true;  // its answer has nowhere to go
      });
      for (auto m = remote_monitors_.begin(); m != remote_monitors_.end();) {
        if (m->first.conn == c.get()) {
          unlink_monitor(*m->second);
          remote_monitors_.erase(m++);
        } else {
          ++m;
        }
      }
      // By connection, not by peer name: what was made over a connection
      // that replaced this one (the peer connected again) stays.
      for (auto& [index, w] : watches_) {
        for (auto l = w->links.begin(); l != w->links.end();) {
          if (l->conn == c) {
            unlinked.push_back(w->target);
            l = w->links.erase(l);
          } else {
            ++l;
          }
        }
      }
      if (auto n = node_watchers_.find(c->peer); n != node_watchers_.end()) {
        std::erase_if(n->second, [&](const node_watcher& w) {
          if (w.conn != c) return false;
          to_tell.push_back(w.watcher);
          return true;
        });
        if (n->second.empty()) node_watchers_.erase(n);
      }
      for (auto m = proc_monitors_.begin(); m != proc_monitors_.end();) {
        if (m->second.conn == c) {
          downs.push_back(remote_down{make_ref(m->first).as<remote_ref>(), m->second.target, exit_reason::noconnection()});
          watchers.push_back(m->second.watcher);
          m = proc_monitors_.erase(m);
        } else {
          ++m;
        }
      }
    }
    for (std::size_t k = 0; k < downs.size(); ++k) otpp::send(watchers[k], std::move(downs[k]));
    for (auto* s : failed) {
      s->fail(exit_reason::noconnection());
      s->release();
    }
    for (auto& p : unlinked) otpp::exit(p, exit_reason::noconnection());
    for (auto& p : to_tell) otpp::send(p, nodedown{c->peer});
  }

  // -- the I/O thread ------------------------------------------------------------------
  void io_loop() {
    epoll_event events[64];
    std::int64_t next_tick = now_ms() + 1000;
    std::int64_t active_until = 0;  // busy-poll until then (steady ns)
    while (!stopping_.load()) {
      if (poll_mode_.load() == workers_poll) {
        wait_for_workers(next_tick);
        continue;
      }
      // After traffic, poll without sleeping for a while: a reply that comes
      // back within it is read microseconds sooner than a wake-up brings it.
      const bool hot = steady::now().time_since_epoch().count() < active_until;
      if (!hot) {
        // About to sleep: writers send for themselves again, after what
        // they (or workers that handed polling back) left has gone.
        if (io_hot_.load(std::memory_order_relaxed)) io_hot_.store(false);
        std::lock_guard io{io_mu_};
        flush_dirty();
      }
      const int n = ::epoll_wait(epoll_, events, 64, hot ? 0 : 1000);
      if (n > 0) {
        active_until = steady::now().time_since_epoch().count() + busy_poll_ns_;
        if (busy_poll_ns_ > 0) io_hot_.store(true);
      }
      bool sent;
      {
        std::lock_guard io{io_mu_};
        (void)handle_events(events, n, true);
        sent = flush_dirty();
        tick_if_due(next_tick);
      }
      if (n <= 0 && hot && !sent) std::this_thread::yield();  // others on this core (workers) go first
    }
  }

  /// I/O thread, under io_mu_: ticks and sweeps once a second.
  void tick_if_due(std::int64_t& next_tick) {
    if (now_ms() < next_tick) return;
    next_tick = now_ms() + 1000;
    housekeeping();
  }

  /// I/O thread, while workers poll: sends what writers left before they
  /// noticed, keeps the ticks, and takes polling back when the workers'
  /// lease lapses (none has polled for a while: all are busy running
  /// processes) or one of them parks.
  void wait_for_workers(std::int64_t& next_tick) {
    if (io_hot_.load(std::memory_order_relaxed)) io_hot_.store(false);
    {
      std::lock_guard io{io_mu_};
      (void)flush_dirty();
      tick_if_due(next_tick);
    }
    const std::int64_t now = steady::now().time_since_epoch().count();
    const std::int64_t lease = lease_until_.load();
    if (now >= lease) {
      std::uint32_t expected = workers_poll;
      (void)poll_mode_.compare_exchange_strong(expected, io_thread_polls);
      return;
    }
    park(poll_mode_, workers_poll, steady::time_point{steady::duration{lease}});
  }

  /// Under io_mu_, on the I/O thread or a polling worker; true if any
  /// connection had something.
  bool handle_events(const epoll_event* events, int n, bool on_io_thread) {
    bool any = false;
    for (int k = 0; k < n; ++k) {
      const int fd = events[k].data.fd;
      if (fd == wake_fd_) {
        // Only the I/O thread clears the wake: one a worker cleared could be
        // the one that was to bring the I/O thread out of epoll_wait (a
        // worker taking polling over), which then slept on in it, its
        // lease unwatched and what writers left unsent, until its timeout.
        if (on_io_thread) {
          std::uint64_t v;
          (void)!::read(wake_fd_, &v, sizeof v);
        }
        take_new_connections();
        drain_completions();
        continue;
      }
      any = true;
      auto it = by_fd_.find(fd);
      if (it == by_fd_.end()) continue;  // closed earlier in this batch
      std::shared_ptr<connection> c = it->second;
      if (events[k].events & EPOLLOUT) {
        std::lock_guard l{c->mu};
        if (!c->closed && !flush_locked(*c)) {
          c->out.clear();
        }
      }
      if (events[k].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) read_from(c);
    }
    return any;
  }

  // -- polled by idle workers ----------------------------------------------------------
  // A worker with nothing to run polls while traffic flows (within busy_poll
  // of the last frame): the frame it reads queues its process on that very
  // worker, and the answer goes out from it, so a remote call's round trip
  // crosses no thread. Both sides of a connection doing this make it the
  // network's round trip plus the handlers.
  static poll_result poll_idle(void* self) noexcept { return static_cast<node_core*>(self)->poll_as_worker(); }
  /// Only the polling worker hands polling back when it parks.
  static void worker_parks(void* self) noexcept {
    auto* core = static_cast<node_core*>(self);
    if (core->poller_thread_.load(std::memory_order_relaxed) == &tls()) core->hand_back();
  }

  poll_result poll_as_worker() noexcept {
    const std::int64_t now = steady::now().time_since_epoch().count();
    if (now - traffic_ns_.load(std::memory_order_relaxed) > busy_poll_ns_) {
      // Quiet: the I/O thread sleeps in epoll for both, once it has sent
      // what is left (it flushes before it sleeps).
      hand_back();
      return poll_result::quiet;
    }
    // One worker polls (and spins for it); another takes over only once it
    // has stopped (it went off to run processes), so that a trickle of
    // traffic keeps one worker from parking, not all of them.
    const void* me = &tls();
    if (poller_thread_.load(std::memory_order_relaxed) != me) {
      if (now - lease_until_.load(std::memory_order_relaxed) + lease_ns < takeover_ns) return poll_result::quiet;
      poller_thread_.store(me, std::memory_order_relaxed);
    }
    lease_until_.store(now + lease_ns, std::memory_order_relaxed);
    if (poll_mode_.load(std::memory_order_relaxed) != workers_poll) {
      poll_mode_.store(workers_poll);
      notify();  // out of epoll_wait, into wait_for_workers: the lease holds from now
    }
    std::unique_lock io{io_mu_, std::try_to_lock};
    if (!io.owns_lock()) return poll_result::hot;
    // What the processes this worker ran wrote goes out first; what reading
    // now writes (demonitors, say) waits for the processes it wakes to run
    // and write too: the next poll sends it all in one system call.
    bool handled = false;
    try {
      handled = flush_dirty();
      if (by_fd_.size() == 1 && (++direct_polls_ & 7) != 0) {
        // One connection: read it directly, one system call where
        // epoll_wait and recv were two (each ~1 µs on a virtualised host).
        // Every eighth poll still asks epoll, for what else it reports: a
        // completion, a new connection, room to write.
        const std::shared_ptr<connection> c = by_fd_.begin()->second;  // read_from may close it
        handled |= read_from(c);
      } else {
        epoll_event events[16];
        const int n = ::epoll_wait(epoll_, events, 16, 0);
        handled |= handle_events(events, n, false);
      }
    } catch (const std::exception& e) {
      log_rt(log_level::error, "otpp::node {}: polling on a worker failed: {}", name_, e.what());
    }
    return handled ? poll_result::handled : poll_result::hot;
  }

  /// Traffic now (steady ns, returned): workers keep polling for
  /// busy_poll. Stored at most every eighth of it, so that a burst of
  /// frames does not write the shared lines at each one.
  std::int64_t note_traffic() noexcept {
    const std::int64_t now = steady::now().time_since_epoch().count();
    if (now - traffic_ns_.load(std::memory_order_relaxed) > busy_poll_ns_ / 8) {
      traffic_ns_.store(now, std::memory_order_relaxed);
      idle_pollers::note_traffic(now + busy_poll_ns_);
    }
    return now;
  }

  /// The I/O thread takes polling back; it flushes what writers left
  /// before it sleeps in epoll.
  void hand_back() noexcept {
    if (poll_mode_.load(std::memory_order_relaxed) != workers_poll) return;
    poll_mode_.store(io_thread_polls);
    unpark_one(poll_mode_);
  }

  /// How long the I/O thread leaves polling to workers after the last one
  /// polled: an upper bound on the read latency a long handler adds.
  static constexpr std::int64_t lease_ns = 500'000;
  /// How long a polling worker may go without polling before another idle
  /// worker takes over.
  static constexpr std::int64_t takeover_ns = 20'000;
  /// How long a worker's writes may wait for it to run out of work. Long
  /// enough that a burst of a dozen calls' frames leaves in one send, short
  /// enough that the peer starts on them while this worker writes the rest
  /// (at 50 µs each side's worker waited out the other's whole batch, half
  /// its time). 64 callers between two nodes, interleaved runs: 50 µs
  /// 0.56-0.84 M calls/s, 20 µs 0.87-0.96 M, 15 µs 0.98-1.06 M, 10 µs
  /// 0.79-0.98 M, 5 µs 0.56-0.70 M.
  static constexpr std::int64_t cork_ns = 15'000;

  /// Sends what writers left while this thread polled; true if any.
  bool flush_dirty() {
    std::vector<std::shared_ptr<connection>> list;
    {
      std::lock_guard d{dirty_mu_};
      if (dirty_.empty()) return false;
      list.swap(dirty_);
    }
    for (auto& c : list) {
      std::lock_guard l{c->mu};
      c->dirty = false;
      if (!c->closed && c->fd >= 0 && !flush_locked(*c)) c->out.clear();
    }
    return true;
  }

  void take_new_connections() {
    std::vector<std::pair<std::shared_ptr<connection>, int>> fresh;
    {
      std::lock_guard lock{done_mu_};
      fresh.swap(new_conns_);
    }
    for (auto& [c, fd] : fresh) adopt(c, fd);
  }

  void drain_completions() {
    completion* list;
    {
      std::lock_guard lock{done_mu_};
      list = std::exchange(done_, nullptr);
    }
    // Oldest first: the list was pushed at its head.
    completion* prev = nullptr;
    while (list) {
      completion* next = list->next;
      list->next = prev;
      prev = list;
      list = next;
    }
    while (prev) {
      completion* next = prev->next;
      std::unique_ptr<completion> owned{prev};
      try {
        owned->complete(*this);
      } catch (const std::exception& e) {
        log_rt(log_level::error, "otpp::node {}: answering {} failed: {}", name_, owned->peer_name(), e.what());
      }
      prev = next;
    }
  }

  /// Reads and handles what c has; true if it had anything (or closed).
  bool read_from(const std::shared_ptr<connection>& c) {
    char* const buf = read_buf_.get();  // off the stack: a worker's fiber may read
    bool read = false;
    for (;;) {
      int fd;
      {
        std::lock_guard l{c->mu};
        if (c->closed) return read;
        fd = c->fd;
      }
      const ssize_t n = ::recv(fd, buf, read_buf_size, MSG_DONTWAIT);
      if (n > 0) {
        read = true;
        const auto got = static_cast<std::size_t>(n);
        c->last_in.store(now_ms(), std::memory_order_relaxed);
        if (polled_by_workers_) (void)note_traffic();
        std::string& in = c->in;
        if (in.empty()) {
          // Whole frames are read where recv put them; only the beginning
          // of one is kept for the next read.
          const std::size_t used = parse_frames(c, {buf, got});
          if (used == std::string_view::npos) return true;
          in.append(buf + used, got - used);
        } else {
          in.append(buf, got);
          const std::size_t used = parse_frames(c, in);
          if (used == std::string_view::npos) return true;
          in.erase(0, used);
        }
        if (got < read_buf_size) return true;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return read;
      close_connection(c, n == 0 ? "closed by the peer" : std::strerror(errno));
      return true;
    }
  }

  /// Handles every whole frame in `in`: the bytes they took (what is left
  /// is the beginning of a frame), or npos if the connection was closed.
  std::size_t parse_frames(const std::shared_ptr<connection>& c, std::string_view in) {
    std::size_t pos = 0;
    while (in.size() - pos >= 4) {
      const auto* p = reinterpret_cast<const unsigned char*>(in.data() + pos);
      const std::uint32_t len = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
      if (len > cfg_.max_frame) {
        close_connection(c, fmt::format("a frame of {} bytes (the limit is {})", len, cfg_.max_frame));
        return std::string_view::npos;
      }
      if (in.size() - pos - 4 < len) break;
      std::string_view frame{in.data() + pos + 4, len};
      pos += 4 + len;
      if (len == 0) continue;  // a tick: its arrival is what counts
      try {
        handle_frame(c, frame);
      } catch (const term_error& e) {
        close_connection(c, fmt::format("malformed frame: {}", e.what()));
        return std::string_view::npos;
      } catch (const std::exception& e) {
        // Out of memory handling it, say: this connection goes, the I/O
        // thread and the others stay.
        close_connection(c, fmt::format("handling a frame failed: {}", e.what()));
        return std::string_view::npos;
      }
    }
    return pos;
  }

  // -- the call protocol, read in place -----------------------------------------------
  // A call is four frames: monitor, '$gen_call', reply, demonitor. Read as
  // terms they cost more than the rest of the call together (every pid
  // and reference owns a copy of its node's name), so these four are read
  // where they lie when they come in the forms nodes write them, and the
  // pids and references in them are carried as the bytes they came as.
  // Anything else (an alias tag, a pid as a monitor's target, latin-1
  // names) takes the general path: false, and nothing was done.

  bool read_in_place(const std::shared_ptr<connection>& c, std::string_view frame) {
    wire_cursor w{frame, 0};
    if (!w.byte(112) || !w.byte(etf::version) || !w.byte(etf::small_tuple) || !w.has(3)) return false;
    const auto arity = static_cast<std::uint8_t>(frame[w.pos]);
    if (static_cast<std::uint8_t>(frame[w.pos + 1]) != etf::small_integer) return false;
    const auto op = static_cast<std::uint8_t>(frame[w.pos + 2]);
    w.pos += 3;
    std::string_view ignored, node;
    switch (op) {
      case op_send: return arity == 3 && w.atom(ignored) && reply_in_place(w);
      case op_send_sender: return arity == 3 && w.pid(ignored, node) && reply_in_place(w);
      case op_reg_send: return arity == 4 && call_in_place(c, w);
      case op_monitor_p: return arity == 4 && monitor_in_place(c, w);
      case op_demonitor_p: return arity == 4 && demonitor_in_place(c, w);
      default: return false;
    }
  }

  /// {send, _, Proxy} {Ref, Reply}: the reply to one of this node's calls.
  bool reply_in_place(wire_cursor& w) {
    std::uint32_t low, high, salt;
    if (!w.bytes(proxy_wire_) || !w.byte(etf::version) || !w.tuple(2) ||
        !w.bytes(ref_head_) || !w.u32(low) || !w.u32(high) || !w.u32(salt) || salt != ref_salt_)
      return false;
    etf::decoder d{w.in, w.pos};
    term reply = d.read();
    if (d.position() != w.in.size()) d.fail("bytes after the message");
    finish_call((std::uint64_t{high} << 18) | low, std::move(reply));
    return true;
  }

  /// {reg_send, _, _, Name} {'$gen_call', {From, Tag}, Request}.
  bool call_in_place(const std::shared_ptr<connection>& c, wire_cursor& w) {
    std::string_view sender, sender_node, ignored, name, gen_call, from, from_node, tag;
    if (!w.pid(sender, sender_node) || !w.atom(ignored) || !w.atom(name, true) || !w.byte(etf::version) ||
        !w.tuple(3) || !w.atom(gen_call, true) || gen_call != "$gen_call" ||
        !w.tuple(2) || !w.pid(from, from_node) || from_node != c->peer || !w.tag(tag))
      return false;
    served s;
    {
      std::lock_guard lock{mu_};
      auto it = served_.find(name);
      if (it == served_.end() || !it->second.target.alive() || !it->second.call) return false;
      s = it->second;
    }
    etf::decoder d{w.in, w.pos};
    term request = d.read();
    if (d.position() != w.in.size()) d.fail("bytes after the message");
    std::unique_ptr<inbound_call> rec = (*s.call)(std::move(request));
    // 112 131 {send, '', From} 131 {Tag, ...
    static constexpr char before_from[] = {112, static_cast<char>(etf::version), etf::small_tuple, 3, etf::small_integer,
                                           op_send, static_cast<char>(etf::small_atom_utf8), 0};
    static constexpr char before_tag[] = {static_cast<char>(etf::version), etf::small_tuple, 2};
    auto& head = rec->reply_head;
    head.append({before_from, sizeof before_from});
    head.append(from);
    head.append({before_tag, sizeof before_tag});
    head.append(tag);
    start_inbound(c, std::move(rec));
    return true;
  }

  /// {monitor_p, From, Name, Ref}.
  bool monitor_in_place(const std::shared_ptr<connection>& c, wire_cursor& w) {
    std::string_view from, from_node, name, ref;
    if (!w.pid(from, from_node)) return false;
    const std::size_t named_at = w.pos;
    if (!w.atom(name, true) || name == "net_kernel") return false;
    const std::string_view named = w.span(named_at, w.pos - named_at);
    if (!w.canonical_ref(ref) || w.pos != w.in.size()) return false;
    {
      std::lock_guard lock{mu_};
      auto it = served_.find(name);
      if (it != served_.end() && it->second.target.alive()) {
        add_remote_monitor_locked(it->second.target, c, {named, from, ref});
        return true;
      }
    }
    std::string wire;
    wire.reserve(named.size() + from.size() + ref.size());
    wire += named;
    wire += from;
    wire += ref;
    std::string reason;
    etf::put_atom(reason, "noproc");
    write(c, monitor_exit_frame(wire, reason));
    return true;
  }

  /// {demonitor_p, From, Target, Ref}.
  bool demonitor_in_place(const std::shared_ptr<connection>& c, wire_cursor& w) {
    std::string_view from, node, target, ref;
    if (!w.pid(from, node)) return false;
    const std::size_t target_at = w.pos;
    if (!w.atom(target)) {
      w.pos = target_at;
      if (!w.pid(target, node)) return false;
    }
    if (!w.canonical_ref(ref) || w.pos != w.in.size()) return false;
    drop_remote_monitor(*c, ref);
    return true;
  }

  /// {monitor_p_exit, Target, Watcher, Ref, Reason} from a remote monitor's
  /// wire and the reason's encoding.
  static std::string monitor_exit_frame(std::string_view wire, std::string_view reason) {
    std::string frame;
    frame.reserve(wire.size() + reason.size() + 16);
    const std::size_t at = begin_frame(frame);
    put_control(frame, 5, op_monitor_p_exit);
    frame += wire;
    frame += reason;
    end_frame(frame, at);
    return frame;
  }

  void handle_frame(const std::shared_ptr<connection>& c, std::string_view frame) {
    if (read_in_place(c, frame)) return;
    etf::decoder d{frame};
    if (d.u8() != 112) d.fail("not a pass-through frame (112)");
    if (d.u8() != etf::version) d.fail("no version byte before the control message");
    term control = d.read();
    std::optional<term> message;
    if (d.position() < frame.size()) {
      if (d.u8() != etf::version) d.fail("no version byte before the message");
      message = d.read();
      if (d.position() != frame.size()) d.fail("bytes after the message");
    }
    const auto* ctl = control.get_if<term_tuple>();
    if (!ctl || ctl->elements.empty() || !ctl->elements[0].is<std::int64_t>())
      d.fail("a control message that is not a tuple with an operation");
    const auto& e = ctl->elements;
    auto need = [&](std::size_t n, bool with_message) {
      if (e.size() != n || (with_message && !message))
        d.fail(fmt::format("control operation {} with {} elements{}", e[0].as<std::int64_t>(), e.size(),
                           with_message && !message ? " and no message" : ""));
    };
    switch (e[0].as<std::int64_t>()) {
      case op_send:
      case op_send_sender:
        need(3, true);
        on_send(c, e[2], std::move(*message));
        break;
      case op_send_tt:
      case op_send_sender_tt:
        need(4, true);
        on_send(c, e[2], std::move(*message));
        break;
      case op_reg_send:
        need(4, true);
        on_reg_send(c, e[1], e[3], std::move(*message));
        break;
      case op_reg_send_tt:
        need(5, true);
        on_reg_send(c, e[1], e[3], std::move(*message));
        break;
      case op_monitor_p:
        need(4, false);
        on_monitor(c, e[1], e[2], e[3]);
        break;
      case op_demonitor_p:
        need(4, false);
        on_demonitor(c, e[3]);
        break;
      case op_monitor_p_exit:
        need(5, false);
        on_monitor_exit(e[3], e[4]);
        break;
      case op_payload_monitor_p_exit:
        need(4, true);
        on_monitor_exit(e[3], *message);
        break;
      case op_link:
        need(3, false);
        on_link(c, e[1], e[2]);
        break;
      case op_unlink:
        need(3, false);
        on_unlink(c, e[1], e[2]);
        break;
      case op_unlink_id:
        need(4, false);
        on_unlink(c, e[2], e[3]);
        send_control(c->peer, term::tuple(std::int64_t{op_unlink_id_ack}, e[1], e[3], e[2]));
        break;
      case op_unlink_id_ack: break;
      case op_exit:
      case op_exit2:
        need(4, false);
        on_exit_signal(c, e[1], e[2], e[3], e[0].as<std::int64_t>() == op_exit);
        break;
      case op_exit_tt:
      case op_exit2_tt:
        need(5, false);
        on_exit_signal(c, e[1], e[2], e[4], e[0].as<std::int64_t>() == op_exit_tt);
        break;
      case op_payload_exit:
      case op_payload_exit2:
        need(3, true);
        on_exit_signal(c, e[1], e[2], *message, e[0].as<std::int64_t>() == op_payload_exit);
        break;
      case op_payload_exit_tt:
      case op_payload_exit2_tt:
        need(4, true);
        on_exit_signal(c, e[1], e[2], *message, e[0].as<std::int64_t>() == op_payload_exit_tt);
        break;
      default:
        log_rt(log_level::debug, "otpp::node {}: control operation {} from {} ignored", name_, e[0].as<std::int64_t>(),
               c->peer);
    }
  }

  // -- what arrives --------------------------------------------------------------------
  void on_send(const std::shared_ptr<connection>& c, const term& to, term message) {
    const auto* rp = to.get_if<remote_pid>();
    if (!rp) throw term_error{"otpp::node: a send to something that is not a pid"};
    if (is_proxy(*rp)) {
      on_reply(std::move(message));
      return;
    }
    pid target;
    served s;
    {
      std::lock_guard lock{mu_};
      target = lookup_pid_locked(*rp);
      if (auto it = served_by_index_.find(wire_index(*rp)); target && it != served_by_index_.end()) s = it->second;
    }
    if (!target) return;  // a dead or unknown pid: dropped, as Erlang does
    if (s.target) {
      deliver_to_served(c, s, std::move(message));
    } else {
      otpp::send(target, std::move(message));
    }
  }

  void on_reg_send(const std::shared_ptr<connection>& c, const term& from, const term& name, term message) {
    (void)from;
    const auto* a = name.get_if<atom>();
    if (!a) throw term_error{"otpp::node: a registered send to something that is not an atom"};
    served s;
    {
      std::lock_guard lock{mu_};
      auto it = served_.find(a->name);
      if (it != served_.end() && it->second.target.alive()) s = it->second;
    }
    if (!s.target) {
      if (a->name == "net_kernel") answer_net_kernel(message);
      // Not served: dropped, as a send to an unregistered name on a remote
      // node is; a caller's monitor reports noproc.
      return;
    }
    deliver_to_served(c, s, std::move(message));
  }

  /// net_adm:ping/1 asks the node's net_kernel {is_auth, Node}: the answer
  /// that makes a ping pong.
  void answer_net_kernel(const term& message) {
    if (!message.is_tuple(3) || !message[0].is_atom("$gen_call") || !message[1].is_tuple(2)) return;
    const term& request = message[2];
    if (!request.is_tuple(2) || !request[0].is_atom("is_auth")) return;
    if (const auto* to = message[1][0].get_if<remote_pid>()) send_to_pid(*to, term::tuple(message[1][1], atom{"yes"}));
  }

  void deliver_to_served(const std::shared_ptr<connection>& c, const served& s, term message) {
    if (message.is_tuple(3) && message[0].is_atom("$gen_call") && message[1].is_tuple(2)) {
      if (!s.call) {
        log_rt(log_level::warning, "otpp::node {}: a call from {} to a process that answers no calls (no handle_call(otpp::term))",
               name_, c->peer);
        return;
      }
      auto& tt = message.value();
      auto& parts = std::get<term_tuple>(tt).elements;
      std::unique_ptr<inbound_call> rec = (*s.call)(std::move(parts[2]));
      rec->from = parts[1][0];
      rec->tag = parts[1][1];
      start_inbound(c, std::move(rec));
      return;
    }
    if (message.is_tuple(2) && message[0].is_atom("$gen_cast")) {
      if (!s.cast) {
        log_rt(log_level::warning, "otpp::node {}: a cast from {} to a process that takes no casts (no handle_cast(otpp::term))",
               name_, c->peer);
        return;
      }
      (*s.cast)(std::move(std::get<term_tuple>(message.value()).elements[1]));
      return;
    }
    otpp::send(s.target, std::move(message));
  }

  /// A call handed to its server: the answer comes back as a completion.
  void start_inbound(const std::shared_ptr<connection>& c, std::unique_ptr<inbound_call> rec) {
    rec->core = this;
    rec->conn = c;
    reply_slot_base* slot = rec->slot();
    inbound_call* raw = rec.release();
    {
      std::lock_guard lock{mu_};
      inbound_.insert(raw);
    }
    if (slot == nullptr || !slot->await(raw)) post_completion(raw);  // answered (or failed) already
  }

  void on_reply(term message) {
    if (!message.is_tuple(2)) return;
    const term& tag = message[0];
    const remote_ref* r = tag.get_if<remote_ref>();
    if (!r) {
      // OTP 24+ tags a reply [alias | Ref]; ours are plain, but take both.
      const auto* l = tag.get_if<term_list>();
      if (l && l->tail.size() == 1) r = l->tail.front().get_if<remote_ref>();
    }
    auto n = ref_number(r);
    if (!n) return;
    finish_call(*n, std::move(std::get<term_tuple>(message.value()).elements[1]));
  }

  /// Call `n`'s reply came: it goes to the caller, and the monitor that
  /// call set goes.
  void finish_call(std::uint64_t n, term reply) {
    outbound o;
    {
      std::lock_guard lock{mu_};
      auto it = outbound_.find(n);
      if (it == outbound_.end()) return;  // abandoned and swept: late replies are dropped
      o = std::move(it->second);
      outbound_.erase(it);
    }
    (void)o.slot->set_value(std::move(reply));
    o.slot->release();
    std::string& frame = scratch(1);
    frame.resize(4 + o.heads->demonitor.size() + 12);
    (void)put_frame(frame.data(), o.heads->demonitor, n, {});
    write(o.conn, frame);
  }

  void on_monitor_exit(const term& ref, const term& reason) {
    auto n = ref_number(ref.get_if<remote_ref>());
    if (!n) return;
    outbound o;
    {
      std::lock_guard lock{mu_};
      auto it = outbound_.find(*n);
      if (it == outbound_.end()) {
        auto m = proc_monitors_.find(*n);
        if (m == proc_monitors_.end()) return;
        proc_monitor pm = std::move(m->second);
        proc_monitors_.erase(m);
        otpp::send(pm.watcher, remote_down{ref.as<remote_ref>(), pm.target, reason_from_term(reason)});
        return;
      }
      o = std::move(it->second);
      outbound_.erase(it);
    }
    (void)o.slot->fail(reason_from_term(reason));
    o.slot->release();
  }

  void on_monitor(const std::shared_ptr<connection>& c, const term& from, const term& target, const term& ref) {
    // gen:call monitors the net_kernel that net_adm:ping asks; it is the
    // node itself here and goes down only with the connection.
    if (target.is_atom("net_kernel")) return;
    pid p = resolve(target);
    if (!p || !p.alive()) {
      send_control(c->peer, term::tuple(std::int64_t{op_monitor_p_exit}, target, from, ref, atom{"noproc"}));
      return;
    }
    std::string wire;
    encode_term_to(wire, target);
    encode_term_to(wire, from);
    const std::size_t ref_at = wire.size();
    encode_term_to(wire, ref);
    const std::string_view all{wire};
    std::lock_guard lock{mu_};
    add_remote_monitor_locked(p, c, {all.substr(0, ref_at), all.substr(ref_at)});
  }
  /// A remote monitor of `p` from connection c, its wire the concatenation
  /// of `pieces`, the last of which is its reference.
  void add_remote_monitor_locked(const pid& p, const std::shared_ptr<connection>& c,
                                 std::initializer_list<std::string_view> pieces) {
    watch& w = watch_locked(p);
    const std::string_view ref = *(pieces.end() - 1);
    auto [it, fresh] = remote_monitors_.try_emplace(monitor_key{c.get(), ref}, nullptr);
    if (!fresh) unlink_monitor(*it->second);  // the same reference again: it now watches this process
    try {
      it->second = std::make_unique<remote_monitor>();
    } catch (...) {
      remote_monitors_.erase(it);
      throw;
    }
    remote_monitor* m = it->second.get();
    for (std::string_view piece : pieces) m->wire.append(piece);
    m->ref_size = static_cast<std::uint32_t>(ref.size());
    m->conn = c;
    m->owner = &w;
    m->next = w.monitors;
    it->first.ref = m->key().ref;  // the key's bytes are the entry's own from now on
    if (w.monitors) w.monitors->prev = m;
    w.monitors = m;
  }
  static void unlink_monitor(remote_monitor& m) noexcept {
    (m.prev ? m.prev->next : m.owner->monitors) = m.next;
    if (m.next) m.next->prev = m.prev;
    m.owner = nullptr;
    m.prev = m.next = nullptr;
  }

  void on_demonitor(const std::shared_ptr<connection>& c, const term& ref) {
    std::string wire;
    encode_term_to(wire, ref);
    drop_remote_monitor(*c, wire);
  }
  void drop_remote_monitor(const connection& c, std::string_view ref) {
    std::lock_guard lock{mu_};
    auto it = remote_monitors_.find(monitor_key{&c, ref});
    if (it == remote_monitors_.end()) return;
    unlink_monitor(*it->second);
    remote_monitors_.erase(it);
  }

  void on_link(const std::shared_ptr<connection>& c, const term& from, const term& to) {
    pid p = resolve(to);
    if (!p || !p.alive()) {
      send_control(c->peer, term::tuple(std::int64_t{op_exit}, to, from, atom{"noproc"}));
      return;
    }
    std::lock_guard lock{mu_};
    watch_locked(p).links.push_back({c->peer, from, c});
  }

  void on_unlink(const std::shared_ptr<connection>& c, const term& from, const term& to) { drop_link(c->peer, from, to); }
  /// Ends the link between a remote pid and a local one (either side asked).
  void drop_link(const std::string& peer, const term& remote, const term& local) {
    const auto* lp = local.get_if<remote_pid>();
    if (!lp) return;
    std::lock_guard lock{mu_};
    auto it = watches_.find(wire_index(*lp));
    if (it == watches_.end()) return;
    auto& links = it->second->links;
    for (auto l = links.begin(); l != links.end(); ++l) {
      if (l->peer == peer && l->other == remote) {
        links.erase(l);
        return;
      }
    }
  }

  void on_exit_signal(const std::shared_ptr<connection>& c, const term& from, const term& to, const term& reason,
                      bool from_link) {
    pid p = resolve(to);
    if (!p) return;
    if (from_link) on_unlink(c, from, to);  // the link is gone with its other end
    otpp::exit(p, reason_from_term(reason));
  }

  /// The watch on local process `p`, made on first use (under mu_): its
  /// monitor is enqueued under the lock, so whoever cancels it finds it
  /// whole and its exit cannot be handled before it is listed.
  watch& watch_locked(const pid& p) {
    const std::uint32_t index = export_index_locked(p) & wire_index_mask;  // wire_index of its wire pid
    auto it = watches_.find(index);
    if (it != watches_.end()) return *it->second;
    const remote_pid wire = wire_pid(index);
    auto owned = std::make_unique<watch>();
    watch* w = owned.get();
    w->core = this;
    w->index = index;
    w->target = p;
    w->local_pid = wire;
    w->slot = reply_slot<exit_reason>::make();
    w->id = next_monitor_ref.fetch_add(1, std::memory_order_relaxed);
    (void)w->slot->await(w);
    watches_.emplace(index, owned.release());
    pid_access::get(p)->enqueue_signal(make_node<detail::monitor_node>(w->id, nullptr, w->slot));
    return *w;
  }

  // -- housekeeping ------------------------------------------------------------------
  void housekeeping() {
    const std::int64_t now = now_ms();
    const std::int64_t tick = cfg_.tick.count();
    std::vector<std::shared_ptr<connection>> all, silent;
    std::vector<std::pair<std::string, term>> demonitors;
    {
      std::lock_guard lock{mu_};
      for (auto& [n, c] : conns_) all.push_back(c);
      // Calls whose callers gave up (timeout): their entries go now.
      for (auto it = outbound_.begin(); it != outbound_.end();) {
        if (!it->second.slot->open()) {
          demonitors.emplace_back(it->second.conn->peer,
                                  term::tuple(std::int64_t{op_demonitor_p}, proxy(), it->second.heads->target, make_ref(it->first)));
          it->second.slot->release();
          outbound_.erase(it++);
        } else {
          ++it;
        }
      }
      for (auto it = exported_.begin(); it != exported_.end();) {
        if (!it->second.alive()) {
          exported_ids_.erase(it->second.id());
          served_by_index_.erase(it->first);
          it = exported_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [peer, ctl] : demonitors) send_control(peer, ctl);
    for (auto& c : all) {
      bool up;
      {
        std::lock_guard l{c->mu};
        up = c->up && !c->closed;
      }
      if (!up) continue;
      if (now - c->last_in.load() > tick * 4) {
        silent.push_back(c);
        continue;
      }
      if (now - c->last_out.load() >= tick) {
        std::lock_guard l{c->mu};
        if (c->out.empty()) {
          static constexpr char zero[4] = {0, 0, 0, 0};
          (void)::send(c->fd, zero, 4, MSG_NOSIGNAL | MSG_DONTWAIT);
          c->last_out = now;
        }
      }
    }
    for (auto& c : silent) close_connection(c, "net tick timeout (nothing heard for 4 ticks)");
  }

  void cancel_leftovers() {
    {
      std::lock_guard lock{mu_};
      for (auto& [n, o] : outbound_) {
        o.slot->fail(exit_reason::noconnection());
        o.slot->release();
      }
      outbound_.clear();
      // Each watch still pending is resolved by its demonitor (or its
      // exit); each call by its server, or abandoned here.
      for (auto& [index, w] : watches_) w->cancel();
      inbound_.for_each([&](inbound_call* in) {
        in->cancelled = true;
        reply_slot_base* slot = in->slot();
        if (slot && slot->abandon()) {  // no answer will come: ours to free
          inbound_.erase(in);
          delete in;
        }  // else its answer is on its way, and frees it
      });
    }
    for (;;) {
      drain_completions();
      std::lock_guard lock{mu_};
      if (watches_.empty() && inbound_.empty()) break;
      std::this_thread::yield();  // a wake-up on its way from a worker
    }
  }

  // -- identities ---------------------------------------------------------------------
  [[nodiscard]] term proxy() const { return remote_pid{name_, 0, 0, creation_}; }
  [[nodiscard]] bool is_proxy(const remote_pid& p) const noexcept {
    return p.node == name_ && p.id == 0 && p.serial == 0;
  }

  remote_pid export_locked(const pid& p) { return wire_pid(export_index_locked(p)); }
  /// p's wire index, p exported first if it was not.
  std::uint32_t export_index_locked(const pid& p) {
    auto it = exported_ids_.find(p.id());
    if (it != exported_ids_.end()) return it->second;
    const std::uint32_t index = next_export_++;
    exported_ids_[p.id()] = index;
    exported_[index] = p;
    return index;
  }
  [[nodiscard]] remote_pid wire_pid(std::uint32_t index) const {
    // Erlang keeps 15 bits of a pid's number and 13 of its serial.
    return remote_pid{name_, index & 0x7fff, (index >> 15) & 0x1fff, creation_};
  }
  static constexpr std::uint32_t wire_index_mask = 0x0fffffff;  // what wire_index keeps of an export index
  static std::uint32_t wire_index(const remote_pid& r) noexcept { return (r.id & 0x7fff) | ((r.serial & 0x1fff) << 15); }
  pid lookup_pid_locked(const remote_pid& r) {
    if (r.node != name_) return {};
    auto it = exported_.find(wire_index(r));
    return it == exported_.end() ? pid{} : it->second;
  }
  /// A local process named by a remote: a served name or an exported pid.
  pid resolve(const term& t) {
    std::lock_guard lock{mu_};
    if (const auto* a = t.get_if<atom>()) {
      auto it = served_.find(a->name);
      return it == served_.end() ? pid{} : it->second.target;
    }
    if (const auto* r = t.get_if<remote_pid>()) return lookup_pid_locked(*r);
    return {};
  }
  void deliver_local(const remote_pid& to, const term& msg) {
    pid p = local_pid(to);
    if (p) otpp::send(p, msg);
  }

  /// A buffer of this thread's for building frames, emptied (thread-local:
  /// a caller that uses it across a suspension would find it reused). Out
  /// of line, as detail::tls: inlined into a handler that blocks in a loop,
  /// the thread-local's address could be taken once, before a call that
  /// moved the handler's fiber, and another thread's buffer written.
  [[gnu::noinline]] static std::string& scratch(int which) {
    thread_local std::string buffers[2];
    std::string& b = buffers[which];
    if (b.capacity() > 65536) std::string{}.swap(b);  // a large request's buffer is not kept
    b.clear();
    return b;
  }
  /// Writes at p a frame of `head` (from the frame's 112 up to a
  /// reference's words), reference n's words and `tail`, its length first;
  /// where it ends.
  char* put_frame(char* p, std::string_view head, std::uint64_t n, std::string_view tail) const noexcept {
    const auto be32 = [](char* at, std::uint32_t v) {
      for (int k = 0; k < 4; ++k) at[k] = static_cast<char>(v >> (24 - 8 * k));
    };
    be32(p, static_cast<std::uint32_t>(head.size() + 12 + tail.size()));
    p += 4;
    std::memcpy(p, head.data(), head.size());
    p += head.size();
    be32(p, static_cast<std::uint32_t>(n & 0x3ffff));
    be32(p + 4, static_cast<std::uint32_t>(n >> 18));
    be32(p + 8, ref_salt_);
    p += 12;
    if (!tail.empty()) std::memcpy(p, tail.data(), tail.size());
    return p + tail.size();
  }
  /// The heads of calls to `target` on connection c (under mu_): made once
  /// per served name or pid.
  std::shared_ptr<const call_heads> heads_locked(connection& c, const term& target) {
    const auto* name = target.get_if<atom>();
    if (name) {
      if (c.last_heads && c.last_heads->target.as<atom>().name == name->name) return c.last_heads;
      if (auto it = c.heads.find(name->name); it != c.heads.end()) {
        c.last_heads = it->second;
        return it->second;
      }
    }
    // A pid: on the connection's own node (the call went to its node).
    const auto* rp = target.get_if<remote_pid>();
    const std::array<std::uint32_t, 3> pid_key = rp ? std::array<std::uint32_t, 3>{rp->id, rp->serial, rp->creation}
                                                     : std::array<std::uint32_t, 3>{};
    if (rp && rp->node == c.peer) {
      if (auto it = c.pid_heads.find(pid_key); it != c.pid_heads.end()) return it->second;
    }
    auto h = std::make_shared<call_heads>();
    h->target = target;
    auto start = [](std::string& o) {
      etf::put8(o, 112);
      etf::put8(o, etf::version);
    };
    start(h->monitor);
    put_control(h->monitor, 4, op_monitor_p);
    h->monitor += proxy_wire_;
    encode_term_to(h->monitor, target);
    h->monitor += ref_head_;
    start(h->call);
    if (name) {
      put_control(h->call, 4, op_reg_send);
      h->call += proxy_wire_;
      etf::put_atom(h->call, "");
      etf::put_atom(h->call, name->name);
    } else {
      put_control(h->call, 3, op_send);
      etf::put_atom(h->call, "");
      encode_term_to(h->call, target);
    }
    etf::put8(h->call, etf::version);
    put_tuple(h->call, 3);
    etf::put_atom(h->call, "$gen_call");
    put_tuple(h->call, 2);
    h->call += proxy_wire_;
    h->call += ref_head_;
    start(h->demonitor);
    put_control(h->demonitor, 4, op_demonitor_p);
    h->demonitor += proxy_wire_;
    encode_term_to(h->demonitor, target);
    h->demonitor += ref_head_;
    // Bounded: past the bound they start again with the targets called now.
    if (name) {
      if (c.heads.size() >= max_cached_heads) c.heads.clear();
      c.heads.emplace(name->name, h);
      c.last_heads = h;
    } else if (rp && rp->node == c.peer) {
      if (c.pid_heads.size() >= max_cached_heads) c.pid_heads.clear();
      c.pid_heads.emplace(pid_key, h);
    }
    return h;
  }
  /// Served names (and pids) whose call heads a connection keeps.
  static constexpr std::size_t max_cached_heads = 256;

  /// Call `n`'s reference.
  [[nodiscard]] term make_ref(std::uint64_t n) const {
    return remote_ref{name_, creation_,
                      {static_cast<std::uint32_t>(n & 0x3ffff), static_cast<std::uint32_t>(n >> 18), ref_salt_}};
  }
  [[nodiscard]] std::optional<std::uint64_t> ref_number(const remote_ref* r) const {
    if (!r || r->node != name_ || r->words.size() != 3 || r->words[2] != ref_salt_) return std::nullopt;
    return (std::uint64_t{r->words[1]} << 18) | r->words[0];
  }

  static std::string make_frame(const term& control, const term* message = nullptr) {
    std::string f(4, '\0');
    f.push_back(static_cast<char>(112));
    f.push_back(static_cast<char>(etf::version));
    encode_term_to(f, control);
    if (message) {
      f.push_back(static_cast<char>(etf::version));
      encode_term_to(f, *message);
    }
    const auto len = static_cast<std::uint32_t>(f.size() - 4);
    for (int k = 0; k < 4; ++k) f[static_cast<std::size_t>(k)] = static_cast<char>(len >> (24 - 8 * k));
    return f;
  }

  node_config cfg_;
  std::string name_;
  std::string alive_;
  std::uint64_t flags_ = 0;
  std::uint32_t creation_ = 0;
  int port_ = 0;
  int listen_fd_ = -1, publish_fd_ = -1, epoll_ = -1, wake_fd_ = -1, stop_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::int64_t busy_poll_ns_ = 0;
  std::atomic<bool> io_hot_{false};  // the I/O thread is polling: writers leave output to it
  // While traffic flows and a worker spins idle, the workers poll the
  // connections (workers_poll); the I/O thread waits until their lease
  // lapses (a worker went off to run a long handler) or one parks.
  static constexpr std::uint32_t io_thread_polls = 0, workers_poll = 1;
  std::atomic<std::uint32_t> poll_mode_{io_thread_polls};
  std::atomic<std::int64_t> lease_until_{0};  // steady ns
  std::atomic<std::int64_t> traffic_ns_{0};   // the last frame in or out (steady ns)
  std::atomic<const void*> poller_thread_{nullptr};  // the worker polling now (its thread context)
  idle_poller poller_{&node_core::poll_idle, &node_core::worker_parks, this};
  bool polled_by_workers_ = false;
  std::mutex io_mu_;  // held by whoever polls (the I/O thread or a worker): what is marked "I/O thread"
  std::unique_ptr<char[]> read_buf_ = std::make_unique<char[]>(read_buf_size);
  spin_lock dirty_mu_;
  std::vector<std::shared_ptr<connection>> dirty_;
  std::atomic<std::uint64_t> next_ref_{1};
  std::uint32_t ref_salt_ = 0;
  std::string proxy_wire_;  // proxy()'s encoding
  std::string ref_head_;    // make_ref(n)'s encoding up to its three words

  // Held for a few dozen instructions per frame of a call, several times
  // per call: a spin lock, whose uncontended pair costs a tenth of
  // pthread's (callgrind put the node's locks at 11% of a served call).
  spin_lock mu_;
  std::map<std::string, std::shared_ptr<connection>> conns_;
  std::shared_ptr<connection> last_conn_;  // the one connection_for_locked found last, while in conns_
  std::map<std::string, served, std::less<>> served_;
  std::unordered_map<std::uint32_t, served> served_by_index_;  // by wire index: servers reachable by pid
  flat_hash_map<std::uint64_t, outbound> outbound_;  // by reference number
  std::unordered_map<std::uint64_t, std::uint32_t> exported_ids_;  // otpp pid id -> wire index
  std::unordered_map<std::uint32_t, pid> exported_;                // wire index -> process
  std::uint32_t next_export_ = 1;                                  // 0 is the call proxy
  std::unordered_map<std::uint32_t, watch*> watches_;           // by the target's wire index
  flat_hash_map<monitor_key, std::unique_ptr<remote_monitor>, monitor_key_hash> remote_monitors_;
  std::unordered_map<std::uint64_t, proc_monitor> proc_monitors_;  // by reference number
  inbound_list inbound_;
  std::map<std::string, std::vector<node_watcher>> node_watchers_;
  int connecting_ = 0;  // handshake threads still running
  std::condition_variable_any connectors_done_;  // with mu_

  std::mutex conn_mu_;
  std::condition_variable conn_cv_;

  std::mutex done_mu_;
  completion* done_ = nullptr;
  std::vector<std::pair<std::shared_ptr<connection>, int>> new_conns_;

  std::unordered_map<int, std::shared_ptr<connection>> by_fd_;  // I/O thread (and stop, after it)
  unsigned direct_polls_ = 0;  // I/O thread: polls that read the one connection without epoll
  static constexpr std::size_t read_buf_size = 65536;

  std::thread io_;
  std::thread acceptor_;
};

inline void completion::on_wake(slot_waker* w) noexcept {
  auto* self = static_cast<completion*>(w);
  self->core->post_completion(self);
}
/// A call's answer goes out from the thread that gave it (the server's
/// worker), once it is final: no hand-over to the I/O thread.
inline void inbound_call::on_answer(slot_waker* w) noexcept {
  std::unique_ptr<inbound_call> self{static_cast<inbound_call*>(w)};
  try {
    self->core->finish_inbound(*self);
  } catch (const std::exception& e) {
    log_rt(log_level::error, "otpp::node: answering a call from {} failed: {}", self->peer_name(), e.what());
  }
}
inline void inbound_call::complete(node_core& c) { c.finish_inbound(*this); }
inline std::string_view inbound_call::peer_name() const noexcept { return conn ? std::string_view{conn->peer} : std::string_view{}; }
inline void watch::complete(node_core& c) { c.finish_watch(*this); }

}  // namespace otpp::detail::dist

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
  /// After traffic, the I/O thread, or a worker with nothing to run, polls
  /// without sleeping this long: a reply within it is read at once instead
  /// of after a wake-up (tens of microseconds on a VM), and read on the
  /// worker that runs its process. 0: always sleep, and only the I/O thread
  /// reads.
  std::chrono::microseconds busy_poll{100};
};

/// A process registered by name on some node: {name, node}.
struct remote_name {
  std::string name;  ///< The registered (served) name.
  std::string node;  ///< The node, `name@host`.
};

/// What multi_call gathers: GenServer.multi_call's {replies, bad_nodes},
/// with the reason each bad node gave.
struct multi_call_result {
  std::vector<std::pair<std::string, term>> replies;           ///< Node and its server's reply, in the order asked.
  std::vector<std::pair<std::string, exit_reason>> bad_nodes;  ///< Node and why no reply came (noproc, noconnection, timeout, the server's exit).
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
  /// GenServer.multi_call: calls the server served (on a BEAM node,
  /// registered) as `name` on every node of `nodes` at once, this node
  /// included if listed, and waits for them all within one `timeout`.
  /// Blocks this thread; in a coroutine handler co_await async_multi_call.
  [[nodiscard]] multi_call_result multi_call(const std::vector<std::string>& nodes, std::string_view name,
                                             const term& request,
                                             std::chrono::steady_clock::duration timeout = default_call_timeout) {
    detail::check_timeout(timeout, "otpp::node::multi_call");
    const auto start = std::chrono::steady_clock::now();
    std::vector<pending_try_call<term>> calls = send_all(nodes, name, request, timeout);
    // This node's own server, called here while the others are out.
    std::optional<result<term>> here;
    if (listed_here(nodes)) {
      auto entry = core_->find_served(name);
      here = !entry || !entry->local_call ? result<term>{exit_reason::noproc()} : (*entry->local_call)(request, timeout);
    }
    multi_call_result out;
    for (std::size_t i = 0; i < calls.size(); ++i) {
      if (nodes[i] == this->name()) {
        gather(out, nodes[i], *here);
        continue;
      }
      const auto spent = std::chrono::steady_clock::now() - start;
      const auto left = timeout == infinity ? infinity : std::max(timeout - spent, std::chrono::steady_clock::duration::zero());
      // Past the one deadline, a call not in yet is given up (dropping it
      // cancels it): each call alone would wait its whole timeout from get().
      if (!calls[i].wait_for(left)) {
        out.bad_nodes.emplace_back(nodes[i], exit_reason::timeout());
        continue;
      }
      gather(out, nodes[i], calls[i].get());
    }
    return out;
  }
  /// multi_call for a coroutine handler: `co_await node.async_multi_call(...)`
  /// holds no worker while the calls are out. The calls go out now; the
  /// node must outlive the wait.
  [[nodiscard]] async<multi_call_result> async_multi_call(const std::vector<std::string>& nodes, std::string_view name,
                                                          const term& request,
                                                          std::chrono::steady_clock::duration timeout = default_call_timeout) {
    // Not a coroutine itself: what the caller passes, often temporaries in
    // its co_await expression, is read here, before this returns (see the
    // GCC 12 note in docs/semantics.md 1.3a), and the wait gets copies.
    std::vector<pending_try_call<term>> calls = send_all(nodes, name, request, timeout);
    std::optional<async<result<term>>> here;
    if (listed_here(nodes)) {
      auto entry = core_->find_served(name);
      if (entry && entry->local_async) here.emplace((*entry->local_async)(request, timeout));
    }
    return gather_all(nodes, std::move(calls), std::move(here), this->name());
  }
  /// GenServer.abcast: casts `message` to the server `name` on every node
  /// of `nodes` (no answer, no error; a node not reached drops it).
  void abcast(const std::vector<std::string>& nodes, std::string_view name, const term& message) {
    for (const std::string& n : nodes) {
      if (n != this->name()) {
        cast(remote_name{std::string{name}, n}, message);
      } else if (auto entry = core_->find_served(name); entry && entry->cast) {
        (*entry->cast)(message);  // this node's own server, reached here
      }
    }
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

  // Whether this node is among `nodes`: its own server is called here.
  [[nodiscard]] bool listed_here(const std::vector<std::string>& nodes) const {
    return std::find(nodes.begin(), nodes.end(), name()) != nodes.end();
  }
  std::vector<pending_try_call<term>> send_all(const std::vector<std::string>& nodes, std::string_view name,
                                               const term& request, std::chrono::steady_clock::duration timeout) {
    std::vector<pending_try_call<term>> calls;
    calls.reserve(nodes.size());
    for (const std::string& n : nodes) calls.push_back(async_try_call(remote_name{std::string{name}, n}, request, timeout));
    return calls;
  }
  static async<multi_call_result> gather_all(std::vector<std::string> nodes, std::vector<pending_try_call<term>> calls,
                                             std::optional<async<result<term>>> here, std::string self) {
    // This node's own server first (the others are out meanwhile); none
    // served here under the name: noproc, as from a remote node.
    result<term> mine = exit_reason::noproc();
    if (here) mine = co_await std::move(*here);
    std::vector<result<term>> results = co_await when_all(std::move(calls));
    multi_call_result out;
    for (std::size_t i = 0; i < results.size(); ++i) gather(out, nodes[i], nodes[i] == self ? mine : std::move(results[i]));
    co_return out;
  }
  static void gather(multi_call_result& out, const std::string& node, result<term> r) {
    if (r) {
      out.replies.emplace_back(node, std::move(*r));
    } else {
      out.bad_nodes.emplace_back(node, r.error());
    }
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
      entry.call = std::make_shared<const detail::dist::served::call_fn>(
          [s](term request) -> std::unique_ptr<detail::dist::inbound_call> {
            return std::make_unique<detail::dist::typed_inbound_call<R>>(
                detail::send_call<false>(s, std::move(request), detail::steady::duration::max()));
          });
      entry.local_call = std::make_shared<const detail::dist::served::local_call_fn>(
          [s](term request, std::chrono::steady_clock::duration timeout) -> result<term> {
            return as_term(otpp::try_call(s, std::move(request), timeout));
          });
      entry.local_async = std::make_shared<const detail::dist::served::local_async_fn>(
          [s](term request, std::chrono::steady_clock::duration timeout) { return call_here(s, std::move(request), timeout); });
    }
    if constexpr (handles_cast<Impl, term>) {
      entry.cast = std::make_shared<const detail::dist::served::cast_fn>([s](term message) { otpp::cast(s, std::move(message)); });
    }
    return entry;
  }
  // A served server's reply, as a remote caller gets it: a term ('ok' for a void reply).
  template <class R>
  static result<term> as_term(result<R> r) {
    if (!r) return r.error();
    if constexpr (std::is_void_v<R>) {
      return term{atom{"ok"}};
    } else if constexpr (std::is_same_v<R, term>) {
      return std::move(*r);
    } else {
      return to_term(std::move(*r));
    }
  }
  // Parameters by value: the coroutine keeps its own copies.
  template <class Impl>
  static async<result<term>> call_here(server<Impl> s, term request, std::chrono::steady_clock::duration timeout) {
    co_return as_term(co_await otpp::async_try_call(s, std::move(request), timeout));
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
  // A caller calls the same target many times in a row: the last label is
  // kept per thread, so a call formats and interns only on a change. Out of
  // line, as scratch: its thread-locals must be found afresh each call.
  [[gnu::noinline]] static std::string_view label(const remote_name& to) {
    thread_local std::string name, node;
    thread_local std::string_view last;
    if (last.empty() || to.name != name || to.node != node) {
      last = detail::dist::intern(fmt::format("{{{}, {}}}", to.name, to.node));
      name = to.name;
      node = to.node;
    }
    return last;
  }
  // Per node, not per pid: the interned labels stay few.
  [[gnu::noinline]] static std::string_view label(const remote_pid& to) {
    thread_local std::string node;
    thread_local std::string_view last;
    if (last.empty() || to.node != node) {
      last = detail::dist::intern(fmt::format("a pid on {}", to.node));
      node = to.node;
    }
    return last;
  }

  std::unique_ptr<detail::dist::node_core> core_;
};

}  // namespace otpp
