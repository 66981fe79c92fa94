// A search front end over three back ends: one fast, one slow, one dead.
// Every search answers within the front end's timeout, with the results of
// the back ends that made it.
#include <chrono>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <otpp/otpp.hpp>

#include "search_front.hpp"

int main() {
  using namespace std::chrono_literals;
  using examples::search_backend;
  using examples::search_front;

  auto fast = otpp::start<search_backend>(
                  "fast", std::map<std::string, std::vector<std::string>>{{"otp", {"doc1", "doc2"}}, {"beam", {"doc3"}}})
                  .value();
  auto slow = otpp::start<search_backend>("slow", std::map<std::string, std::vector<std::string>>{{"otp", {"doc9"}}}, 200ms)
                  .value();
  auto dead = otpp::start<search_backend>("dead", std::map<std::string, std::vector<std::string>>{}).value();
  otpp::stop(dead);

  auto front = otpp::start<search_front>(std::vector<otpp::server<search_backend>>{fast, slow, dead}, 50ms).value();
  for (const char* word : {"otp", "beam"}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = otpp::call(front, search_front::search{word});
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("search {:5} -> {} in {} ms{}\n", word, r.hits, ms, r.partial() ? " (partial)" : "");
    for (const auto& [i, why] : r.failed) fmt::print("  back end {} did not answer: {}\n", i, why);
  }
  otpp::stop(front);
  otpp::stop(slow);
  otpp::stop(fast);
  return 0;
}
