#pragma once
// Catch2 2.x (Debian bookworm) or 3.x, whichever is installed.
#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_test_macros.hpp>
#define OTPP_CATCH3 1
#else
#include <catch2/catch.hpp>
#endif
