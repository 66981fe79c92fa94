#pragma once
// A small HTTP/1.1 server for the observer, on standalone asio (Debian's
// libasio-dev, header-only like otpp). One thread runs the io_context, so a
// request never occupies a worker; each connection carries one request and
// is closed after the answer. Reading is bounded: the head's size, the
// body's size and a deadline for the whole exchange, so that a slow or
// hostile client costs one socket and one timer until it is cut off. A
// malformed request gets its 4xx answer and nothing else happens.

#include <asio/buffer.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace otpp::detail::http {

/// A parsed request: header names lower-cased, the query decoded.
struct request {
  std::string method;
  std::string path;  ///< Decoded, without the query.
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  /// A header's value, or empty when absent.
  [[nodiscard]] std::string_view header(std::string_view lower_name) const noexcept {
    for (const auto& [k, v] : headers)
      if (k == lower_name) return v;
    return {};
  }
  /// A query parameter's value, or nothing when absent.
  [[nodiscard]] std::optional<std::string_view> param(std::string_view name) const noexcept {
    for (const auto& [k, v] : query)
      if (k == name) return std::string_view{v};
    return std::nullopt;
  }
};

/// What a handler answers.
struct response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

inline const char* reason_phrase(int status) noexcept {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

/// The text of a response, closing the connection after it.
inline std::string serialize(const response& r) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) + "\r\n";
  out += "Content-Type: " + r.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  // The page and its data are never to be cached or framed by another site.
  out += "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n";
  out += "Connection: close\r\n\r\n";
  out += r.body;
  return out;
}

/// Decodes %XX escapes (and '+' as a space in a query); nothing on a bad escape.
inline std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex(s[i + 1]);
      const int lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

/// A request head parsed, or the status that answers a bad one.
struct parsed {
  std::optional<request> req;
  int status = 400;
  std::string error;
  std::size_t content_length = 0;
};

