#!/usr/bin/env python3
"""Writes docs/benchmarks.md and docs/benchmarks.svg from benchmark output.

  python3 scripts/bench_page.py --otpp otpp.txt --beam beam.txt [--caf caf.txt] [--note "..."]

otpp.txt: `otpp_bench` output. beam.txt: the output of the BEAM anchor
scripts (anchors/beam/*.exs, run beside otpp_bench on the same machine).
caf.txt: the output of the CAF anchor programs (anchors/caf), run likewise. Each file may hold several runs; the median
is used. The chart shows otpp's factor over the best peer, per figure, on a
log scale (right of 1× is faster or smaller).
"""
import argparse
import math
import os
import re
import statistics
import sys

# otpp figure -> (title, unit, lower_is_better, BEAM figure, BEAM unit -> otpp unit,
#                 CAF figure, CAF value -> otpp unit)
FIGURES = [
    ("cast_1sender", "cast, 1 sender thread", "msg/s", False, "cast_throughput_1sender", 1.0,
     "cast_throughput_1thread", lambda v: v),
    ("cast_2senders", "cast, 2 sender threads", "msg/s", False, "cast_throughput_2sender", 1.0,
     "cast_throughput_2threads", lambda v: v),
    ("call_external", "call from a plain thread", "ns", True, None, 1.0,
     "call_latency_scoped_blocking", lambda v: v),
    ("call_process", "call, process to process", "ns", True, "call_latency_mean", 1.0,
     "call_latency_actor_then", lambda v: v),
    ("call_process_nonblocking", "call, process, nonblocking server", "ns", True,
     "call_latency_mean", 1.0, "call_latency_actor_then", lambda v: v),
    ("call_concurrent_64", "64 callers, one server", "calls/s", False, "call_throughput_concurrent_64", 1.0,
     "call_throughput_concurrent", lambda v: v),
    ("call_concurrent_64_nonblocking", "64 callers, nonblocking server", "calls/s", False,
     "call_throughput_concurrent_64", 1.0, "call_throughput_concurrent", lambda v: v),
    ("call_chain_1000_ns", "1,000 processes, each blocked in a call to the next, per hop", "ns", True, None, 1.0,
     None, None),
    ("call_process_async_ns", "call, process to process, co_await async_call", "ns", True, "call_latency_mean",
     1.0, "call_latency_actor_then", lambda v: v),
    ("call_concurrent_64_async", "64 caller processes, co_await, one server", "calls/s", False,
     "call_throughput_concurrent_64", 1.0, "call_throughput_concurrent", lambda v: v),
    ("task_async_await_ns", "Task: await(async(fn)) from a process", "ns", True, "task_async_await_ns", 1.0, None, None),
    ("task_async_stream_rate", "Task.async_stream, 200k items, 4 at once", "items/s", False, "task_async_stream_rate",
     1.0, None, None),
    ("agent_get_ns", "Agent.get from a process", "ns", True, "agent_get_ns", 1.0, None, None),
    ("agent_update_ns", "Agent.update from a process", "ns", True, "agent_update_ns", 1.0, None, None),
    ("ets_lookup_ns", "table (ETS) lookup, set, 100k keys, one thread", "ns", True, "ets_lookup_ns", 1.0, None, None),
    ("ets_lookup_2procs", "table lookups, 2 threads", "ops/s", False, "ets_lookup_2procs", 1.0, None, None),
    ("ets_lookup_64procs", "table lookups, 64 processes", "ops/s", False, "ets_lookup_64procs", 1.0, None, None),
    ("ets_insert_ns", "table insert, 1M into an empty set", "ns", True, "ets_insert_ns", 1.0, None, None),
    ("ets_update_counter_ns", "table update_counter, one thread", "ns", True, "ets_update_counter_ns", 1.0, None, None),
    ("ets_update_counter_2procs_distinct", "update_counter, 2 threads, 2 keys", "ops/s", False,
     "ets_update_counter_2procs_distinct", 1.0, None, None),
    ("ets_update_counter_2procs_same_key", "update_counter, 2 threads, 1 key", "ops/s", False,
     "ets_update_counter_2procs_same_key", 1.0, None, None),
    ("ets_ordered_insert_ns", "ordered_set insert, 1M keys", "ns", True, "ets_ordered_insert_ns", 1.0, None, None),
    ("ets_ordered_lookup_ns", "ordered_set lookup, 1M keys", "ns", True, "ets_ordered_lookup_ns", 1.0, None, None),
    ("cache_fetch_64_ets", "search cache's table form, 64 processes fetching", "fetches/s", False, "cache_fetch_64_ets",
     1.0, None, None),
    ("statem_transitions", "gen_statem: casts through 2 states, enter call + state timeout", "transitions/s", False,
     "statem_transitions", 1.0, None, None),
    ("statem_call_ns", "gen_statem: call from a process", "ns", True, "statem_call_ns", 1.0, None, None),
    ("timer_rearm_ns", "re-arm the event timeout on each cast, over no timeout", "ns", True, None, 1.0, None, None),
    ("mailbox_overload_info_max_ms", "2 threads flooding a 1 us handler, bounded mailbox (10k, drop_oldest): slowest sys::info",
     "ms", True, None, 1.0, None, None),
    ("mailbox_overload_rss_mb", "the same flood: RSS growth", "MB", True, None, 1.0, None, None),
    ("pool_checkout_ns", "pool: checkout + checkin from a process", "ns", True, None, 1.0, None, None),
    ("metrics_event_ns", "metrics: a counter and a distribution on one event, per event", "ns", True, None, 1.0, None,
     None),
    ("ring_1000", "ring of 1000 servers", "hops/s", False, "ring_genserver_1000", 1.0, "ring_hops", lambda v: v),
    ("spawn_1m", "start 1M servers", "s", True, "spawn_genserver_total_time", 1e-3,
     "spawn_all_initialized_time", lambda v: v),
    ("bytes_per_server", "memory per idle server", "B", True, "spawn_genserver_mem_per_proc", 1.0,
     "spawn_rss_per_actor", lambda v: v),
    ("stop_1m", "stop 1M servers", "s", True, "spawn_genserver_stop_time", 1e-3, "destroy_rate", lambda v: 1e6 / v),
    ("timers_schedule_1m", "1M send_after", "s", True, "timers_schedule_1M", 1e-3, "timer_schedule_time", lambda v: v),
    ("timer_cancel", "cancel a timer", "ns", True, "timers_cancel_per_op", 1.0, None, None),
    ("supervisor_restart", "crash to restarted child", "us", True,
     ("supervisor_restart_kill_steady", "supervisor_restart_kill_fresh"), 1.0, None, None),
]

