#!/usr/bin/env bash
# Builds otpp's tests and runs them. Usage: scripts/test.sh [plain|address|thread|clang]
#   plain   (default) optimised build, g++, header-only
#   address ASan + UBSan, linked with the compiled runtime
#   thread  TSan, linked with the compiled runtime
#   clang   clang++ at -O0, linked with the compiled runtime
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-plain}
extra=()
# Chromium for the observer's browser test, in the plain run.
case $mode in clang) bash scripts/deps.sh clang ;; plain) bash scripts/deps.sh chromium ;; *) bash scripts/deps.sh ;; esac
build=build/test-$mode
# Line tables only (-g1): stack traces still name file and line, and the
# tests build in two thirds of the time full debug information takes. TSan
# at -O1 builds in half the time of -O2 and finds the same races. The
# example programs are built and run by scripts/run_examples.sh; the test
# builds leave them out (each runs the demo, and the examples' tests).
san=""; flags="-O2 -g1 -DNDEBUG"; extra=(-DOTPP_EXAMPLE_PROGRAMS=OFF)
case $mode in
  plain) ;;
  # -O0: this run is for clang++'s front end and warnings, and a second
  # compiler's code; plain tests the -O2 code.
  clang) flags="-O0 -g1 -DNDEBUG"; extra+=(-DCMAKE_CXX_COMPILER=clang++ -DOTPP_TEST_COMPILED=ON) ;;
  # The runtime compiled once rather than in every test (plain covers the
  # header-only build): a quarter off each test's compile under ASan.
  address) san=address; flags="-O0 -g1"; extra+=(-DOTPP_TEST_COMPILED=ON) ;;
  # Likewise linked with the compiled runtime (built with TSan like the tests).
  thread) san=thread; flags="-O1 -g1 -DNDEBUG"; extra+=(-DOTPP_TEST_COMPILED=ON) ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" -DOTPP_SANITIZE=$san \
  -DOTPP_BUILD_EXAMPLES=ON -DOTPP_BUILD_BENCHMARKS=OFF -DOTPP_BUILD_TESTS=ON "${extra[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
run=(ctest --test-dir "$build" --output-on-failure -j2 --timeout 600)
if [ "$mode" = thread ] && command -v setarch >/dev/null; then
  # TSan's shadow mapping needs the classic address-space layout on newer kernels.
  setarch "$(uname -m)" -R "${run[@]}"
else
  "${run[@]}"
fi
