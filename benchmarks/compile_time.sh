#!/usr/bin/env bash
# Prints what otpp costs to compile: CPU seconds (user+sys, best of 3) for
# one translation unit at -O2, next to a {fmt} hello world.
#
#   bash benchmarks/compile_time.sh          # g++
#   CXX=clang++ bash benchmarks/compile_time.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX:-g++}
src=benchmarks/compile_time
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++20 -O2 -Iinclude -c)

# Best of three: the CPU time of one compile, in seconds.
cpu_seconds() {
  local best=""
  for _ in 1 2 3; do
    local t
    t=$( { TIMEFORMAT='%U %S'; time "$CXX" "${flags[@]}" "$@" -o "$out/tu.o" >/dev/null 2>&1; } 2>&1 | awk '{print $1 + $2}')
    best=$(awk -v a="$t" -v b="${best:-$t}" 'BEGIN { print (a < b) ? a : b }')
  done
  echo "$best"
}

hello=$(cpu_seconds $src/hello_fmt.cpp)
counter=$(cpu_seconds $src/counter.cpp)
umbrella=$(cpu_seconds -DOTPP_CT_UMBRELLA $src/counter.cpp)
extra=$(cpu_seconds -DOTPP_CT_EXTRA_SERVERS $src/counter.cpp)
per_server=$(awk -v a="$extra" -v b="$counter" 'BEGIN { printf "%.2f", (a - b) / 4 }')
compiled=n/a
if grep -q OTPP_HEADER_ONLY include/otpp/detail/config.hpp 2>/dev/null; then
  compiled=$(cpu_seconds -DOTPP_HEADER_ONLY=0 $src/counter.cpp)
fi

printf '%-58s %8s %8s\n' "translation unit ($CXX -O2, CPU s, best of 3)" "otpp" "target"
printf '%-58s %8s %8s\n' "fmt hello world (the floor)" "$hello" "-"
printf '%-58s %8s %8s\n' "README counter, <otpp/gen_server.hpp>, header-only" "$counter" "3.5"
printf '%-58s %8s %8s\n' "README counter, <otpp/otpp.hpp>, header-only" "$umbrella" "-"
printf '%-58s %8s %8s\n' "each extra server type, 5 handlers (4 more, averaged)" "$per_server" "0.25"
printf '%-58s %8s %8s\n' "README counter, compiled runtime (OTPP_HEADER_ONLY=0)" "$compiled" "2.0"