/// Parses a request head: the request line and the headers, up to (not
/// including) the blank line that ends them.
inline parsed parse_head(std::string_view head, std::size_t max_body) {
  parsed out;
  auto fail = [&](int status, std::string why) {
    out.req.reset();
    out.status = status;
    out.error = std::move(why);
    return out;
  };
  auto next_line = [&](std::string_view& rest) -> std::optional<std::string_view> {
    const auto eol = rest.find("\r\n");
    if (eol == std::string_view::npos) {
      if (rest.empty()) return std::nullopt;
      std::string_view line = rest;
      rest = {};
      return line;
    }
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    return line;
  };
  std::string_view rest = head;
  const auto first = next_line(rest);
  if (!first || first->empty()) return fail(400, "empty request line");
  const std::string_view line = *first;
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(400, "the request line is not 'METHOD target HTTP/1.x'");
  request r;
  r.method = std::string{line.substr(0, sp1)};
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (r.method.empty() || !std::all_of(r.method.begin(), r.method.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
    return fail(400, "bad method");
  if (version.substr(0, 5) != "HTTP/") return fail(400, "bad protocol");
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return fail(505, "only HTTP/1.0 and HTTP/1.1 are spoken here");
  if (target.empty() || target.front() != '/') return fail(400, "the target must be a path");
  const auto q = target.find('?');
  auto path = percent_decode(target.substr(0, q), false);
  if (!path) return fail(400, "bad escape in the path");
  r.path = std::move(*path);
  if (q != std::string_view::npos) {
    std::string_view qs = target.substr(q + 1);
    while (!qs.empty()) {
      const auto amp = qs.find('&');
      const std::string_view kv = qs.substr(0, amp);
      qs = amp == std::string_view::npos ? std::string_view{} : qs.substr(amp + 1);
      if (kv.empty()) continue;
      const auto eq = kv.find('=');
      auto k = percent_decode(kv.substr(0, eq), true);
      auto v = percent_decode(eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1), true);
      if (!k || !v) return fail(400, "bad escape in the query");
      r.query.emplace_back(std::move(*k), std::move(*v));
    }
  }
  while (auto h = next_line(rest)) {
    if (h->empty()) break;
    const auto colon = h->find(':');
    if (colon == std::string_view::npos || colon == 0) return fail(400, "a header line without a name");
    std::string name{h->substr(0, colon)};
    for (char c : name)
      if (c <= ' ' || c >= 127) return fail(400, "a header name with a space or control character");
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string_view value = h->substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    r.headers.emplace_back(std::move(name), std::string{value});
  }
  if (!r.header("transfer-encoding").empty()) return fail(501, "chunked bodies are not accepted");
  if (const std::string_view cl = r.header("content-length"); !cl.empty()) {
    std::size_t n = 0;
    for (char c : cl) {
      if (c < '0' || c > '9') return fail(400, "bad Content-Length");
      if (n > max_body) return fail(413, "the body is too large");
      n = n * 10 + static_cast<std::size_t>(c - '0');
    }
    if (n > max_body) return fail(413, "the body is too large");
    out.content_length = n;
  }
  out.req = std::move(r);
  out.status = 200;
  return out;
}

/// Bounds on what one client may send.
struct limits {
  std::size_t max_head = 16 * 1024;
  std::size_t max_body = 16 * 1024;
  std::chrono::milliseconds deadline{10'000};  ///< For the whole exchange, read and write.
};

/// Listens on one address and, once started, answers each request with
/// `handler` on a thread of its own; stopped and joined by the destructor.
class server {
 public:
  using handler_fn = std::function<response(const request&)>;

  /// Binds and listens (connections wait in the backlog until start).
  /// Throws std::runtime_error naming the address when it cannot (a bad
  /// address, a port in use, no permission).
  server(const std::string& address, std::uint16_t port, handler_fn handler, limits l = {})
      : acceptor_{io_}, handler_{std::move(handler)}, limits_{l} {
    try {
      const asio::ip::tcp::endpoint ep{asio::ip::make_address(address), port};
      acceptor_.open(ep.protocol());
      acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
      acceptor_.bind(ep);
      acceptor_.listen();
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot listen on " + address + ":" + std::to_string(port) + ": " + e.what());
    }
  }
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server() { stop(); }

  /// The port listened on (the one the system chose, when asked for 0).
  [[nodiscard]] std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  /// Starts answering, on the server's own thread. Once only.
  void start() {
    accept();
    thread_ = std::thread{[this] { io_.run(); }};
  }

  /// Stops answering and joins the thread; a request being answered is cut off.
  void stop() noexcept {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct connection : std::enable_shared_from_this<connection> {
    asio::ip::tcp::socket socket;
    asio::steady_timer timer;
    asio::streambuf in;
    std::string out;
    server* owner;
    std::size_t content_length = 0;
    std::optional<request> req;

    connection(asio::ip::tcp::socket s, server* o)
        : socket{std::move(s)}, timer{socket.get_executor()}, in{o->limits_.max_head + o->limits_.max_body}, owner{o} {}

    void start() {
      auto self = shared_from_this();
      timer.expires_after(owner->limits_.deadline);
      timer.async_wait([self](std::error_code ec) {
        if (!ec) self->close();  // too slow: cut off
      });
      asio::async_read_until(socket, in, "\r\n\r\n", [self](std::error_code ec, std::size_t n) { self->on_head(ec, n); });
    }

    void on_head(std::error_code ec, std::size_t n) {
      if (ec) {
        if (ec == asio::error::not_found) answer({431, "text/plain", "request head too large\n"});
        else close();
        return;
      }
      if (n > owner->limits_.max_head) {
        answer({431, "text/plain", "request head too large\n"});
        return;
      }
      const std::string head{asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + static_cast<std::ptrdiff_t>(n - 2)};
      in.consume(n);
      parsed p = parse_head(head, owner->limits_.max_body);
      if (!p.req) {
        answer({p.status, "text/plain", p.error + "\n"});
        return;
      }
      req = std::move(p.req);
      content_length = p.content_length;
      if (in.size() >= content_length) {
        on_body({}, 0);
        return;
      }
      auto self = shared_from_this();
      asio::async_read(socket, in, asio::transfer_exactly(content_length - in.size()),
                       [self](std::error_code e, std::size_t m) { self->on_body(e, m); });
    }

    void on_body(std::error_code ec, std::size_t) {
      if (ec) {
        close();
        return;
      }
      req->body.assign(asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + static_cast<std::ptrdiff_t>(content_length));
      response r;
      try {
        r = owner->handler_(*req);
      } catch (const std::exception& e) {
        r = {500, "text/plain", std::string{"internal error: "} + e.what() + "\n"};
      } catch (...) {
        r = {500, "text/plain", "internal error\n"};
      }
      answer(r);
    }

    void answer(const response& r) {
      out = serialize(r);
      auto self = shared_from_this();
      asio::async_write(socket, asio::buffer(out), [self](std::error_code, std::size_t) { self->close(); });
    }

    void close() {
      std::error_code ignored;
      socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
      timer.cancel();
    }
  };

  void accept() {
    acceptor_.async_accept([this](std::error_code ec, asio::ip::tcp::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        std::make_shared<connection>(std::move(s), this)->start();
        accept();
        return;
      }
      // Out of descriptors, say: the listener lives on, and tries again a
      // little later rather than spinning on the error.
      retry_.expires_after(std::chrono::milliseconds{50});
      retry_.async_wait([this](std::error_code e) {
        if (!e) accept();
      });
    });
  }

  asio::io_context io_{1};
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer retry_{io_};
  handler_fn handler_;
  limits limits_;
  std::thread thread_;
};

}  // namespace otpp::detail::http
