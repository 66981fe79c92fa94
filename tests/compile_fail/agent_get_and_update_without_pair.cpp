// Must not compile: get_and_update's function returns {answer, new value};
// one returning the answer alone is refused at the call, naming the concept.
#include <otpp/agent.hpp>

int misuse(otpp::agent<int> a) { return a.get_and_update([](const int& v) { return v + 1; }); }
