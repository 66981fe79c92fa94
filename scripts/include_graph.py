#!/usr/bin/env python3
"""Checks that otpp's headers form a clean stack, and prints it.

Every header gets a level: one more than the highest header it includes
(an -inl.hpp file's include of its own header, and a header's include of its
own -inl.hpp in header-only mode, are the {fmt} pattern and not edges).
Fails if the graph has a cycle, or if a detail/ header includes a public
header that is not at the bottom of the stack (the value types, version,
log, clock, runtime_config, table_options, telemetry, mailbox) - except detail/supervision.hpp, the machinery
both supervisors share, which is built on the public API and sits on top.

  python3 scripts/include_graph.py [--print]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include")
BOTTOM = {"otpp/version.hpp", "otpp/log.hpp", "otpp/exit_reason.hpp", "otpp/pid.hpp",
          "otpp/clock.hpp", "otpp/runtime_config.hpp", "otpp/table_options.hpp",
          "otpp/telemetry.hpp", "otpp/mailbox.hpp"}
ABOVE_PUBLIC = {"otpp/detail/supervision.hpp"}
inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def headers():
    for d, _, files in os.walk(os.path.join(ROOT, "otpp")):
        for f in files:
            if f.endswith(".hpp"):
                yield os.path.relpath(os.path.join(d, f), ROOT)


def edges(h):
    text = open(os.path.join(ROOT, h)).read()
    out = []
    for m in inc.finditer(text):
        target = os.path.normpath(os.path.join(os.path.dirname(h), m.group(1)))
        inl_pair = (target.endswith("-inl.hpp") and target.replace("-inl.hpp", ".hpp").split("/")[-1] == h.split("/")[-1]) \
            or (h.endswith("-inl.hpp") and h.replace("-inl.hpp", ".hpp").split("/")[-1] == target.split("/")[-1])
        if h.endswith("-inl.hpp") is False and target.endswith("-inl.hpp"):
            continue  # a header's own out-of-line half, included in header-only mode
        if inl_pair:
            continue
        out.append(target)
    return out


def main():
    graph = {h: edges(h) for h in headers()}
    level, state, problems = {}, {}, []

    def visit(h, path):
        if state.get(h) == "done":
            return level[h]
        if state.get(h) == "active":
            problems.append("cycle: " + " -> ".join(path + [h]))
            return 0
        state[h] = "active"
        lv = 0
        for t in graph.get(h, []):
            if t not in graph:
                problems.append(f"{h} includes missing {t}")
                continue
            lv = max(lv, visit(t, path + [h]) + 1)
        state[h] = "done"
        level[h] = lv
        return lv

    for h in sorted(graph):
        visit(h, [])
    for h, ts in sorted(graph.items()):
        if "/detail/" not in h or h.endswith("-inl.hpp") or h in ABOVE_PUBLIC:
            continue
        for t in ts:
            if "/detail/" not in t and t not in BOTTOM:
                problems.append(f"{h} (a detail header) includes the public {t}, which is above it")
    if "--print" in sys.argv:
        stack = {h: lv for h, lv in level.items() if not h.endswith("-inl.hpp")}
        for lv in range(max(stack.values()) + 1):
            print(f"level {lv}: " + ", ".join(sorted(h[5:] for h in stack if stack[h] == lv)))
        print("out-of-line halves (included by their header when header-only, else built by src/otpp.cpp): " +
              ", ".join(sorted(h[5:] for h in level if h.endswith("-inl.hpp"))))
    for p in problems:
        print("include graph:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
