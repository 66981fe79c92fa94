#!/usr/bin/env bash
# Builds otpp in release mode, runs the example programs, then a quick benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
build=build/release
cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DOTPP_BUILD_TESTS=OFF \
  -DOTPP_BUILD_EXAMPLES=ON -DOTPP_BUILD_BENCHMARKS=ON >/dev/null
cmake --build $build -j"$(nproc)"
# Programs only: the glob also matches CMake's otpp_example_*.dir folders.
for ex in $build/examples/*/otpp_example_*; do
  [ -f "$ex" ] && [ -x "$ex" ] || continue
  echo "== $(basename "$ex")"
  "$ex"
done
echo "== otpp_bench --quick"
$build/benchmarks/otpp_bench --quick
