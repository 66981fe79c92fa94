#!/usr/bin/env bash
# Builds a tiny consumer against the installed package (find_package) and one
# that vendors the source tree (add_subdirectory), and runs both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
root=$PWD
work=build/packaging
rm -rf "$work"
cmake -S . -B $work/otpp -DOTPP_BUILD_TESTS=OFF -DOTPP_BUILD_EXAMPLES=OFF -DOTPP_BUILD_BENCHMARKS=OFF >/dev/null
cmake --install $work/otpp --prefix "$root/$work/prefix" >/dev/null
cmake -S tests/packaging/find_package -B $work/fp -DCMAKE_PREFIX_PATH="$root/$work/prefix" >/dev/null
cmake --build $work/fp -j2 >/dev/null
$work/fp/consumer
cmake -S tests/packaging/add_subdirectory -B $work/as -DOTPP_SOURCE_DIR="$root" >/dev/null
cmake --build $work/as -j2 >/dev/null
$work/as/consumer
echo "packaging: ok"
