#!/usr/bin/env bash
# Self-check of the e2e infrastructure (no webhook involved):
#   1. cluster.sh start (etcd + kube-apiserver on loopback)
#   2. kubectl: namespace, PriorityClass, the executor pod of
#      tests/fixtures/spark-4.3/executor-review.json stored as-is
#   3. the webhook service-account token authenticates and is denied by RBAC
#   4. real spark-submit (client mode) creates 2 executor pods
#   5. cluster.sh restart-apiserver keeps the data (etcd is kept)
#   6. everything stopped (spark, apiserver, etcd)
# Usage: tests/e2e/selfcheck.sh [DIR]   (DIR defaults to a new temp dir)
# Prints timings; exits non-zero on the first failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/../.." && pwd -P)
E2E_CACHE=${E2E_CACHE:-/var/cache/spark-admission-e2e}
VENV=${E2E_VENV:-$E2E_CACHE/venv}
DIR=${1:-$(mktemp -d /tmp/spark-admission-e2e.XXXXXX)}
NS=e2e-selfcheck
SPARK_PGID=""

log() { printf '[selfcheck %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
  local rc=$?
  if [[ -n $SPARK_PGID ]] && kill -0 "$SPARK_PGID" 2>/dev/null; then
    kill -TERM -- "-$SPARK_PGID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SPARK_PGID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$SPARK_PGID" 2>/dev/null || true
  fi
  "$HERE/cluster.sh" stop "$DIR" || true
  if ((rc)); then log "FAILED (rc=$rc); logs kept in $DIR"; else log "OK; logs in $DIR"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. cluster
t=$(now)
"$HERE/cluster.sh" start "$DIR" > /dev/null
T_CLUSTER=$(elapsed "$t")
# shellcheck disable=SC1091
source "$DIR/env"
log "cluster started in ${T_CLUSTER}s at $E2E_APISERVER_URL"
kubectl version -o json 2>/dev/null | jq -r '"server: " + .serverVersion.gitVersion' >&2

# ---------------------------------------------------------------- 2. kubectl
kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: e2e-spark-batch
value: 1000
globalDefault: false
description: self-check priority class
YAML
kubectl get priorityclass e2e-spark-batch -o name >/dev/null
jq --arg ns "$NS" '.request.object | del(.metadata.managedFields) | .metadata.namespace = $ns' \
  "$ROOT/tests/fixtures/spark-4.3/executor-review.json" | kubectl create -f - >/dev/null
FIXTURE_POD=$(jq -r '.request.object.metadata.name' "$ROOT/tests/fixtures/spark-4.3/executor-review.json")
kubectl -n "$NS" get pod "$FIXTURE_POD" -o json |
  jq -e '.status.phase == "Pending" and .metadata.labels["spark-role"] == "executor"' >/dev/null ||
  die "fixture pod not stored as expected"
log "fixture pod $NS/$FIXTURE_POD stored (Pending)"

# ------------------------------------------------------- 3. webhook SA token
code=$(curl -s -o "$DIR/sa-check.json" -w '%{http_code}' --cacert "$E2E_CA_FILE" \
  -H "Authorization: Bearer $E2E_WEBHOOK_TOKEN" "$E2E_APISERVER_URL/api/v1/namespaces/$NS/pods")
[[ $code == 403 ]] || die "webhook SA token: expected 403, got $code"
grep -q 'system:serviceaccount:spark-admission:spark-admission' "$DIR/sa-check.json" ||
  die "webhook SA token did not authenticate as the expected user"
log "webhook SA token authenticates as $E2E_WEBHOOK_USER and RBAC denies it (403)"

# ---------------------------------------------------------------- 4. spark
[[ -x $VENV/bin/spark-submit ]] || die "$VENV/bin/spark-submit missing: run tests/e2e/setup.sh"
# A placeholder "driver" pod: with spark.kubernetes.driver.pod.name set, the
# client-mode driver looks this pod up (and fails if it does not exist) and
# makes it the ownerReference of every executor pod.
DRIVER_POD=e2e-spark-job-driver
kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $DRIVER_POD
  labels: {spark-role: driver, spark-app-name: e2e-spark-job}
spec:
  containers:
  - name: spark-kubernetes-driver
    image: apache/spark:4.0.0
YAML
t=$(now)
PATH="$VENV/bin:$PATH" SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$VENV/bin/python" \
setsid "$VENV/bin/spark-submit" \
  --master "k8s://$E2E_APISERVER_URL" \
  --deploy-mode client \
  --name e2e-spark-job \
  --conf spark.kubernetes.authenticate.oauthToken="$E2E_ADMIN_TOKEN" \
  --conf spark.kubernetes.trust.certificates=true \
  --conf spark.kubernetes.namespace="$NS" \
  --conf spark.kubernetes.driver.pod.name="$DRIVER_POD" \
  --conf spark.executor.instances=2 \
  --conf spark.kubernetes.container.image=apache/spark:4.0.0 \
  --conf spark.driver.host=127.0.0.1 \
  --conf spark.driver.bindAddress=127.0.0.1 \
  --conf spark.ui.enabled=false \
  --conf spark.scheduler.minRegisteredResourcesRatio=0 \
  "$HERE/spark_job.py" > "$DIR/logs/spark-submit.log" 2>&1 < /dev/null &
SPARK_PGID=$!
log "spark-submit started (pgid $SPARK_PGID, log $DIR/logs/spark-submit.log)"
n=0
for _ in $(seq 1 240); do
  n=$(kubectl -n "$NS" get pods -l spark-role=executor,spark-app-name=e2e-spark-job -o name 2>/dev/null | wc -l)
  ((n >= 2)) && break
  kill -0 "$SPARK_PGID" 2>/dev/null || { tail -n 40 "$DIR/logs/spark-submit.log" >&2; die "spark-submit exited"; }
  sleep 0.5
done
((n >= 2)) || { tail -n 40 "$DIR/logs/spark-submit.log" >&2; die "only $n executor pods after 120s"; }
T_SPARK=$(elapsed "$t")
log "2 executor pods stored ${T_SPARK}s after spark-submit started:"
kubectl -n "$NS" get pods -l spark-role=executor -L spark-exec-id,spark-app-selector >&2
kubectl -n "$NS" get pods -l spark-role=executor,spark-app-name=e2e-spark-job -o json |
  jq -e --arg d "$DRIVER_POD" 'all(.items[]; .metadata.ownerReferences[0].name == $d)' >/dev/null ||
  die "executor pods are not owned by the driver pod $DRIVER_POD"
# With spark.scheduler.minRegisteredResourcesRatio=0 the SparkSession does not
# wait (30 s by default) for executors that will never register.
for _ in $(seq 1 60); do grep -q E2E_SPARK_JOB_READY "$DIR/logs/spark-submit.log" && break; sleep 0.5; done
grep -q E2E_SPARK_JOB_READY "$DIR/logs/spark-submit.log" || die "spark_job.py never printed E2E_SPARK_JOB_READY"
T_READY=$(elapsed "$t")
log "SparkSession up ${T_READY}s after spark-submit started"

# ------------------------------------------------------- 5. apiserver restart
t=$(now)
"$HERE/cluster.sh" restart-apiserver "$DIR"
T_RESTART=$(elapsed "$t")
kubectl -n "$NS" get pod "$FIXTURE_POD" -o name >/dev/null || die "fixture pod lost after apiserver restart"
log "apiserver restarted in ${T_RESTART}s; data kept"

# ---------------------------------------------------------------- 6. stop
kill -TERM -- "-$SPARK_PGID"
for _ in $(seq 1 150); do kill -0 "$SPARK_PGID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SPARK_PGID" 2>/dev/null; then
  log "spark-submit still alive 15s after TERM; KILL"
  kill -KILL -- "-$SPARK_PGID" 2>/dev/null || true
fi
SPARK_PGID=""
echo "timings: cluster_start=${T_CLUSTER}s spark_submit_to_2_executor_pods=${T_SPARK}s spark_session_ready=${T_READY}s apiserver_restart=${T_RESTART}s"
