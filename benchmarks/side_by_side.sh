#!/usr/bin/env bash
# Runs otpp_bench beside the peers' programs on this machine, then writes
# docs/benchmarks.md and docs/benchmarks.svg (scripts/bench_page.py).
#
#   bash benchmarks/side_by_side.sh [ANCHORS_DIR]   (default: ../shared/anchors)
#
# ANCHORS_DIR holds the peers' programs: beam/*.exs (run with elixir) and
# caf/*.cpp (built against libcaf-dev). Installs erlang, elixir and
# libcaf-dev if missing. Runs OTPP_BENCH_ROUNDS rounds (default 5), each
# CAF, then BEAM, then otpp, and the page shows each figure's median: on a
# host whose speed swings by a third from one minute to the next, one run
# per side says more about the minute than about the code, and with three
# rounds two slow ones made the median. About two minutes a round on 2
# cores; not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
anchors=$(realpath "${1:-../shared/anchors}")
bash scripts/deps.sh erlang elixir libcaf-dev
out=build/side_by_side
rm -rf "$out" && mkdir -p "$out/caf"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DOTPP_BUILD_TESTS=OFF -DOTPP_BUILD_EXAMPLES=ON \
  -DOTPP_BUILD_BENCHMARKS=ON >/dev/null
cmake --build build/release -j"$(nproc)" --target otpp_bench >/dev/null
for p in cast_throughput call_latency call_concurrent ring spawn timers; do
  g++ -O2 -std=c++17 -DNDEBUG "$anchors/caf/$p.cpp" -I"$anchors/caf" -o "$out/caf/$p" -lcaf_core -lpthread
done
workers=$(nproc)
rounds=${OTPP_BENCH_ROUNDS:-5}
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds: CAF ($workers workers)"
  for p in cast_throughput call_latency call_concurrent ring spawn timers; do
    CAF_BENCH_THREADS=$workers "$out/caf/$p" | tee -a "$out/caf.txt"
  done
  echo "== round $round of $rounds: BEAM"
  for s in cast_throughput call_latency call_concurrent ring timers supervisor_restart task_agent ets statem; do
    (cd "$anchors/beam" && elixir "$s.exs") | tee -a "$out/beam.txt"
  done
  (cd "$anchors/beam" && elixir --erl "+P 5000000" spawn.exs) | tee -a "$out/beam.txt"
  echo "== round $round of $rounds: otpp"
  build/release/benchmarks/otpp_bench | tee -a "$out/otpp.txt"
done
python3 scripts/bench_page.py --otpp "$out/otpp.txt" --beam "$out/beam.txt" --caf "$out/caf.txt" \
  --note "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), medians of $rounds rounds, \
each round CAF, BEAM, then otpp: otpp $(awk '/#define OTPP_VERSION_(MAJOR|MINOR|PATCH) /{v = v (v ? "." : "") $3} END {print v}' include/otpp/version.hpp) \
(g++ $(g++ -dumpversion), $(nproc) workers), Erlang/OTP $(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().') \
with Elixir, CAF $(dpkg-query -W -f='${Version}' libcaf-dev)."
mkdir -p docs/bench && cp "$out"/otpp.txt "$out"/beam.txt "$out"/caf.txt docs/bench/
echo "wrote docs/benchmarks.md, docs/benchmarks.svg and docs/bench/"
