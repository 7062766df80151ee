#!/usr/bin/env python3
"""Checks every Grafana dashboard under deploy/grafana (run by deploy/prometheus/check.sh).

For each *.json file: it is JSON; it has the fields Grafana needs to import it (title, uid,
schemaVersion, panels, templating); every panel has an id (unique), a type, a title and a
gridPos inside the 24-column grid, and every panel but a row has queries with a refId and an
expression; every $variable a query uses is defined by the dashboard (or is Grafana's own);
every expression, with the variables replaced by each value they can take, parses
(`promtool check rules` on a rule file of them); and every metric an expression or a variable's
query reads is one that exists: recorded by deploy/prometheus/spark-usage.yaml, in the list
below of the kube-state-metrics series the dashboards and rules use, in spark-admission's own
metrics (README.md's "Metrics" table), or Prometheus' `up`. The recording rules themselves
must read only that kube-state-metrics list and each other.

`check.py --self-test` also shows that each of those checks fails a dashboard broken that way.
Needs PyYAML and promtool.
"""

import copy
import itertools
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RULES = ROOT / "deploy" / "prometheus" / "spark-usage.yaml"
README = ROOT / "README.md"

# The kube-state-metrics series (v2) the dashboards and the rules of deploy/prometheus use.
# Add one here only after checking kube-state-metrics' docs/metrics/ list it.
KUBE_STATE_METRICS = {
    "kube_pod_labels",
    "kube_pod_status_phase",
    "kube_pod_container_resource_requests",
    "kube_node_status_allocatable",
    "kube_deployment_status_replicas_available",
    "kube_deployment_spec_replicas",
}
PROMETHEUS = {"up"}

# Grafana's own variables, and what stands for them in a parse.
BUILTIN_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}
NAME = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")
VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|([A-Za-z0-9_]+))")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[^,()]+\)\s*$", re.S)
QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)


def known_metrics():
    """The metric names a dashboard may read."""
    names = set(KUBE_STATE_METRICS) | PROMETHEUS
    rule = yaml.safe_load(RULES.read_text())
    for group in rule["spec"]["groups"]:
        names.update(r["record"] for r in group["rules"] if "record" in r)
    section = README.read_text().split("### Metrics", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        found = re.match(r"\| `(spark_admission_[a-z0-9_]+)` \|", line)
        if found:
            names.add(found.group(1))
            if "histogram" in line:
                names.update(found.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr):
    """The metric names a PromQL expression (variables already replaced) reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    while GROUPING.search(text):
        text = GROUPING.sub(" ", text)
    names = set()
    for found in NAME.finditer(text):
        word = found.group(0)
        rest = text[found.end():].lstrip()
        if word.lower() in KEYWORDS or rest.startswith("("):
            continue
        names.add(word)
    return names


def variables_of(dashboard):
    """Each variable's name and the values a parse tries for it."""
    values = {name: [v] for name, v in BUILTIN_VARIABLES.items()}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable.get("name")
        if variable.get("type") == "custom":
            options = [o.strip() for o in str(variable.get("query", "")).split(",")]
            # "text : value" options: the value is what a query gets.
            values[name] = [o.split(" : ", 1)[-1].strip() for o in options if o]
        elif variable.get("type") == "datasource":
            values[name] = ["prometheus"]
        else:
            values[name] = [".*"]
    return values


def substitutions(expr, values):
    """The expression with its variables replaced, once per combination of their values."""
    used = sorted({a or b for a, b in VARIABLE.findall(expr)} & set(values))
    for combination in itertools.product(*(values[n] for n in used)):
        chosen = dict(zip(used, combination))
        yield VARIABLE.sub(lambda m: chosen.get(m.group(1) or m.group(2), m.group(0)), expr)


def panels_of(panels):
    for panel in panels:
        yield panel
        yield from panels_of(panel.get("panels", []))


def variable_query(variable):
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query", "")
    return query or ""


def problems_of(name, text, known):
    """Every problem of one dashboard's text, each a line, and the expressions to parse."""
    try:
        dashboard = json.loads(text)
    except json.JSONDecodeError as error:
        return [f"{name}: not JSON: {error}"], []
    if not isinstance(dashboard, dict):
        return [f"{name}: not a dashboard object"], []
    problems, exprs = [], []
    for field, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                        ("templating", dict)):
        if not isinstance(dashboard.get(field), kind) or dashboard.get(field) in ("", []):
            problems.append(f"{name}: missing or empty {field!r} ({kind.__name__} required)")
    if isinstance(dashboard.get("uid"), str) and len(dashboard["uid"]) > 40:
        problems.append(f"{name}: uid longer than Grafana's 40 characters")
    if not isinstance(dashboard.get("templating", {}).get("list", []), list):
        problems.append(f"{name}: templating.list must be a list")
        return problems, exprs
    values = variables_of(dashboard)

    def check_expr(where, expr):
        for variable in {a or b for a, b in VARIABLE.findall(expr)} - set(values):
            problems.append(f"{where}: uses ${variable}, which the dashboard does not define")
        for concrete in substitutions(expr, values):
            exprs.append((where, concrete))
            for metric in sorted(metric_names(concrete) - known):
                problems.append(
                    f"{where}: reads {metric}, which is not recorded by spark-usage.yaml, not in "
                    f"check.py's kube-state-metrics list, not in README's metrics, not `up`"
                )

    for variable in dashboard.get("templating", {}).get("list", []):
        if not variable.get("name") or not variable.get("type"):
            problems.append(f"{name}: a template variable without a name or type")
            continue
        if variable["type"] != "query":
            continue
        query = variable_query(variable)
        where = f"{name}: variable {variable['name']}"
        match = LABEL_VALUES.match(query) or QUERY_RESULT.match(query)
        if match:
            check_expr(where, match.group(1))
        elif not re.match(r"^\s*label_values\([^,()]+\)\s*$", query):
            problems.append(f"{where}: query {query!r} is not label_values(...) or query_result(...)")

    ids = set()
    for panel in panels_of(dashboard.get("panels", [])):
        title = panel.get("title")
        where = f"{name}: panel {title!r}"
        if not isinstance(title, str) or not title:
            problems.append(f"{name}: a panel (id {panel.get('id')}) without a title")
        if not isinstance(panel.get("type"), str):
            problems.append(f"{where}: no type")
        if not isinstance(panel.get("id"), int) or panel["id"] in ids:
            problems.append(f"{where}: id {panel.get('id')!r} missing or not unique")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "xywh") or grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: gridPos {grid!r} is not x, y, w, h inside 24 columns")
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{where}: no queries (targets)")
            continue
        for target in targets:
            expr = target.get("expr")
            if not target.get("refId") or not isinstance(expr, str) or not expr.strip():
                problems.append(f"{where}: a query without a refId or an expr")
                continue
            check_expr(f"{where} query {target['refId']}", expr)
    return problems, exprs


