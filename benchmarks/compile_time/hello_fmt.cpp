// The floor: a {fmt} hello world.
#include <fmt/core.h>
int main() { fmt::print("hello {}\n", 1); }
