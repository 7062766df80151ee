#!/usr/bin/env python3
"""Compares two runs of benches/load.sh (for example without and with QUOTAS=1): for each figure,
spark-admission's ratio to each baseline in the first run, in the second, and how much the
ratio moved. The baselines run the same way in both, so a ratio that moves is spark-admission's
doing, and the ratios carry over from one busy moment of a shared machine to another where the
raw figures do not.

    benches/load_compare.py FIRST/results.jsonl SECOND/results.jsonl [FIRST-NAME SECOND-NAME]
"""

import json
import statistics
import sys


def load(path):
    by = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            by.setdefault((r["label"], r["figure"]), []).append(r)
    return by


def get(by, label, figure, key):
    """The figure's value; the median when the load was run several times."""
    values = [r[key] for r in by.get((label, figure), []) if r.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(by, figure, key, baseline):
    a, b = get(by, "spark", figure, key), get(by, baseline, figure, key)
    return None if a is None or not b else a / b


FIGURES = [
    ("start to ready", "start", "ready_ms"),
    ("idle RSS", "start", "idle_rss_kb"),
    ("burst: p50", "burst", "p50_ms"),
    ("burst: p99", "burst", "p99_ms"),
    ("burst: peak RSS (VmHWM)", "burst", "server_hwm_kb"),
    ("keep-alive executor: throughput", "keepalive-executor", "rps"),
    ("keep-alive executor: server CPU per review", "keepalive-executor", "server_cpu_us_per_review"),
    ("keep-alive executor: p50", "keepalive-executor", "p50_ms"),
    ("keep-alive executor: p99", "keepalive-executor", "p99_ms"),
    ("keep-alive driver: throughput", "keepalive-driver", "rps"),
    ("keep-alive driver: server CPU per review", "keepalive-driver", "server_cpu_us_per_review"),
    ("new connection: throughput", "newconn", "rps"),
    ("new connection: server CPU per review", "newconn", "server_cpu_us_per_review"),
    ("open loop: p50", "openloop", "p50_ms"),
    ("open loop: p99", "openloop", "p99_ms"),
    ("open loop: p99.9", "openloop", "p999_ms"),
    ("open loop: server CPU per review", "openloop", "server_cpu_us_per_review"),
    ("3 MiB review: p50", "3mib", "p50_ms"),
    ("RSS before the 3 MiB reviews", "before-3mib", "rss_kb"),
    ("RSS 2 s after the 3 MiB reviews", "after-3mib", "rss_kb"),
    ("RSS after 3,000 more executor reviews", "after-3mib-then-traffic", "rss_kb"),
]


def main():
    first, second = load(sys.argv[1]), load(sys.argv[2])
    names = sys.argv[3:5] if len(sys.argv) >= 5 else ["first", "second"]
    fmt = lambda v: "?" if v is None else f"{v:.2f}x"
    print(f"| figure | / baseline, {names[0]} | / baseline, {names[1]} | moved "
          f"| / lean, {names[0]} | / lean, {names[1]} | moved |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, figure, key in FIGURES:
        cells = []
        for baseline in ("baseline", "lean"):
            a, b = ratio(first, figure, key, baseline), ratio(second, figure, key, baseline)
            moved = "" if a is None or b is None else f"{(b / a - 1) * 100:+.0f}%"
            cells += [fmt(a), fmt(b), moved]
        print(f"| {name} | " + " | ".join(cells) + " |")


main()
