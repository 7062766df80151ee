#!/usr/bin/env bash
# Scale of the quota pod watch (issue 24): N live Spark pods written straight into a test
# apiserver, then spark-admission started against it with a quota and without one, at each N.
# Records time to ready, RSS 2 s after ready (VmRSS) and the peak so far (VmHWM: the initial
# LIST's), and the p50/p99 of executor reviews (keep-alive, the way the apiserver calls it),
# decided against the ledger of N pods, beside the same reviews to a server without quotas.
# Target: under 64 MB above idle at peak with 100,000 pods.
#
#   benches/scale.sh                          # N = 10,000, 50,000 and 100,000: ~15 minutes
#   STEPS=200 REQUESTS=500 benches/scale.sh   # CI: it runs, well under a minute after the build
#   VARIANTS="before:/tmp/old/spark-admission: p100:target/release/spark-admission:100" \
#       benches/scale.sh                      # several servers on the same pods (LABEL:BIN:PAGE)
#   RELIST=1 benches/scale.sh                 # ... and each quota server's peak through a relist
#   ROUNDS=5                                  # review rounds per server (REQUESTS split over them)
#
# A throw-away cluster (tests/e2e/cluster.sh: etcd + kube-apiserver, no webhook registered, so
# pods go straight in; no scheduler, no kubelet, so they stay Pending and all count) gets the
# executor fixture's pod created N times with Spark's naming, in NAMESPACES namespaces,
# PODS_PER_APP pods per application (examples/pod_churn.rs). Then, at each N in STEPS:
# - each of VARIANTS (default: the binary just built, default page size) with
#   examples/policies/platform.yaml plus a quota on those namespaces and on the fixtures'
#   (spark-jobs), with limits nothing here reaches, is started alone and measured: ready once
#   its watch has listed every Spark pod (`spark_admission_tracked_pods` must read N);
# - `no-quota`: the built binary with platform.yaml alone and the same KUBECONFIG (a client,
#   no watch): the idle figure each variant is compared with, and the reviews' baseline;
# - with all of them running, REQUESTS executor reviews each from examples/loadgen.rs (as
#   benches/load.sh sends them: one pod name, so every review renews one reservation; none may
#   be refused), in ROUNDS rounds (5) of every server in turn, the order turned round each
#   round: a burst of load from elsewhere on the machine then falls on every server alike. The
#   table gives each server's median p50 and p99 over the rounds, and the median of each
#   round's ratio to the no-quota server's.
# PAGE, when given, is passed as --quota-watch-page-size (a binary without that flag takes an
# empty PAGE). RELIST=1: after the reviews, the quota servers see the apiserver restarted
# (tests/e2e/cluster.sh restart-apiserver); each watch resumes or, when the restarted apiserver
# no longer has its resourceVersion, lists every pod again into its ledger (which decides on
# throughout, and must still track N after): the peak (VmHWM) through that is recorded, with
# the time the relist took (null when the watch resumed without one within 120 s). Several
# quota servers relist at once.
#
# Output: one JSON line per server and step in $OUT/results.jsonl, and a table. Everything runs
# on 127.0.0.1; the servers and the cluster started here are stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-"10000 50000 100000"}
NAMESPACES=${NAMESPACES:-4}
PODS_PER_APP=${PODS_PER_APP:-5}
CONCURRENCY=${CONCURRENCY:-32}
REQUESTS=${REQUESTS:-20000}
ROUNDS=${ROUNDS:-5}

TARGET=${CARGO_TARGET_DIR:-target}
tests/e2e/setup.sh >/dev/null
cargo build --release --quiet --bin spark-admission --example pod_churn --example loadgen
BIN=$TARGET/release/spark-admission
CHURN=$TARGET/release/examples/pod_churn
LOADGEN=$TARGET/release/examples/loadgen
VARIANTS=${VARIANTS:-"quotas:$BIN:"}

