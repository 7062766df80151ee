#!/usr/bin/env bash
# Capture the executor pods that real Spark (pyspark from the e2e venv, client
# mode) stores for a set of executor sizing settings, as test fixtures.
#
# Usage (against a running cluster, env sourced):
#   tests/e2e/cluster.sh start /tmp/capture-cluster
#   source /tmp/capture-cluster/env
#   tests/e2e/capture_sizing.sh [OUT_DIR]   # default tests/fixtures/spark-4.3/sizing
#
# For each case it creates namespace sizing-NN, runs spark-submit (client mode,
# spark.executor.instances=1, tests/e2e/spark_job.py) with the case's settings,
# waits for the executor pod to be stored, writes
#   OUT_DIR/NN-name.json = {"conf": {the case's settings}, "pod": <stored pod
#                          without metadata.managedFields>}
# then kills that spark-submit. One Spark at a time. Prints a summary table.
# Needs: kubectl, jq, setsid, and KUBECONFIG, E2E_APISERVER_URL, E2E_ADMIN_TOKEN.
# Knobs: E2E_CAPTURE_ONLY (regex on case names, e.g. '^(03|13)-'), E2E_CAPTURE_LOGS
# (directory for the spark-submit logs), E2E_VENV, E2E_SPARK_IMAGE.
# Use a fresh cluster: the namespaces must not exist yet (with no
# controller-manager, a deleted namespace stays Terminating for ever).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/../.." && pwd -P)
VENV=${E2E_VENV:-/var/cache/spark-admission-e2e/venv}
IMAGE=${E2E_SPARK_IMAGE:-apache/spark:4.0.0}
OUT=${1:-$ROOT/tests/fixtures/spark-4.3/sizing}
LOGS=${E2E_CAPTURE_LOGS:-$(mktemp -d /tmp/capture-sizing.XXXXXX)}
: "${E2E_APISERVER_URL:?source the cluster env first}" "${E2E_ADMIN_TOKEN:?}" "${KUBECONFIG:?}"

# name|setting setting ...  (only the size-related settings; the common ones are added below)
CASES=(
  "01-defaults|"
  "02-memory-4g-cores-2|spark.executor.memory=4g spark.executor.cores=2"
  "03-memory-overhead-1g|spark.executor.memory=2g spark.executor.memoryOverhead=1g"
  "04-overhead-factor-0.3|spark.executor.memory=8g spark.executor.memoryOverheadFactor=0.3"
  "05-min-overhead-512m|spark.executor.memory=1g spark.executor.minMemoryOverhead=512m"
  "06-pyspark-memory-512m|spark.executor.memory=2g spark.executor.pyspark.memory=512m"
  "07-offheap-1g|spark.executor.memory=2g spark.memory.offHeap.enabled=true spark.memory.offHeap.size=1g"
  "08-request-limit-cores|spark.executor.cores=4 spark.kubernetes.executor.request.cores=500m spark.kubernetes.executor.limit.cores=2"
  "09-memory-3000m|spark.executor.memory=3000m"
  "10-deprecated-k8s-overhead-factor-0.4|spark.executor.memory=2g spark.kubernetes.memoryOverheadFactor=0.4"
  # A plain spark.executor.memory=1500 cannot be captured: the driver's SparkContext
  # reads it as 1500 bytes and exits ("Executor memory 1500 must be at least
  # 471859200"), while pod sizing reads a plain number as MiB. Case 12 shows the latter.
  "11-plain-overhead-300|spark.executor.memory=1500m spark.executor.memoryOverhead=300"
  "12-plain-memory-is-mib|spark.executor.memory=471859200"
  "13-offheap-4g-memory-8g|spark.executor.memory=8g spark.memory.offHeap.enabled=true spark.memory.offHeap.size=4g"
  "14-decimal-cores-and-2048mi|spark.executor.memory=1g spark.executor.memoryOverhead=1g spark.kubernetes.executor.request.cores=0.5 spark.kubernetes.executor.limit.cores=1.5"
)
ONLY=${E2E_CAPTURE_ONLY:-.}   # an extended regex: capture only the cases whose name matches

