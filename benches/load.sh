#!/usr/bin/env bash
# Load benchmark: spark-admission beside two allowed:true baselines (examples/baseline_server.rs,
# the same TLS listener and HTTP stack): `baseline` parses the whole AdmissionReview<Pod> as a
# kube-rs webhook does, `lean` with spark-admission's own parse (managedFields skipped). Each
# figure is measured on all three in the same run, one right after the other, with
# examples/loadgen.rs calling them the way the kube-apiserver does.
#
#   benches/load.sh                 # ~3 minutes; prints a markdown table, keeps JSON in $OUT
#   LOAD_SCALE=0.2 benches/load.sh  # fewer requests (a quick look)
#   QUOTAS=1 benches/load.sh        # spark-admission with a quota in the policy (see below)
#   QUOTAS=1 QUOTA_PODS=10000 benches/load.sh   # ... and 10,000 Spark pods tracked
#
# QUOTAS=1: a policy with quotas goes into force only once its pod watch has listed every Spark
# pod from a real apiserver, so a throw-away cluster is started first (tests/e2e/cluster.sh,
# after tests/e2e/setup.sh; a few seconds) and spark-admission alone gets its KUBECONFIG
# ("start to ready" then includes the watch's first listing; etcd and kube-apiserver sit idle
# beside every server's load). Its policy is platform.yaml plus a quota on the fixtures'
# namespace (spark-jobs) with limits no load here reaches. Every review is then decided against
# the ledger and, not being a dry run, reserves the pod: loadgen sends one fixed pod name, so
# each review renews the same reservation, as a reinvoked webhook does (varying names would pile
# up reservations for their 30 s). QUOTA_PODS=N first creates N executor pods in other
# namespaces (examples/pod_churn.rs, 5 pods per application) for the watch to track. The run
# fails if any review was refused for a quota or the watch does not track QUOTA_PODS pods. The
# baselines run exactly as without QUOTAS; compare the ratios of two runs with
# benches/load_compare.py.
#
# Everything goes to 127.0.0.1 on free ports; the servers started here are stopped by pid on
# exit. Figures: start to ready, idle RSS, burst (1,000 reviews at concurrency 100, pool 25)
# with its peak RSS, keep-alive (executor, driver), new connection per request, open loop at
# 1,000 reviews/s, and 3 MiB reviews with the RSS 2 s after them and again after 3,000 normal
# reviews.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${LOAD_SCALE:-1}
OUT=${OUT:-$(mktemp -d /tmp/spark-admission-load.XXXXXX)}
n() { python3 -c "print(max(1, int($1 * $SCALE)))"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

QUOTAS=${QUOTAS:-}
QUOTA_PODS=${QUOTA_PODS:-0}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin spark-admission --example baseline_server --example loadgen \
    ${QUOTAS:+--example pod_churn}
BIN=$TARGET/release/spark-admission
BASELINE=$TARGET/release/examples/baseline_server
LOADGEN=$TARGET/release/examples/loadgen
"$BIN" certs --dns localhost 127.0.0.1 --out "$OUT/pki" >/dev/null

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n $QUOTAS ]]; then tests/e2e/cluster.sh stop "$OUT/cluster" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

SPARK_POLICY=examples/policies/platform.yaml
SPARK_ENV=()
if [[ -n $QUOTAS ]]; then
    tests/e2e/setup.sh >/dev/null
    tests/e2e/cluster.sh start "$OUT/cluster" >/dev/null
    SPARK_ENV=(env "KUBECONFIG=$OUT/cluster/kubeconfig")
    SPARK_POLICY=$OUT/quotas.yaml
    {
        cat examples/policies/platform.yaml
        cat <<'YAML'
quotas:
  - name: spark-jobs
    match: {namespaces: [spark-jobs]}
    perApplication: {maxExecutors: 100000, maxCpu: "1000000", maxMemory: 10000Ti}
    perNamespace: {maxApplications: 100000, maxCpu: "1000000", maxMemory: 10000Ti}
YAML
    } >"$SPARK_POLICY"
    "$BIN" check "$SPARK_POLICY" >/dev/null
    if ((QUOTA_PODS > 0)); then
        for i in 1 2 3 4; do
            KUBECONFIG=$OUT/cluster/kubeconfig kubectl create namespace "spark-team-$i" >/dev/null
            KUBECONFIG=$OUT/cluster/kubeconfig "$TARGET/release/examples/pod_churn" \
                --namespace "spark-team-$i" --pods $((QUOTA_PODS / 4)) --warmup 0 --concurrency 20 \
                --apps $((QUOTA_PODS / 20 > 0 ? QUOTA_PODS / 20 : 1)) \
                --prefix "nightly-etl-521012a209d3fc2a-exec" --label "spark-team-$i" >/dev/null
        done
    fi
fi

