#pragma once
// otpp's version, for code that must tell releases apart at compile time.
// Kept in step with project(VERSION) in CMakeLists.txt (a packaging test checks).

#define OTPP_VERSION_MAJOR 0
#define OTPP_VERSION_MINOR 2
#define OTPP_VERSION_PATCH 0
/// MAJOR * 10000 + MINOR * 100 + PATCH, for #if comparisons.
#define OTPP_VERSION (OTPP_VERSION_MAJOR * 10000 + OTPP_VERSION_MINOR * 100 + OTPP_VERSION_PATCH)
