#!/usr/bin/env bash
# End-to-end figure: executor pod creations per second and their p50/p99 through the real test
# kube-apiserver (tests/e2e/cluster.sh: etcd + kube-apiserver on loopback), without a webhook,
# with spark-admission registered, with the allowed:true baseline webhook
# (examples/baseline_server.rs) registered, and with that baseline answering a fixed copy of
# spark-admission's patch, in one run, alternating rounds so that a busy moment of the machine
# does not land on one side only. CONCURRENCY=1 is how Spark's driver creates executors: one
# create call after another.
#
#   benches/apiserver.sh              # ~1 minute after tests/e2e/setup.sh's first run
#   PODS=300 CONCURRENCY=10 ROUNDS=2 benches/apiserver.sh
#
# Stops the cluster and the webhooks it started (by pid) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PODS=${PODS:-300}
CONCURRENCY=${CONCURRENCY:-10}
ROUNDS=${ROUNDS:-2}

tests/e2e/setup.sh >/dev/null
cargo build --release --quiet --bin spark-admission --example pod_churn --example baseline_server
BIN=target/release/spark-admission
BASELINE=target/release/examples/baseline_server
CHURN=target/release/examples/pod_churn

DIR=$(mktemp -d /tmp/spark-admission-apiserver-bench.XXXXXX)
# shellcheck source=benches/cluster_lib.sh
source benches/cluster_lib.sh
start_bench_cluster "$DIR"

CA_BUNDLE=$("$BIN" certs --dns 127.0.0.1 localhost --out "$DIR/pki" | tail -n 1 | tr -d '[:space:]')
declare -A PORT ADMIN
# serve NAME COMMAND...: starts a webhook on free ports and waits until it is ready.
serve() {
    local name=$1; shift
    PORT[$name]=$(free_port); ADMIN[$name]=$(free_port)
    "$@" --listen "127.0.0.1:${PORT[$name]}" --admin-listen "127.0.0.1:${ADMIN[$name]}" \
        --tls-cert "$DIR/pki/tls.crt" --tls-key "$DIR/pki/tls.key" >"$DIR/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ADMIN[$name]}/readyz") == 200 ]] && return
        sleep 0.05
    done
    echo "$name not ready" >&2; cat "$DIR/$name.log" >&2; exit 1
}
serve with "$BIN" serve --policy-file examples/policies/platform.yaml --log-level warn
# The allowed:true baseline: what any webhook costs the apiserver (the call, JSON both ways).
serve baseline "$BASELINE"
# The same webhook answering with the patch spark-admission gives the executor fixture, computed
# once: what the apiserver's handling of that patch costs, apart from computing it.
"$BIN" mutate --policy examples/policies/platform.yaml --patch \
    tests/fixtures/spark-4.3/executor-review.json >"$DIR/patch.json" 2>/dev/null
serve patched "$BASELINE" --patch "$DIR/patch.json"

# Each webhook is scoped to namespaces labelled bench-webhook=<its name>; pods elsewhere never
# reach it.
for name in with baseline patched; do
    cat >"$DIR/webhook-$name.yaml" <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: spark-admission-bench-$name
webhooks:
  - name: $name.bench.spark-admission.io
    admissionReviewVersions: ["v1"]
    clientConfig:
      url: https://127.0.0.1:${PORT[$name]}/mutate
      caBundle: $CA_BUNDLE
    failurePolicy: Fail
    reinvocationPolicy: IfNeeded
    sideEffects: None
    timeoutSeconds: 5
    objectSelector:
      matchExpressions: [{key: spark-role, operator: In, values: [driver, executor]}]
    namespaceSelector:
      matchLabels: {bench-webhook: "$name"}
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
        scope: Namespaced
YAML
    kubectl apply -f "$DIR/webhook-$name.yaml" >/dev/null
done
sleep 2   # the apiserver picks webhook configurations up through an informer

requests() {
    curl -s "http://127.0.0.1:${ADMIN[with]}/metrics" \
        | awk '/^spark_admission_requests_total\{/ { s += $2 } END { print s + 0 }'
}

: >"$DIR/results.jsonl"
for round in $(seq "$ROUNDS"); do
    for side in without with baseline patched; do
        ns="bench-$side-$round"
        kubectl create namespace "$ns" >/dev/null
        if [[ $side != without ]]; then kubectl label namespace "$ns" "bench-webhook=$side" >/dev/null; fi
        before=$(requests)
        "$CHURN" --namespace "$ns" --pods "$PODS" --concurrency "$CONCURRENCY" \
            --prefix "exec-$round" --label "$side" >>"$DIR/results.jsonl"
        echo "  ($side, round $round: spark-admission answered $(( $(requests) - before )) reviews)" >&2
    done
done

# The apiserver's own view of each webhook call (request out to response decoded), to tell the
# call apart from what the apiserver does with the answer (applying the patch, decoding again).
kubectl get --raw /metrics \
    | awk '/^apiserver_admission_webhook_admission_duration_seconds_(sum|count)\{/' >"$DIR/webhook-metrics.txt"

python3 - "$DIR/results.jsonl" "$PODS" "$CONCURRENCY" "$DIR/webhook-metrics.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(side, key):
    return statistics.median(r[key] for r in rows if r["label"] == side)
print(f"\n{sys.argv[2]} executor pods per round, concurrency {sys.argv[3]}, "
      f"{len(rows) // 4} rounds (medians over rounds)\n")
print("| figure | without webhook | allowed:true webhook | fixed-patch webhook "
      "| spark-admission | allowed:true / without | spark-admission / without "
      "| spark-admission / fixed-patch |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for key, name, unit in [("creates_per_s", "pod creations per second", "/s"),
                        ("p50_ms", "create p50", " ms"), ("p90_ms", "create p90", " ms"),
                        ("p99_ms", "create p99", " ms")]:
    w, b, f, s = (med(side, key) for side in ("without", "baseline", "patched", "with"))
    print(f"| {name} | {w:.1f}{unit} | {b:.1f}{unit} | {f:.1f}{unit} | {s:.1f}{unit} "
          f"| {b / w:.2f}x | {s / w:.2f}x | {s / f:.2f}x |")
print(f"\nerrors: {sum(r['errors'] for r in rows)}")
import re
calls = {}
for line in open(sys.argv[4]):
    m = re.match(r'apiserver_admission_webhook_admission_duration_seconds_(sum|count)\{.*name="([^"]+)".*\} (\S+)', line)
    if m:
        calls.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
for name, v in sorted(calls.items()):
    if v.get("count"):
        print(f"apiserver's mean webhook call, {name}: {v['sum'] / v['count'] * 1000:.2f} ms over {v['count']:.0f} calls")
# A failed pod creation is a broken benchmark, whatever the figures say (CI runs a short one).
sys.exit(1 if sum(r["errors"] for r in rows) else 0)
PY
echo "raw results: $DIR/results.jsonl; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
