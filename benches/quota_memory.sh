#!/usr/bin/env bash
# Memory of the quota pod watch: spark-admission's RSS with 5,000 and 10,000 live Spark pods
# tracked, against the same binary with a policy without quotas (no watch, nothing tracked),
# measured in the same run. Issue target: under 20 MB above idle with 10,000 pods.
#
#   benches/quota_memory.sh                      # ~1.5 minutes after tests/e2e/setup.sh's first run
#   STEPS="0 10000 20000" benches/quota_memory.sh
#
# A throw-away cluster (tests/e2e/cluster.sh: etcd + kube-apiserver, no webhook registered, so
# pods go straight in) gets the executor fixture's pod created NAMESPACES ways, each namespace's
# pods spread over applications of PODS_PER_APP pods (examples/pod_churn.rs). Then:
# - `idle`: `spark-admission serve` with examples/policies/platform.yaml (rules only) and the
#   cluster's KUBECONFIG, so it holds a Kubernetes client as the others do, but watches nothing;
# - `quotas-N`, for each N in STEPS: pods are created up to N, then a fresh server with the same
#   rules plus a quota on those namespaces starts; it is ready once its watch has listed every
#   Spark pod, and `spark_admission_tracked_pods` must read N;
# - the first quota server (by default started with no pod at all: the watch's fixed cost) is
#   measured again at the end, having followed every later pod through watch events, without a
#   large initial LIST: the difference is what the tracked pods themselves cost.
# Each server is read 2 s after it is ready: VmRSS and VmHWM (peak, so the initial LIST's
# buffers show there) from /proc/PID/status, and the time from spawn to ready.
#
# Everything runs on 127.0.0.1; the servers and the cluster started here are stopped by pid on
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-"0 5000 10000"}
NAMESPACES=${NAMESPACES:-4}
PODS_PER_APP=${PODS_PER_APP:-5}
CONCURRENCY=${CONCURRENCY:-20}

TARGET=${CARGO_TARGET_DIR:-target}
tests/e2e/setup.sh >/dev/null
cargo build --release --quiet --bin spark-admission --example pod_churn
BIN=$TARGET/release/spark-admission
CHURN=$TARGET/release/examples/pod_churn

DIR=$(mktemp -d /tmp/spark-admission-quota-memory.XXXXXX)
# shellcheck source=benches/cluster_lib.sh
source benches/cluster_lib.sh
start_bench_cluster "$DIR"
"$BIN" certs --dns localhost 127.0.0.1 --out "$DIR/pki" >/dev/null

spark_team_namespaces "$NAMESPACES"
cp examples/policies/platform.yaml "$DIR/rules.yaml"
{
    cat examples/policies/platform.yaml
    cat <<YAML
quotas:
  - name: spark-teams
    match: {namespaces: ["spark-team-*"]}
    perApplication: {maxExecutors: 1000, maxCpu: "10000", maxMemory: 100Ti}
    perNamespace: {maxApplications: 100000, maxCpu: "1000000", maxMemory: 10000Ti}
YAML
} >"$DIR/quotas.yaml"
"$BIN" check "$DIR/quotas.yaml" >/dev/null

status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
tracked() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '$1 == "spark_admission_tracked_pods" { print $2 }'
}

declare -A PID ADMIN READY_MS
# serve NAME POLICY: starts a server on free ports and waits until /readyz answers 200 (for a
# policy with quotas: its watch has listed every Spark pod).
serve() {
    local name=$1 policy=$2 port t0 pid
    port=$(free_port); ADMIN[$name]=$(free_port)
    t0=$(date +%s%N)
    "$BIN" serve --policy-file "$policy" --log-level warn \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:${ADMIN[$name]}" \
        --tls-cert "$DIR/pki/tls.crt" --tls-key "$DIR/pki/tls.key" >"$DIR/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid"); PID[$name]=$pid
    for _ in $(seq 12000); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ADMIN[$name]}/readyz") == 200 ]]; then
            READY_MS[$name]=$(( ($(date +%s%N) - t0) / 1000000 ))
            return
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$DIR/$name.log" >&2; exit 1; }
        sleep 0.01
    done
    echo "$name not ready in 120 s" >&2; cat "$DIR/$name.log" >&2; exit 1
}

