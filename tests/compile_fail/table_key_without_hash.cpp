// Must not compile: a set's key needs std::hash and ==; the error names the
// table's key concept, not the hash map deep inside.
#include <otpp/table.hpp>

struct point {
  int x;
  int y;
  bool operator==(const point&) const = default;
};

void misuse() { auto t = otpp::table<point, int>::create({}); }
