#pragma once
// How the runtime's out-of-line code is built, after {fmt}'s model.
//
// Header-only (the default, OTPP_HEADER_ONLY=1): the `-inl.hpp` files are
// included by the public headers and every function in them is `inline`.
// Compiled (OTPP_HEADER_ONLY=0, what the CMake target otpp::otpp_compiled
// sets): the `-inl.hpp` files are compiled once, into that library
// (src/otpp.cpp), and translation units only see declarations: a program's
// build pays for the scheduler, the timer service and process exit once.

#include "../version.hpp"

#ifndef OTPP_HEADER_ONLY
#define OTPP_HEADER_ONLY 1
#endif

// Marks a definition in an -inl.hpp file.
#if OTPP_HEADER_ONLY
#define OTPP_FUNC inline
#else
#define OTPP_FUNC
#endif
