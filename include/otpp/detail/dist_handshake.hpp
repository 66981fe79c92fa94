#pragma once
// The distribution protocol's set-up: epmd (register, look up) and the
// version-6 handshake (OTP 23+), spoken directly.
//
// Why not erl_interface's: ei announces no DFLAG_DIST_MONITOR, so a BEAM
// peer neither sends monitors to an ei node nor answers its monitors
// (measured: GenServer.call to an unserved name hung to its timeout instead
// of failing with noproc, and a callee's death never reached the caller);
// an ei node cannot be visible; and its calls block. These functions are
// blocking too, but each runs on a set-up thread with a deadline.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include <fmt/core.h>

#include "md5.hpp"

namespace otpp::detail::dist {

// Capability flags (erl_dist_protocol).
inline constexpr std::uint64_t dflag_published = 0x1;
inline constexpr std::uint64_t dflag_extended_references = 0x4;
inline constexpr std::uint64_t dflag_dist_monitor = 0x8;
inline constexpr std::uint64_t dflag_fun_tags = 0x10;
inline constexpr std::uint64_t dflag_dist_monitor_name = 0x20;
inline constexpr std::uint64_t dflag_new_fun_tags = 0x80;
inline constexpr std::uint64_t dflag_extended_pids_ports = 0x100;
inline constexpr std::uint64_t dflag_export_ptr_tag = 0x200;
inline constexpr std::uint64_t dflag_bit_binaries = 0x400;
inline constexpr std::uint64_t dflag_new_floats = 0x800;
inline constexpr std::uint64_t dflag_unicode_io = 0x1000;
inline constexpr std::uint64_t dflag_small_atom_tags = 0x4000;
inline constexpr std::uint64_t dflag_utf8_atoms = 0x10000;
inline constexpr std::uint64_t dflag_map_tag = 0x20000;
inline constexpr std::uint64_t dflag_big_creation = 0x40000;
inline constexpr std::uint64_t dflag_handshake_23 = 0x1000000;
inline constexpr std::uint64_t dflag_unlink_id = 0x2000000;
inline constexpr std::uint64_t dflag_mandatory_25_digest = 0x4000000;
inline constexpr std::uint64_t dflag_v4_nc = std::uint64_t{1} << 34;

/// What otpp announces: everything OTP 25/26 require, monitors by pid and
/// by name, unlink ids; no atom cache, no fragments (frames arrive whole).
inline constexpr std::uint64_t our_flags =
    dflag_extended_references | dflag_dist_monitor | dflag_fun_tags | dflag_dist_monitor_name | dflag_new_fun_tags |
    dflag_extended_pids_ports | dflag_export_ptr_tag | dflag_bit_binaries | dflag_new_floats | dflag_unicode_io |
    dflag_small_atom_tags | dflag_utf8_atoms | dflag_map_tag | dflag_big_creation | dflag_handshake_23 |
    dflag_unlink_id | dflag_mandatory_25_digest | dflag_v4_nc;

/// What a peer must announce for otpp to read what it sends.
inline constexpr std::uint64_t required_flags = dflag_extended_references | dflag_extended_pids_ports | dflag_utf8_atoms |
                                                dflag_new_floats | dflag_map_tag | dflag_big_creation | dflag_handshake_23;

using clock = std::chrono::steady_clock;

inline int ms_left(clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

inline bool write_all(int fd, std::string_view data, clock::time_point deadline) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, ms_left(deadline)) <= 0) return false;
      continue;
    }
    return false;
  }
  return true;
}

inline bool read_exact(int fd, char* out, std::size_t n, clock::time_point deadline) {
  std::size_t done = 0;
  while (done < n) {
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, ms_left(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    const ssize_t r = ::recv(fd, out + done, n - done, MSG_DONTWAIT);
    if (r > 0) {
      done += static_cast<std::size_t>(r);
    } else if (r == 0) {
      return false;
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      return false;
    }
  }
  return true;
}

inline void put16(std::string& o, std::uint16_t v) {
  o.push_back(static_cast<char>(v >> 8));
  o.push_back(static_cast<char>(v));
}
inline void put32(std::string& o, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) o.push_back(static_cast<char>(v >> s));
}
inline std::uint32_t get32(std::string_view s, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t k = 0; k < 4; ++k) v = (v << 8) | static_cast<std::uint8_t>(s[at + k]);
  return v;
}
inline std::uint16_t get16(std::string_view s, std::size_t at) {
  return static_cast<std::uint16_t>((static_cast<std::uint8_t>(s[at]) << 8) | static_cast<std::uint8_t>(s[at + 1]));
}