rss_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# rss_snapshot FIGURE: records every server's current RSS under FIGURE.
rss_snapshot() {
    for s in "${SERVERS[@]}"; do
        echo "{\"label\":\"$s\",\"figure\":\"$1\",\"rss_kb\":$(rss_kb "${PID[$s]}" VmRSS)}" >>"$OUT/results.jsonl"
    done
}

# start NAME COMMAND...: starts a server, waits for /readyz (at most 10 s), records its pid,
# ports and the milliseconds from spawn to ready.
declare -A PID PORT ADMIN READY_MS
start() {
    local name=$1; shift
    local port admin
    port=$(free_port); admin=$(free_port); ADMIN[$name]=$admin
    local t0
    t0=$(date +%s%N)
    "$@" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --tls-cert "$OUT/pki/tls.crt" --tls-key "$OUT/pki/tls.key" >"$OUT/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 2000); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz") == 200 ]]; then
            READY_MS[$name]=$(( ($(date +%s%N) - t0) / 1000000 ))
            PID[$name]=$pid; PORT[$name]=$port
            return
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$OUT/$name.log"; exit 1; }
        sleep 0.005
    done
    echo "$name not ready in 10 s" >&2; cat "$OUT/$name.log" >&2; exit 1
}

start spark "${SPARK_ENV[@]}" "$BIN" serve --policy-file "$SPARK_POLICY" --log-level warn
start baseline "$BASELINE" --parse full
start lean "$BASELINE" --parse lean
SERVERS=(spark baseline lean)
sleep 1
for s in "${SERVERS[@]}"; do
    echo "{\"label\":\"$s\",\"figure\":\"start\",\"ready_ms\":${READY_MS[$s]},\"idle_rss_kb\":$(rss_kb "${PID[$s]}" VmRSS)}" >>"$OUT/results.jsonl"
done

# load FIGURE LOADGEN-ARGS...: runs the load on spark-admission, then on each baseline.
load() {
    local figure=$1; shift
    for s in "${SERVERS[@]}"; do
        # Only right answers count: the policy's patch from spark-admission, allowed:true from
        # the baselines.
        local expect=allow
        [[ $s == spark ]] && expect=patch
        "$LOADGEN" --target "https://127.0.0.1:${PORT[$s]}/mutate" --ca "$OUT/pki/ca.crt" \
            --server-pid "${PID[$s]}" --label "$s" --expect "$expect" "$@" \
            | python3 -c "import json,sys; r=json.load(sys.stdin); r['figure']='$figure'; print(json.dumps(r))" \
            >>"$OUT/results.jsonl"
    done
}

# The burst first, so VmHWM is the burst's peak.
load burst --mode churn --body executor --requests 1000 --concurrency 100 --pool 25
# The keep-alive figures carry the CPU and throughput targets and vary most from run to run on a
# shared machine: three rounds, alternating servers, medians reported.
for _ in 1 2 3; do
    load keepalive-executor --mode keepalive --body executor --requests "$(n 20000)" --concurrency 25
    load keepalive-driver --mode keepalive --body driver --requests "$(n 20000)" --concurrency 25
done
load newconn --mode newconn --body executor --requests "$(n 3000)" --concurrency 25
load openloop --mode openloop --body executor --rate 1000 --requests "$(n 10000)"
sleep 1
rss_snapshot before-3mib
load 3mib --mode keepalive --body 3mib --requests "$(n 20)" --concurrency 1 --warmup 0
sleep 2
rss_snapshot after-3mib
# What happens when normal traffic resumes: the allocator reuses or returns what it kept.
load after-3mib-traffic --mode keepalive --body executor --requests 3000 --concurrency 25
sleep 2
rss_snapshot after-3mib-then-traffic

quotas_failed=0
if [[ -n $QUOTAS ]]; then
    # A refusal for a quota already counts as a loadgen error; the metrics say why, and that the
    # ledger holds what was sent.
    curl -s "http://127.0.0.1:${ADMIN[spark]}/metrics" >"$OUT/spark-metrics.txt"
    python3 - "$OUT/spark-metrics.txt" "$((QUOTA_PODS / 4 * 4))" <<'PY' || quotas_failed=1
import re, sys
text = open(sys.argv[1]).read()
def total(metric, labels=""):
    pattern = rf"^{metric}(?:\{{[^}}]*{labels}[^}}]*\}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))
reviews = total("spark_admission_requests_total")
denied = total("spark_admission_requests_total", 'result="denied"')
quota_denied = total("spark_admission_quota_denied_total")
confirmed = total("spark_admission_quota_confirm_total")
tracked = total("spark_admission_tracked_pods")
print(f"quotas: {reviews:.0f} reviews, {denied:.0f} denied ({quota_denied:.0f} for a quota), "
      f"{confirmed:.0f} confirming LISTs, {tracked:.0f} pods tracked")
sys.exit(1 if denied or quota_denied or tracked != float(sys.argv[2]) else 0)
PY
fi
python3 benches/report.py "$OUT/results.jsonl"
echo
echo "raw results: $OUT/results.jsonl; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$quotas_failed"
