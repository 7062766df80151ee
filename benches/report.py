#!/usr/bin/env python3
"""Turns benches/load.sh's results.jsonl into a markdown table: spark-admission, the two
allowed:true baselines from the same run (`baseline`: parses the whole AdmissionReview<Pod> as
a kube-rs webhook does; `lean`: spark-admission's own parse, managedFields skipped), the ratios
to each, and the target."""

import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {}
for r in rows:
    by.setdefault((r["label"], r["figure"]), []).append(r)


def get(label, figure, key):
    """The figure's value; the median when the load was run several times."""
    values = [r[key] for r in by.get((label, figure), []) if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, unit):
    if value is None:
        return "?"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "us":
        return f"{value:.0f} µs"
    if unit == "MB":
        return f"{value / 1024:.1f} MB"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:g}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return ""
    return f"{a / b:.2f}x"


lines = [
    "| figure | spark-admission | baseline (kube-rs parse) | ratio | lean baseline "
    "(same parse as spark-admission) | ratio | target |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]


def row(name, figure, key, unit, target=""):
    a, b, c = (get(label, figure, key) for label in ("spark", "baseline", "lean"))
    lines.append(f"| {name} | {fmt(a, unit)} | {fmt(b, unit)} | {ratio(a, b)} "
                 f"| {fmt(c, unit)} | {ratio(a, c)} | {target} |")


def growth_row(name, before_figure, after_figure, target=""):
    """RSS after the 3 MiB reviews against RSS just before them, for each server."""
    cells = []
    for label in ("spark", "baseline", "lean"):
        before = get(label, before_figure, "rss_kb")
        after = get(label, after_figure, "rss_kb")
        cells.append("?" if not before or after is None else f"{(after / before - 1) * 100:+.0f}%")
    lines.append(f"| {name} | {cells[0]} | {cells[1]} | | {cells[2]} | | {target} |")


row("start to ready", "start", "ready_ms", "ms", "< 200 ms")
row("idle RSS", "start", "idle_rss_kb", "MB", "< 20 MB")
row("burst 1,000 @ c100 pool 25: errors", "burst", "errors", "", "0")
row("burst: p50", "burst", "p50_ms", "ms")
row("burst: p99", "burst", "p99_ms", "ms", "< 100 ms")
row("burst: new connections", "burst", "new_connections", "")
row("burst: peak RSS (VmHWM)", "burst", "server_hwm_kb", "MB", "< 40 MB")
for body in ["executor", "driver"]:
    f = f"keepalive-{body}"
    row(f"keep-alive {body} c25: throughput", f, "rps", "/s", ">= 0.8x" if body == "executor" else "")
    row(f"keep-alive {body}: server CPU per review", f, "server_cpu_us_per_review", "us",
        "<= 1.3x" if body == "executor" else "")
    row(f"keep-alive {body}: p50", f, "p50_ms", "ms")
    row(f"keep-alive {body}: p99", f, "p99_ms", "ms")
row("new connection per request c25: throughput", "newconn", "rps", "/s", ">= 1,500/s")
row("new connection: server CPU per review", "newconn", "server_cpu_us_per_review", "us")
row("new connection: p99", "newconn", "p99_ms", "ms")
row("open loop 1,000/s: achieved", "openloop", "rps", "/s")
row("open loop: p50", "openloop", "p50_ms", "ms")
row("open loop: p99", "openloop", "p99_ms", "ms", "< 2 ms")
row("open loop: p99.9", "openloop", "p999_ms", "ms", "< 5 ms")
row("open loop: max", "openloop", "max_ms", "ms")
row("open loop: server CPU per review", "openloop", "server_cpu_us_per_review", "us")
row("3 MiB review: p50", "3mib", "p50_ms", "ms")
row("3 MiB review: server CPU per review", "3mib", "server_cpu_us_per_review", "us")
row("RSS before the 3 MiB reviews", "before-3mib", "rss_kb", "MB")
row("RSS 2 s after the 3 MiB reviews", "after-3mib", "rss_kb", "MB")
growth_row("RSS 2 s after the 3 MiB reviews, against just before them", "before-3mib",
           "after-3mib", "within 10% of idle")
row("RSS after 3,000 more executor reviews (2 s later)", "after-3mib-then-traffic", "rss_kb", "MB")
growth_row("RSS after 3,000 more executor reviews, against just before the 3 MiB reviews",
           "before-3mib", "after-3mib-then-traffic", "within 10% of idle")
errors = sum(r.get("errors", 0) or 0 for r in rows)
print("\n".join(lines))
print(f"\nerrors over every run: {errors}")
# A failed request is a broken benchmark, whatever the figures say (CI runs a short load).
sys.exit(1 if errors else 0)