/// A TCP connection to host:port, or -1 (errno set) by the deadline.
inline int tcp_connect(const std::string& host, std::uint16_t port, clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) {
    errno = EHOSTUNREACH;
    return -1;
  }
  sockaddr_in addr = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  ::freeaddrinfo(res);
  addr.sin_port = htons(port);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      const int e = errno;
      ::close(fd);
      errno = e;
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (::poll(&p, 1, ms_left(deadline)) <= 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      ::close(fd);
      errno = err ? err : ETIMEDOUT;
      return -1;
    }
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

inline std::uint16_t epmd_port() {
  if (const char* p = std::getenv("ERL_EPMD_PORT")) {
    const int v = std::atoi(p);
    if (v > 0 && v < 65536) return static_cast<std::uint16_t>(v);
  }
  return 4369;
}

/// Registers `alive` at `port` with the local epmd. The returned socket
/// must stay open: closing it unregisters. Sets `creation`.
inline int epmd_register(const std::string& alive, std::uint16_t port, bool hidden, std::uint32_t& creation,
                         std::string& error, clock::time_point deadline) {
  const int fd = tcp_connect("127.0.0.1", epmd_port(), deadline);
  if (fd < 0) {
    error = fmt::format("epmd does not answer on 127.0.0.1:{}: {}", epmd_port(), std::strerror(errno));
    return -1;
  }
  std::string body;
  body.push_back(static_cast<char>(120));  // ALIVE2_REQ
  put16(body, port);
  body.push_back(static_cast<char>(hidden ? 72 : 77));
  body.push_back(0);  // TCP/IPv4
  put16(body, 6);     // highest version
  put16(body, 5);     // lowest version
  put16(body, static_cast<std::uint16_t>(alive.size()));
  body += alive;
  put16(body, 0);
  std::string req;
  put16(req, static_cast<std::uint16_t>(body.size()));
  req += body;
  char head[2];
  if (!write_all(fd, req, deadline) || !read_exact(fd, head, 2, deadline)) {
    ::close(fd);
    error = "epmd closed the registration";
    return -1;
  }
  const auto tag = static_cast<std::uint8_t>(head[0]);
  if (head[1] != 0) {
    ::close(fd);
    error = fmt::format("epmd refused the name '{}' (taken?)", alive);
    return -1;
  }
  if (tag == 118) {  // ALIVE2_X_RESP: a 32-bit creation
    char c[4];
    if (!read_exact(fd, c, 4, deadline)) {
      ::close(fd);
      error = "epmd's answer was cut short";
      return -1;
    }
    creation = get32(std::string_view{c, 4}, 0);
  } else if (tag == 121) {  // ALIVE2_RESP: a 16-bit one
    char c[2];
    if (!read_exact(fd, c, 2, deadline)) {
      ::close(fd);
      error = "epmd's answer was cut short";
      return -1;
    }
    creation = get16(std::string_view{c, 2}, 0);
  } else {
    ::close(fd);
    error = fmt::format("epmd answered with tag {}", static_cast<int>(tag));
    return -1;
  }
  return fd;
}

/// The port `alive` listens on at `host`, asked of that host's epmd.
inline std::optional<std::uint16_t> epmd_lookup(const std::string& host, const std::string& alive, std::string& error,
                                                clock::time_point deadline) {
  const int fd = tcp_connect(host, epmd_port(), deadline);
  if (fd < 0) {
    error = fmt::format("no epmd at {}: {}", host, std::strerror(errno));
    return std::nullopt;
  }
  std::string req;
  put16(req, static_cast<std::uint16_t>(alive.size() + 1));
  req.push_back(static_cast<char>(122));  // PORT_PLEASE2_REQ
  req += alive;
  char head[2];
  std::optional<std::uint16_t> port;
  if (write_all(fd, req, deadline) && read_exact(fd, head, 2, deadline) && static_cast<std::uint8_t>(head[0]) == 119) {
    if (head[1] != 0) {
      error = fmt::format("epmd at {} knows no node '{}'", host, alive);
    } else {
      char rest[8];
      if (read_exact(fd, rest, 8, deadline)) {
        const std::string_view r{rest, 8};
        const std::uint16_t highest = get16(r, 4);
        if (highest < 6) {
          error = fmt::format("node {}@{} speaks distribution version {} (otpp needs 6: OTP 23 or later)", alive, host, highest);
        } else {
          port = get16(r, 0);
        }
      } else {
        error = "epmd's answer was cut short";
      }
    }
  } else if (error.empty()) {
    error = fmt::format("epmd at {} did not answer", host);
  }
  ::close(fd);
  return port;
}