OUT=${OUT:-$(mktemp -d /tmp/spark-admission-scale.XXXXXX)}
# shellcheck source=benches/cluster_lib.sh
source benches/cluster_lib.sh
start_bench_cluster "$OUT"
"$BIN" certs --dns localhost 127.0.0.1 --out "$OUT/pki" >/dev/null

spark_team_namespaces "$NAMESPACES"
cp examples/policies/platform.yaml "$OUT/rules.yaml"
{
    cat examples/policies/platform.yaml
    cat <<YAML
quotas:
  - name: spark-teams
    match: {namespaces: ["spark-team-*", spark-jobs]}
    perApplication: {maxExecutors: 100000, maxCpu: "1000000", maxMemory: 10000Ti}
    perNamespace: {maxApplications: 1000000, maxCpu: "10000000", maxMemory: 100000Ti}
YAML
} >"$OUT/quotas.yaml"
"$BIN" check "$OUT/quotas.yaml" >/dev/null

status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# The CPU time (user + system) a process has used, in ms: how much of the time to ready is the
# server's own work (parsing the LIST, building the ledger) rather than the apiserver's.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat"; }
metric() {
    curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

# start LABEL BIN PAGE POLICY PODS: starts a server, waits for /readyz (a policy with quotas:
# its watch has listed every Spark pod), checks what it tracks and reads its memory; the server
# keeps running (its pid, ports and figures in the SERVER_* arrays, under LABEL) until `stop_all`.
declare -A SERVER_PID SERVER_PORT SERVER_ADMIN SERVER_READY SERVER_CPU SERVER_RSS SERVER_HWM SERVER_PAGE
start() {
    local label=$1 bin=$2 page=$3 policy=$4 pods=$5 port admin t0 pid ready_ms="" cpu_ms="" tracked
    port=$(free_port); admin=$(free_port)
    local extra=() level=warn
    [[ -n $page ]] && extra=(--quota-watch-page-size "$page")
    # The state logs each complete listing at info (RELIST counts them).
    [[ $policy == "$OUT/quotas.yaml" ]] && level=warn,spark_admission::state=info
    t0=$(date +%s%N)
    "$bin" serve --policy-file "$policy" --log-level "$level" ${extra[@]+"${extra[@]}"} \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --tls-cert "$OUT/pki/tls.crt" --tls-key "$OUT/pki/tls.key" >"$OUT/$label-$pods.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 30000); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz") == 200 ]]; then
            ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
            cpu_ms=$(cpu_ms "$pid")
            break
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$OUT/$label-$pods.log" >&2; exit 1; }
        sleep 0.01
    done
    [[ -n $ready_ms ]] || { echo "$label not ready in 300 s" >&2; cat "$OUT/$label-$pods.log" >&2; exit 1; }
    sleep 2
    tracked=$(metric "$admin" spark_admission_tracked_pods)
    if [[ $policy == "$OUT/quotas.yaml" && ${tracked:-0} != "$pods" ]]; then
        echo "$label tracks ${tracked:-nothing} pods, expected $pods" >&2; exit 1
    fi
    SERVER_PID[$label]=$pid; SERVER_PORT[$label]=$port; SERVER_ADMIN[$label]=$admin
    SERVER_READY[$label]=$ready_ms; SERVER_CPU[$label]=$cpu_ms; SERVER_PAGE[$label]=${page:-default}
    SERVER_RSS[$label]=$(status_kb "$pid" VmRSS); SERVER_HWM[$label]=$(status_kb "$pid" VmHWM)
}

# reviews LABEL PODS ROUND: REQUESTS / ROUNDS keep-alive executor reviews to a running server.
# No refusal is right here: spark-admission answers every review with the policy's patch.
reviews() {
    local label=$1 pods=$2 round=$3
    "$LOADGEN" --target "https://127.0.0.1:${SERVER_PORT[$label]}/mutate" --ca "$OUT/pki/ca.crt" \
        --server-pid "${SERVER_PID[$label]}" --label "$label" --expect patch \
        --mode keepalive --body executor --requests $(( REQUESTS / ROUNDS )) --concurrency 25 \
        >"$OUT/$label-$pods.load-$round.json" 2>"$OUT/$label-$pods.load.log"
}

