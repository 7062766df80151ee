#!/usr/bin/env bash
# Runs the end-to-end tests: installs and caches what they need (setup.sh), starts etcd and a
# real kube-apiserver on loopback, runs the #[ignore]d tests in tests/e2e.rs against it, and
# tears everything down by pid. On failure the cluster logs are kept and their path printed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

"$here/setup.sh"

dir="$(mktemp -d /tmp/spark-admission-e2e.XXXXXX)"
status=1
cleanup() {
  "$here/cluster.sh" stop "$dir" >/dev/null 2>&1 || true
  if [ "$status" -eq 0 ]; then
    rm -rf "$dir"
  else
    echo "e2e failed; cluster logs kept in $dir/logs" >&2
    tail -n 30 "$dir/logs/kube-apiserver.log" >&2 2>/dev/null || true
  fi
}
trap cleanup EXIT

"$here/cluster.sh" start "$dir" >/dev/null
# shellcheck disable=SC1091
source "$dir/env"
export E2E_VENV="${E2E_CACHE:-/var/cache/spark-admission-e2e}/venv"

set +e
cargo test --locked --test e2e -- --ignored --test-threads=1 "$@"
status=$?
set -e
exit "$status"
