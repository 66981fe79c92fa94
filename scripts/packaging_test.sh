#!/usr/bin/env bash
# Builds consumers against the installed package (find_package, pkg-config)
# and against the vendored source tree (add_subdirectory), header-only and
# with the compiled runtime, with strict warnings, and runs them. A vendored
# otpp must not install its own files into the consumer's prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh pkg-config
root=$PWD
work=build/packaging
rm -rf "$work"
cmake -S . -B $work/otpp -DOTPP_BUILD_TESTS=OFF -DOTPP_BUILD_EXAMPLES=OFF -DOTPP_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build $work/otpp -j2 >/dev/null
cmake --install $work/otpp --prefix "$root/$work/prefix" >/dev/null
cmake -S tests/packaging/find_package -B $work/fp -DCMAKE_PREFIX_PATH="$root/$work/prefix" >/dev/null
cmake --build $work/fp -j2 >/dev/null
$work/fp/consumer
$work/fp/consumer_compiled
# pkg-config, header-only, as a Makefile user would build it.
export PKG_CONFIG_PATH="$root/$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
g++ tests/packaging/consumer.cpp -I"$root/$work/prefix/include/otpp/examples/counter" \
  $(pkg-config --cflags --libs otpp) -o $work/pc_consumer
$work/pc_consumer
cmake -S tests/packaging/add_subdirectory -B $work/as -DOTPP_SOURCE_DIR="$root" >/dev/null
cmake --build $work/as -j2 >/dev/null
$work/as/consumer
$work/as/consumer_compiled
cmake --install $work/as --prefix "$root/$work/as_prefix" >/dev/null
if [ -e "$work/as_prefix/include/otpp" ] || [ -e "$work/as_prefix/share/otpp" ]; then
  echo "packaging: a vendored otpp installed its files into the consumer's prefix" >&2
  exit 1
fi
echo "packaging: ok"