def parse_problems(exprs):
    """promtool's verdict on every expression, as recording rules of one file."""
    if not exprs:
        return []
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, file)
        file.flush()
        run = subprocess.run(["promtool", "check", "rules", file.name],
                             capture_output=True, text=True, check=False)
    if run.returncode == 0:
        return []
    problems = []
    for line in (run.stdout + run.stderr).splitlines():
        found = re.search(r"(\d+):\d+: group \"dashboards\", rule (\d+)", line)
        if found:
            where, expr = exprs[int(found.group(2)) - 1]
            problems.append(f"{where}: does not parse: {expr}: {line.strip()}")
    return problems or [f"promtool check rules failed:\n{run.stdout}{run.stderr}"]


def rule_problems():
    """The recording rules read only kube-state-metrics' series of the list and each other."""
    rule = yaml.safe_load(RULES.read_text())
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    allowed = KUBE_STATE_METRICS | {r["record"] for r in rules}
    return [
        f"{RULES.name}: {r['record']} reads {metric}, not in check.py's kube-state-metrics list"
        for r in rules
        for metric in sorted(metric_names(r["expr"]) - allowed)
    ]


def check(files, known):
    problems, exprs, uids = rule_problems(), [], {}
    for path in files:
        found, parsed = problems_of(path.name, path.read_text(), known)
        problems += found
        exprs += parsed
        try:
            uid = json.loads(path.read_text()).get("uid")
        except (json.JSONDecodeError, AttributeError):
            continue
        if uid in uids:
            problems.append(f"{path.name}: uid {uid!r} is also {uids[uid]}'s")
        uids[uid] = path.name
    return problems + parse_problems(exprs)


def self_test(known):
    """Each check fails a dashboard broken its way."""
    base = json.loads((HERE / "spark-usage-dashboard.json").read_text())
    assert not check_text(json.dumps(base), known), "the real dashboard must pass"

    def broken(edit):
        dashboard = copy.deepcopy(base)
        edit(dashboard)
        return json.dumps(dashboard)

    def first_query(dashboard):
        return next(p for p in panels_of(dashboard["panels"]) if p["type"] != "row")["targets"][0]

    cases = {
        "not JSON": ('{"title": "x",', "not JSON"),
        "no title": (broken(lambda d: d.pop("title")), "missing or empty 'title'"),
        "no panels": (broken(lambda d: d.update(panels=[])), "missing or empty 'panels'"),
        "duplicate id": (broken(lambda d: d["panels"][2].update(id=d["panels"][1]["id"])),
                         "not unique"),
        "no expr": (broken(lambda d: first_query(d).pop("expr")), "without a refId or an expr"),
        "unknown metric": (broken(lambda d: first_query(d).update(
            expr="sum(kube_pod_container_resource_limits)")), "reads kube_pod_container_resource_limits"),
        "misspelt rule": (broken(lambda d: first_query(d).update(
            expr='sum(spark_usage:cpu_request:sum{namespace=~"$namespace"})')),
            "reads spark_usage:cpu_request:sum"),
        "undefined variable": (broken(lambda d: first_query(d).update(
            expr='sum(spark_usage:cpu_requests:sum{team=~"$team"})')), "uses $team"),
        "syntax error": (broken(lambda d: first_query(d).update(
            expr="sum by (namespace (spark_usage:cpu_requests:sum)")), "does not parse"),
        "variable over an unknown metric": (broken(lambda d: d["templating"]["list"][2].update(
            query={"query": "label_values(kube_pod_info, namespace)"})), "reads kube_pod_info"),
    }
    for case, (text, expected) in cases.items():
        problems = check_text(text, known)
        assert any(expected in p for p in problems), f"self-test {case}: {problems}"
    print(f"check.py --self-test: {len(cases)} broken dashboards refused")


def check_text(text, known):
    problems, exprs = problems_of("dashboard.json", text, known)
    return problems + parse_problems(exprs)


def main():
    known = known_metrics()
    if sys.argv[1:] == ["--self-test"]:
        self_test(known)
        return 0
    files = sorted(HERE.glob("*.json"))
    problems = check(files, known) if files else ["no dashboard under deploy/grafana"]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"check.py: {len(files)} dashboards ok ({', '.join(f.name for f in files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
