#!/usr/bin/env bash
# Checks the PrometheusRules with promtool (Debian package `prometheus`): syntax of every
# expression of alerts.yaml and spark-usage.yaml, then their unit tests (alerts_test.yaml,
# spark-usage_test.yaml); then the Grafana dashboards (deploy/grafana/check.py: JSON, required
# fields, each query through promtool, and only metrics the rules, kube-state-metrics or
# spark-admission have).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
command -v promtool >/dev/null || { echo "check.sh: promtool not found (apt-get install prometheus)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/test"
# PrometheusRule -> rule file: once whole (for `check rules`), once without annotations for the
# unit tests (promtool would otherwise compare every rendered description).
extract() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", rule["kind"]
groups = rule["spec"]["groups"]
yaml.safe_dump({"groups": groups}, open(sys.argv[2], "w"), sort_keys=False)
for group in groups:
    for r in group["rules"]:
        r.pop("annotations", None)
yaml.safe_dump({"groups": groups}, open(sys.argv[3], "w"), sort_keys=False)
PY
}
# Each PrometheusRule, the rule file name its tests name, and its tests.
extract "$here/alerts.yaml" "$tmp/rules.yaml" "$tmp/test/rules.yaml"
extract "$here/spark-usage.yaml" "$tmp/spark-usage.rules.yaml" "$tmp/test/spark-usage.rules.yaml"
cp "$here/alerts_test.yaml" "$here/spark-usage_test.yaml" "$tmp/test/"
promtool check rules "$tmp/rules.yaml" "$tmp/spark-usage.rules.yaml"
promtool test rules "$tmp/test/alerts_test.yaml" "$tmp/test/spark-usage_test.yaml"
python3 "$here/../grafana/check.py"
python3 "$here/../grafana/check.py" --self-test