log() { printf '[capture %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

SPARK_PGID=""
stop_spark() {
  [[ -n $SPARK_PGID ]] || return 0
  kill -TERM -- "-$SPARK_PGID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SPARK_PGID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$SPARK_PGID" 2>/dev/null || true
  wait "$SPARK_PGID" 2>/dev/null || true
  SPARK_PGID=""
}
trap stop_spark EXIT

# capture NAME SETTING...
capture() {
  local name=$1; shift
  local ns="sizing-${name%%-*}" log="$LOGS/$name.log" pod="" conf_args=() s
  for s in "$@"; do conf_args+=(--conf "$s"); done
  kubectl create namespace "$ns" >/dev/null
  log "$name: spark-submit in namespace $ns (log $log)"
  PATH="$VENV/bin:$PATH" SPARK_LOCAL_IP=127.0.0.1 \
  PYSPARK_PYTHON="$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$VENV/bin/python" \
  setsid "$VENV/bin/spark-submit" \
    --master "k8s://$E2E_APISERVER_URL" \
    --deploy-mode client \
    --name sizing \
    --conf spark.kubernetes.authenticate.oauthToken="$E2E_ADMIN_TOKEN" \
    --conf spark.kubernetes.trust.certificates=true \
    --conf spark.kubernetes.namespace="$ns" \
    --conf spark.kubernetes.container.image="$IMAGE" \
    --conf spark.executor.instances=1 \
    --conf spark.driver.host=127.0.0.1 \
    --conf spark.driver.bindAddress=127.0.0.1 \
    --conf spark.ui.enabled=false \
    --conf spark.scheduler.minRegisteredResourcesRatio=0 \
    "${conf_args[@]}" \
    "$HERE/spark_job.py" >"$log" 2>&1 </dev/null &
  SPARK_PGID=$!
  for _ in $(seq 1 240); do
    pod=$(kubectl -n "$ns" get pods -l spark-role=executor -o name | head -n1)
    [[ -n $pod ]] && break
    kill -0 "$SPARK_PGID" 2>/dev/null || { tail -n 40 "$log" >&2; log "$name: spark-submit exited"; return 1; }
    sleep 0.5
  done
  [[ -n $pod ]] || { tail -n 40 "$log" >&2; log "$name: no executor pod after 120 s"; return 1; }
  printf '%s\n' "$@" | jq -R 'capture("^(?<k>[^=]+)=(?<v>.*)$") | {(.k): .v}' | jq -s 'add // {}' >"$LOGS/$name.conf.json"
  kubectl -n "$ns" get "$pod" -o json |
    jq --slurpfile conf "$LOGS/$name.conf.json" '{conf: $conf[0], pod: del(.metadata.managedFields)}' \
      >"$OUT/$name.json"
  log "$name: wrote $OUT/$name.json ($pod)"
  stop_spark
}

mkdir -p "$OUT" "$LOGS"
for c in "${CASES[@]}"; do
  [[ ${c%%|*} =~ $ONLY ]] || continue
  # shellcheck disable=SC2086 # the settings are space-separated on purpose
  capture "${c%%|*}" ${c#*|}
done

printf '%-40s %-8s %-8s %-10s %-10s %-22s %s\n' case cpu-req cpu-lim mem-req mem-lim SPARK_EXECUTOR_MEMORY SPARK_EXECUTOR_CORES
for c in "${CASES[@]}"; do
  [[ -f $OUT/${c%%|*}.json ]] || continue
  jq -r --arg n "${c%%|*}" '.pod.spec.containers[0] as $c
    | ($c.env | map({(.name): .value}) | add) as $e
    | [$n, $c.resources.requests.cpu, ($c.resources.limits.cpu // "-"), $c.resources.requests.memory,
       $c.resources.limits.memory, $e.SPARK_EXECUTOR_MEMORY, $e.SPARK_EXECUTOR_CORES]
    | map(. // "-") | @tsv' "$OUT/${c%%|*}.json"
done | awk -F'\t' '{ printf "%-40s %-8s %-8s %-10s %-10s %-22s %s\n", $1, $2, $3, $4, $5, $6, $7 }'
log "done; spark-submit logs in $LOGS"
