#pragma once
// A search front end that queries several back ends at once and answers
// with what arrived in time: the fan-out a GenServer does with Task.async +
// Task.yield_many, here a coroutine handler with async_try_call + when_all.
//
//   auto front = otpp::start_link<examples::search_front>(backends, 50ms).value();
//   auto r = otpp::call(front, examples::search_front::search{"otp"});
//   // r.hits from every back end that answered; r.failed names the others
//
// Each back end gets the same timeout, so one bound covers the whole
// fan-out; a slow or dead back end costs its share of the results, never
// the answer. While the front end waits it holds no thread, and other
// searches queue behind this one (a handler waits for one thing at a time:
// run several front ends, or a pool, for parallel searches).

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <otpp/async_call.hpp>
#include <otpp/gen_server.hpp>

namespace examples {

/// A toy back end: a word index answering after `latency` (on the runtime's
/// clock, without holding a thread).
class search_backend : public otpp::gen_server<search_backend> {
 public:
  /// The documents containing `word`, as "backend:doc".
  struct query {
    std::string word;
  };

  search_backend(std::string name, std::map<std::string, std::vector<std::string>> index,
                 std::chrono::milliseconds latency = {})
      : name_{std::move(name)}, index_{std::move(index)}, latency_{latency} {}

  otpp::async<std::vector<std::string>> handle_call(query q) {
    if (latency_ > std::chrono::milliseconds::zero()) co_await otpp::sleep_for(latency_);
    std::vector<std::string> hits;
    if (auto it = index_.find(q.word); it != index_.end())
      for (const auto& doc : it->second) hits.push_back(name_ + ":" + doc);
    co_return hits;
  }

 private:
  std::string name_;
  std::map<std::string, std::vector<std::string>> index_;
  std::chrono::milliseconds latency_;
};

/// The front end: one search fans out to every back end.
class search_front : public otpp::gen_server<search_front> {
 public:
  /// Search every back end for `word`.
  struct search {
    std::string word;
  };
  /// What a search found, and which back ends did not answer (and why).
  struct response {
    std::vector<std::string> hits;
    std::vector<std::pair<std::size_t, std::string>> failed;  ///< back end index, reason
    /// Some back end did not answer in time.
    [[nodiscard]] bool partial() const noexcept { return !failed.empty(); }
  };

  search_front(std::vector<otpp::server<search_backend>> backends, std::chrono::milliseconds timeout)
      : backends_{std::move(backends)}, timeout_{timeout} {}

  otpp::async<response> handle_call(search s) {
    std::vector<otpp::pending_try_call<std::vector<std::string>>> calls;
    calls.reserve(backends_.size());
    for (const auto& b : backends_) calls.push_back(otpp::async_try_call(b, search_backend::query{s.word}, timeout_));
    auto answers = co_await otpp::when_all(std::move(calls));  // as long as the slowest, at most timeout_
    response r;
    for (std::size_t i = 0; i < answers.size(); ++i) {
      if (answers[i]) {
        r.hits.insert(r.hits.end(), answers[i]->begin(), answers[i]->end());
      } else {
        r.failed.emplace_back(i, answers[i].error().to_string());
      }
    }
    co_return r;
  }

 private:
  std::vector<otpp::server<search_backend>> backends_;
  std::chrono::milliseconds timeout_;
};

}  // namespace examples
