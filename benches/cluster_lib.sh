# Shared by the benchmarks that run servers against a throw-away cluster (tests/e2e/cluster.sh,
# after tests/e2e/setup.sh): sourced from the crate root. Servers started are added to PIDS;
# on exit they are stopped, and the cluster with them.
# shellcheck shell=bash

PIDS=()
BENCH_CLUSTER=""
bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    [[ -z $BENCH_CLUSTER ]] || tests/e2e/cluster.sh stop "$BENCH_CLUSTER" >/dev/null 2>&1 || true
}
trap bench_cleanup EXIT

# start_bench_cluster DIR: etcd and kube-apiserver in DIR/cluster, with KUBECONFIG exported.
start_bench_cluster() {
    BENCH_CLUSTER=$1/cluster
    tests/e2e/cluster.sh start "$BENCH_CLUSTER" >/dev/null
    # shellcheck disable=SC1091
    source "$BENCH_CLUSTER/env"
}

# spark_team_namespaces N: creates spark-team-1 to spark-team-N, names them in NS.
spark_team_namespaces() {
    NS=()
    for i in $(seq "$1"); do
        NS+=("spark-team-$i")
        kubectl create namespace "spark-team-$i" >/dev/null
    done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