# `name: value unit`; otpp_bench prints secondary figures as `# name: value unit`.
LINE = re.compile(r"^(?:# )?([A-Za-z0-9_]+):\s+([0-9][0-9.eE+-]*)\s*(\S*)")


def read(path):
    main, secondary = {}, {}
    if not path:
        return {}
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                into = secondary if line.startswith("#") else main
                into.setdefault(m.group(1), []).append(float(m.group(2)))
    # A main line wins over a comment that happens to start with its name.
    merged = {**secondary, **main}
    return {k: statistics.median(v) for k, v in merged.items()}


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e4:
        return f"{v / 1e3:.1f} k"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def factor(ours, peer, lower):
    if ours is None or peer is None or ours <= 0 or peer <= 0:
        return None
    return peer / ours if lower else ours / peer


def svg(rows, path):
    rows = [r for r in rows if r[1] is not None]
    width, left, right, bar, gap, top = 760, 230, 90, 18, 8, 40
    height = top + len(rows) * (bar + gap) + 40
    lo, hi = 0.5, max(2.0, max(f for _, f in rows) * 1.3)
    span = math.log10(hi) - math.log10(lo)

    def x(v):
        return left + (math.log10(v) - math.log10(lo)) / span * (width - left - right)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">otpp vs the best of BEAM and CAF '
           f'(× faster or smaller, log scale)</text>']
    for tick in [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]:
        if lo <= tick <= hi:
            tx = x(tick)
            out.append(f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{height - 30}" '
                       f'stroke="{"#333" if tick == 1 else "#ddd"}"/>')
            out.append(f'<text x="{tx:.1f}" y="{height - 14}" text-anchor="middle">{tick:g}×</text>')
    for i, (title, f) in enumerate(rows):
        y = top + i * (bar + gap)
        x0, x1 = x(1.0), x(f)
        color = "#2b7bba" if f >= 1 else "#d9534f"
        out.append(f'<text x="{left - 8}" y="{y + bar - 4}" text-anchor="end">{title}</text>')
        out.append(f'<rect x="{min(x0, x1):.1f}" y="{y}" width="{abs(x1 - x0):.1f}" height="{bar}" fill="{color}"/>')
        out.append(f'<text x="{max(x0, x1) + 4:.1f}" y="{y + bar - 4}">{f:.1f}×</text>')
    out.append("</svg>")
    with open(path, "w") as fh:
        fh.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--otpp", required=True)
    ap.add_argument("--beam")
    ap.add_argument("--caf")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs"))
    a = ap.parse_args()
    ours, beam, caf = read(a.otpp), read(a.beam), read(a.caf)
    rows, chart = [], []
    for name, title, unit, lower, beam_name, scale, caf_name, caf_conv in FIGURES:
        o = ours.get(name)
        names = beam_name if isinstance(beam_name, tuple) else (beam_name,)
        found = [beam[n] for n in names if n and n in beam]  # several variants: the peer's best
        b = (min(found) if lower else max(found)) if found else None
        b = b * scale if b is not None else None
        c = caf.get(caf_name) if caf_name else None
        c = caf_conv(c) if c is not None else None
        peers = [p for p in (b, c) if p is not None]
        best = (min(peers) if lower else max(peers)) if peers else None
        f = factor(o, best, lower)
        rows.append(f"| {title} (`{name}`) | {fmt(o) if o else '—'} | {fmt(b) if b else '—'} | "
                    f"{fmt(c) if c else '—'} | {unit} | {('%.1f×' % f) if f else '—'} |")
        chart.append((title, f))
    svg(chart, os.path.join(a.out, "benchmarks.svg"))
    with open(os.path.join(a.out, "benchmarks.md"), "w") as fh:
        fh.write("# Benchmarks\n\n")
        fh.write("otpp beside the BEAM (Erlang/OTP + Elixir GenServers) and CAF, on the same machine. "
                 "Lower is better for ns, s and B; higher for rates. The last column is otpp's factor "
                 "over the best peer (above 1× otpp is faster or smaller).\n\n")
        if a.note:
            fh.write(a.note.strip() + "\n\n")
        fh.write("Calls: with a finite timeout an otpp call always goes through the server's mailbox and is "
                 "answered by a worker (so the timeout holds whatever the handler does); from a plain thread "
                 "that is a hand-over between threads. A process blocked in a call parks its stack (a fiber) "
                 "and its worker runs on, so the blocking rows run on the worker threads alone (`otpp_bench` "
                 "prints the thread count); a call that wakes an idle server parks at once, and the worker runs "
                 "the server and then resumes the caller, on one core. A server that declares "
                 "`nonblocking_handlers` lets an idle server's handler run on the caller's thread: those "
                 "rows. The peers have one kind of call; their figures are repeated for comparison. "
                 "`supervisor_restart` takes the better of the BEAM script's steady and fresh variants. "
                 "`timers_schedule_1m` stores the refs into a vector made before the clock starts (the BEAM "
                 "script builds its list of refs inside its timing; the vector's first touch, printed on "
                 "otpp_bench's `#` line, took 4-6 ms here). It is the first burst of timers in a fresh "
                 "process: the pages its timers take are new to the process, and the kernel clears each one "
                 "on first touch, at a cost set by the host: right after another run the burst took "
                 "0.032-0.058 s, the first run after a pause 0.15-0.21 s, with the same page faults "
                 "(a quarter of the samples in `clear_page_erms`); this page's rounds took 0.047-0.129 s. "
                 "`timer_cancel` cancels timers already in the timer thread's wheel, as the BEAM's are when "
                 "its script cancels them; cancelled at once after the burst, some are still on their way "
                 "there and cost less to cancel (the `#` line), by a margin that varied from run to run. "
                 "`cast_1sender` varies from run to run: mostly 40-85 M/s here, now and then about 30, when "
                 "the server stays close behind the sender and each message's cache line passes back and "
                 "forth between the two cores; `docs/bench/` keeps every round. `spawn_1m` is the first "
                 "touch of about 130 MB in a fresh process, and its time is mostly the host's cost of those "
                 "page faults, which varies with what the host did with the memory lately (0.418-0.540 s "
                 "in this page's rounds). "
                 "Figures that wake an idle worker (the 64-process rows) vary from run to run on this host, "
                 "as do the process-to-process round trips: a whole run of a million calls now and then takes "
                 "100-145 ns a call instead of 73-78, on one worker as on two. This page ran in a slow "
                 "spell, for the BEAM too (its `call_latency` 1,401-2,210 ns in this page's rounds, "
                 "1,130 on the page before): `call_process_async_ns` 95.4-129 ns in its rounds, "
                 "`statem_call_ns` 97.2-107; the page before it, in a quiet spell, 76.2-77.4 and "
                 "76.9-82.1. "
                 "`BIND_WORKERS=1 otpp_bench` binds each "
                 "worker to a core (`runtime_config::bind_workers`, the BEAM's `+sbt`); the page runs both "
                 "runtimes unbound, their default.\n\n")
        fh.write("![otpp vs the best peer](benchmarks.svg)\n\n")
        fh.write("| figure | otpp | BEAM | CAF | unit | otpp vs best peer |\n|---|---:|---:|---:|---|---:|\n")
        fh.write("\n".join(rows) + "\n\n")
        fh.write("Regenerate with `bash benchmarks/side_by_side.sh [ANCHORS_DIR]`: it builds the CAF "
                 "anchor programs (Debian's libcaf-dev), then runs them, the BEAM anchor scripts (Debian's "
                 "erlang and elixir) and `otpp_bench` in turn on the same machine, for several rounds "
                 "(`OTPP_BENCH_ROUNDS`, default 5), and writes this page from each figure's median; the "
                 "raw output of every round is kept in `docs/bench/`.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
