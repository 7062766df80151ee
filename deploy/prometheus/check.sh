#!/usr/bin/env bash
# Checks alerts.yaml with promtool (Debian package `prometheus`): syntax of every expression,
# then the unit tests in alerts_test.yaml.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
command -v promtool >/dev/null || { echo "check.sh: promtool not found (apt-get install prometheus)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/test"
python3 - "$here/alerts.yaml" "$tmp/rules.yaml" "$tmp/test/rules.yaml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", rule["kind"]
groups = rule["spec"]["groups"]
yaml.safe_dump({"groups": groups}, open(sys.argv[2], "w"), sort_keys=False)
# The unit tests compare labels only: the same rules without annotations.
for group in groups:
    for r in group["rules"]:
        r.pop("annotations", None)
yaml.safe_dump({"groups": groups}, open(sys.argv[3], "w"), sort_keys=False)
PY
cp "$here/alerts_test.yaml" "$tmp/test/"
promtool check rules "$tmp/rules.yaml"
promtool test rules "$tmp/test/alerts_test.yaml"