# record LABEL PODS RELIST_MS RELIST_HWM: one result line for a running server, then stops it.
record() {
    local label=$1 pods=$2 relist_ms=$3 relist_hwm=$4 pid=${SERVER_PID[$1]} denied
    denied=$(metric "${SERVER_ADMIN[$label]}" spark_admission_quota_denied_total)
    python3 - "$OUT" "$label" "$pods" "${SERVER_READY[$label]}" "${SERVER_CPU[$label]}" \
        "${SERVER_RSS[$label]}" "${SERVER_HWM[$label]}" "$(status_kb "$pid" VmRSS)" \
        "$(status_kb "$pid" VmHWM)" "${SERVER_PAGE[$label]}" "${denied:-0}" \
        "$relist_ms" "$relist_hwm" "$ROUNDS" >>"$OUT/results.jsonl" <<'PY'
import json, statistics, sys
out, label, pods, ready, cpu, rss, hwm, rss_after, hwm_after, page, denied, relist_ms, relist_hwm, rounds = sys.argv[1:]
loads = [json.load(open(f"{out}/{label}-{pods}.load-{i}.json")) for i in range(int(rounds))]
errors = sum(l.get("errors") or 0 for l in loads)
if errors or float(denied):
    sys.exit(f"{label} at {pods} pods: {errors} review errors, {denied} quota refusals")
print(json.dumps({
    "server": label, "pods": int(pods), "page_size": page, "ready_ms": int(ready),
    "cpu_to_ready_ms": int(cpu),
    "rss_kb": int(rss), "hwm_kb": int(hwm), "rss_after_reviews_kb": int(rss_after),
    "hwm_after_reviews_kb": int(hwm_after), "reviews": sum(l["requests"] for l in loads),
    "rounds_p50_ms": [l["p50_ms"] for l in loads], "rounds_p99_ms": [l["p99_ms"] for l in loads],
    "p50_ms": statistics.median(l["p50_ms"] for l in loads),
    "p99_ms": statistics.median(l["p99_ms"] for l in loads),
    "relist_ms": json.loads(relist_ms), "hwm_after_relist_kb": json.loads(relist_hwm),
}))
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

created=0
for step in $STEPS; do
    # Pods up to `step`, spread evenly over the namespaces, named as Spark names executors.
    per_ns=$(( (step - created) / NAMESPACES ))
    if ((per_ns > 0)); then
        t0=$(date +%s)
        for ns in "${NS[@]}"; do
            "$CHURN" --namespace "$ns" --pods "$per_ns" --warmup 0 --concurrency "$CONCURRENCY" \
                --apps $(( per_ns / PODS_PER_APP > 0 ? per_ns / PODS_PER_APP : 1 )) \
                --prefix "nightly-etl-521012a209d3fc2a-s$step-exec" --label "$ns" >/dev/null 2>>"$OUT/churn.log"
        done
        created=$(( created + per_ns * NAMESPACES ))
        echo "$created pods in the cluster ($(( $(date +%s) - t0 )) s to create these)" >&2
    fi
    # Each quota server is started, listed and measured alone (the others not yet running, so
    # its time to ready and peak are its own), then they all keep running.
    labels=()
    for variant in $VARIANTS; do
        IFS=: read -r label bin page <<<"$variant"
        start "$label" "$bin" "$page" "$OUT/quotas.yaml" "$created"
        labels+=("$label")
    done
    start no-quota "$BIN" "" "$OUT/rules.yaml" "$created"
    # The reviews in ROUNDS rounds, every server in each round and the order turned round each
    # time, so a burst of load on the machine falls on all of them alike, not on one server's run.
    order=(no-quota "${labels[@]}")
    for ((round = 0; round < ROUNDS; round++)); do
        for ((i = 0; i < ${#order[@]}; i++)); do
            reviews "${order[(i + round) % ${#order[@]}]}" "$created" "$round"
        done
    done
    # RELIST: the apiserver restarted; each quota server's watch resumes or, when the restarted
    # apiserver no longer has its resourceVersion, lists every pod again into its ledger.
    declare -A relist_ms=() relist_hwm=()
    if [[ -n ${RELIST:-} ]]; then
        t1=$(date +%s%N)
        tests/e2e/cluster.sh restart-apiserver "$OUT/cluster" >/dev/null 2>&1
        for label in "${labels[@]}"; do
            relist_ms[$label]=null
            for _ in $(seq 1200); do
                if (( $(grep -c "listed every live Spark pod" "$OUT/$label-$created.log") >= 2 )); then
                    relist_ms[$label]=$(( ($(date +%s%N) - t1) / 1000000 ))
                    break
                fi
                sleep 0.1
            done
            relist_hwm[$label]=$(status_kb "${SERVER_PID[$label]}" VmHWM)
            # The relist updated the ledger in place: each pod still counted once, none dropped.
            tracked=$(metric "${SERVER_ADMIN[$label]}" spark_admission_tracked_pods)
            if [[ ${tracked:-0} != "$created" ]]; then
                echo "$label tracks ${tracked:-nothing} pods after the relist, expected $created" >&2; exit 1
            fi
        done
    fi
    for label in "${labels[@]}"; do
        record "$label" "$created" "${relist_ms[$label]:-null}" "${relist_hwm[$label]:-null}"
    done
    record no-quota "$created" null null
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
base = {r["pods"]: r for r in rows if r["server"] == "no-quota"}
mb = lambda kb: kb / 1024
# The median over rounds of each round's ratio to the no-quota server's figure in that round.
ratio = lambda r, b, q: statistics.median(
    x / y for x, y in zip(r[f"rounds_{q}_ms"], b[f"rounds_{q}_ms"]))
print("\n(review p50 and p99: medians over the rounds; the ratios: medians of each round's ratio)")
print("| server | pods | page | spawn to ready | VmRSS | VmHWM (peak) | RSS above idle | peak above idle "
      "| server CPU to ready | bytes/pod (RSS above idle) | review p50 | review p99 | p50 / no-quota | p99 / no-quota |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    b = base.get(r["pods"])
    above = r["rss_kb"] - b["rss_kb"]
    per_pod = f"{above * 1024 / r['pods']:.0f}" if r["pods"] and r["server"] != "no-quota" else "-"
    print(f"| {r['server']} | {r['pods']:,} | {r['page_size']} | {r['ready_ms']:,} ms | {mb(r['rss_kb']):.1f} MB "
          f"| {mb(r['hwm_kb']):.1f} MB | {mb(above):+.1f} MB | {mb(r['hwm_kb'] - b['hwm_kb']):+.1f} MB "
          f"| {r['cpu_to_ready_ms']:,} ms | {per_pod} "
          f"| {r['p50_ms']:.3f} ms | {r['p99_ms']:.3f} ms | {ratio(r, b, 'p50'):.2f}x "
          f"| {ratio(r, b, 'p99'):.2f}x |")
for r in rows:
    if r.get("hwm_after_relist_kb") is not None:
        b = base[r["pods"]]
        took = f"relisted in {r['relist_ms']:,} ms" if r["relist_ms"] is not None else "resumed without a relist"
        print(f"{r['server']} at {r['pods']:,} pods, apiserver restarted: {took}; peak so far "
              f"{mb(r['hwm_after_relist_kb'] - b['hwm_kb']):+.1f} MB above idle")
PY
echo "raw results: $OUT/results.jsonl; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