struct handshake_result {
  std::string peer;
  std::uint64_t flags = 0;
  std::uint32_t creation = 0;
  std::string error;  // empty on success
};

inline bool send_msg(int fd, std::string_view body, clock::time_point deadline) {
  std::string m;
  put16(m, static_cast<std::uint16_t>(body.size()));
  m += body;
  return write_all(fd, m, deadline);
}
inline std::optional<std::string> recv_msg(int fd, clock::time_point deadline) {
  char h[2];
  if (!read_exact(fd, h, 2, deadline)) return std::nullopt;
  const std::uint16_t len = get16(std::string_view{h, 2}, 0);
  std::string body(len, '\0');
  if (len && !read_exact(fd, body.data(), len, deadline)) return std::nullopt;
  return body;
}

inline std::array<std::uint8_t, 16> digest(std::uint32_t challenge, const std::string& cookie) {
  return md5(cookie + std::to_string(challenge));
}
inline bool same_digest(std::string_view a, const std::array<std::uint8_t, 16>& b) {
  if (a.size() != 16) return false;
  unsigned diff = 0;  // in constant time
  for (std::size_t k = 0; k < 16; ++k) diff |= static_cast<unsigned>(static_cast<std::uint8_t>(a[k]) ^ b[k]);
  return diff == 0;
}
inline std::uint32_t new_challenge() {
  static thread_local std::random_device rd;
  return rd();
}

/// 'N' message: flags, (challenge), creation, name.
inline std::string name_message(char tag, std::uint64_t flags, std::optional<std::uint32_t> challenge,
                                std::uint32_t creation, const std::string& name) {
  std::string m;
  m.push_back(tag);
  put32(m, static_cast<std::uint32_t>(flags >> 32));
  put32(m, static_cast<std::uint32_t>(flags));
  if (challenge) put32(m, *challenge);
  put32(m, creation);
  put16(m, static_cast<std::uint16_t>(name.size()));
  m += name;
  return m;
}

/// Parses an 'N' message (with a challenge or not).
inline bool parse_name_message(std::string_view m, bool with_challenge, handshake_result& r, std::uint32_t* challenge) {
  const std::size_t fixed = 1 + 8 + (with_challenge ? 4 : 0) + 4 + 2;
  if (m.size() < fixed || m[0] != 'N') return false;
  r.flags = (std::uint64_t{get32(m, 1)} << 32) | get32(m, 5);
  std::size_t at = 9;
  if (with_challenge) {
    *challenge = get32(m, at);
    at += 4;
  }
  r.creation = get32(m, at);
  const std::uint16_t nlen = get16(m, at + 4);
  if (m.size() != fixed + nlen) return false;
  r.peer.assign(m.substr(fixed, nlen));
  return r.peer.find('@') != std::string::npos;
}