# record NAME EXPECTED_TRACKED: one result line, 2 s after the call.
record() {
    local name=$1 expected=$2 got
    sleep 2
    got=$(tracked "${ADMIN[$name]}")
    if [[ $expected != - && $got != "$expected" ]]; then
        echo "$name tracks ${got:-nothing} pods, expected $expected" >&2; exit 1
    fi
    echo "{\"server\":\"$1\",\"tracked\":\"${got:-0}\",\"ready_ms\":${READY_MS[$name]},\"rss_kb\":$(status_kb "${PID[$name]}" VmRSS),\"hwm_kb\":$(status_kb "${PID[$name]}" VmHWM)}" >>"$DIR/results.jsonl"
}

serve idle "$DIR/rules.yaml"
created=0
first=""
for step in $STEPS; do
    # Pods up to `step`, spread evenly over the namespaces, named as Spark names executors.
    per_ns=$(( (step - created) / NAMESPACES ))
    for ns in "${NS[@]}"; do
        ((per_ns > 0)) || break
        "$CHURN" --namespace "$ns" --pods "$per_ns" --warmup 0 --concurrency "$CONCURRENCY" \
            --apps $(( per_ns / PODS_PER_APP > 0 ? per_ns / PODS_PER_APP : 1 )) \
            --prefix "nightly-etl-521012a209d3fc2a-s$step-exec" --label "$ns" >/dev/null
    done
    created=$(( created + per_ns * NAMESPACES ))
    serve "quotas-$created" "$DIR/quotas.yaml"
    record "quotas-$created" "$created"
    first=${first:-quotas-$created}
done
if [[ $first != "quotas-$created" ]]; then
    READY_MS[$first-followed]=${READY_MS[$first]}; PID[$first-followed]=${PID[$first]}; ADMIN[$first-followed]=${ADMIN[$first]}
    record "$first-followed" "$created"
fi
record idle -

# What the watch's initial LIST carries (the apiserver adds managedFields to every pod; the
# watch reads it in pages of --quota-watch-page-size, 100 by default, and skips what it does
# not need).
list_bytes=$(kubectl get --raw "/api/v1/pods?labelSelector=spark-role" | wc -c)

python3 - "$DIR/results.jsonl" "$list_bytes" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["server"]: r for r in rows}
idle = by["idle"]
mb = lambda kb: kb / 1024
print("\n| server | tracked pods | spawn to ready | VmRSS | VmHWM (peak) | RSS above idle | peak above idle |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r['server']} | {int(r['tracked']):,} | {r['ready_ms']} ms | {mb(r['rss_kb']):.1f} MB "
          f"| {mb(r['hwm_kb']):.1f} MB | {mb(r['rss_kb'] - idle['rss_kb']):+.1f} MB "
          f"| {mb(r['hwm_kb'] - idle['hwm_kb']):+.1f} MB |")
print()
for r in rows:
    if r["server"].endswith("-followed"):
        start = by[r["server"][: -len("-followed")]]
        pods = int(r["tracked"]) - int(start["tracked"])
        if pods > 0:
            print(f"{start['server']} followed {pods:,} more pods through watch events: "
                  f"{(r['rss_kb'] - start['rss_kb']) * 1024 / pods:.0f} bytes of RSS per pod")
fresh = [r for r in rows if r["server"].startswith("quotas-") and not r["server"].endswith("-followed")]
if len(fresh) >= 2:
    a, b = fresh[0], fresh[-1]
    pods = int(b["tracked"]) - int(a["tracked"])
    print(f"fresh servers, {a['server']} to {b['server']}: {(b['rss_kb'] - a['rss_kb']) * 1024 / pods:.0f} "
          f"bytes of RSS per pod (with what the initial LIST leaves behind)")
print(f"the initial LIST of every Spark pod as the apiserver sends it: {int(sys.argv[2]) / 2**20:.1f} MB "
      f"for {int(fresh[-1]['tracked']):,} pods")
PY
echo "raw results: $DIR/results.jsonl; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