/// The initiating side: we connected to `peer`.
inline handshake_result handshake_out(int fd, const std::string& self, std::uint64_t flags, std::uint32_t creation,
                                      const std::string& cookie, const std::string& peer, clock::time_point deadline) {
  handshake_result r;
  auto fail = [&](std::string why) {
    r.error = std::move(why);
    return r;
  };
  if (!send_msg(fd, name_message('N', flags, std::nullopt, creation, self), deadline)) return fail("could not send our name");
  auto status = recv_msg(fd, deadline);
  if (!status || status->empty() || (*status)[0] != 's') return fail("no status from the peer");
  const std::string_view st = std::string_view{*status}.substr(1);
  if (st == "alive") {
    // The peer still has a connection to us up: this attempt is the one we
    // want (we are connecting), so that one is dead and this replaces it.
    if (!send_msg(fd, "strue", deadline)) return fail("could not answer the peer's 'alive'");
  } else if (st != "ok" && st != "ok_simultaneous") {
    return fail(st == "nok" ? fmt::format("the peer already has a connection to us ({})", st)
                            : fmt::format("refused by the peer: {}", st));
  }
  auto challenge_msg = recv_msg(fd, deadline);
  std::uint32_t their_challenge = 0;
  if (!challenge_msg || !parse_name_message(*challenge_msg, true, r, &their_challenge))
    return fail("no challenge from the peer (not an OTP 23+ node?)");
  if (r.peer != peer) return fail(fmt::format("the peer calls itself {}", r.peer));
  if ((r.flags & required_flags) != required_flags) return fail(fmt::format("the peer lacks flags we need ({:#x})", r.flags));
  const std::uint32_t ours = new_challenge();
  std::string reply{"r"};
  put32(reply, ours);
  const auto d = digest(their_challenge, cookie);
  reply.append(reinterpret_cast<const char*>(d.data()), d.size());
  if (!send_msg(fd, reply, deadline)) return fail("could not answer the challenge");
  auto ack = recv_msg(fd, deadline);
  if (!ack) return fail("the peer closed the connection at the challenge: a wrong cookie?");
  if (ack->size() != 17 || (*ack)[0] != 'a' || !same_digest(std::string_view{*ack}.substr(1), digest(ours, cookie)))
    return fail("the peer's answer to our challenge is wrong: a wrong cookie");
  return r;
}

/// The accepting side. `status_for(peer)` says "ok", "ok_simultaneous",
/// "nok" (we keep our own connection to it) or "alive" (we have one up:
/// the peer says whether this one replaces it).
template <class StatusFor>
handshake_result handshake_in(int fd, const std::string& self, std::uint64_t flags, std::uint32_t creation,
                              const std::string& cookie, StatusFor&& status_for, clock::time_point deadline) {
  handshake_result r;
  auto fail = [&](std::string why) {
    r.error = std::move(why);
    return r;
  };
  auto name = recv_msg(fd, deadline);
  if (!name || name->empty()) return fail("no name from the connecting side");
  if ((*name)[0] == 'n') return fail("the connecting side speaks the old handshake (otpp needs OTP 23 or later)");
  if (!parse_name_message(*name, false, r, nullptr)) return fail("a malformed name message");
  if ((r.flags & required_flags) != required_flags) {
    (void)send_msg(fd, "snot_allowed", deadline);
    return fail(fmt::format("{} lacks flags we need ({:#x})", r.peer, r.flags));
  }
  const std::string status = status_for(r.peer);
  if (!send_msg(fd, "s" + status, deadline)) return fail("could not send the status");
  if (status == "alive") {
    // We have a connection to it up; the peer says whether that one is dead
    // (true: go on, this one replaces it) or this attempt is not wanted.
    auto answer = recv_msg(fd, deadline);
    if (!answer || (*answer != "strue" && *answer != "sfalse"))
      return fail(fmt::format("{} did not answer 'alive' with true or false", r.peer));
    if (*answer == "sfalse") return fail(fmt::format("{} keeps the connection we have", r.peer));
  } else if (status != "ok" && status != "ok_simultaneous") {
    return fail(fmt::format("{}: {}", r.peer, status));
  }
  const std::uint32_t ours = new_challenge();
  if (!send_msg(fd, name_message('N', flags, ours, creation, self), deadline)) return fail("could not send the challenge");
  auto reply = recv_msg(fd, deadline);
  if (!reply || reply->size() != 21 || (*reply)[0] != 'r') return fail(fmt::format("no challenge reply from {}", r.peer));
  if (!same_digest(std::string_view{*reply}.substr(5), digest(ours, cookie)))
    return fail(fmt::format("{} answered our challenge wrongly: a wrong cookie", r.peer));
  const std::uint32_t theirs = get32(*reply, 1);
  std::string ack{"a"};
  const auto d = digest(theirs, cookie);
  ack.append(reinterpret_cast<const char*>(d.data()), d.size());
  if (!send_msg(fd, ack, deadline)) return fail("could not send the acknowledgement");
  return r;
}

}  // namespace otpp::detail::dist
