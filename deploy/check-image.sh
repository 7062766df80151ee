#!/usr/bin/env bash
# Checks an image built by deploy/build-image.sh without running a container (this machine's
# cgroups are not delegated): its configuration (user, entrypoint), its size and exact contents,
# and then its own binary, started from the image's root filesystem with chroot as uid 65532:
#   - serving /healthz on the admin port and one AdmissionReview over TLS (ring, mimalloc);
#   - reading the cluster in-cluster style (KUBERNETES_SERVICE_HOST is an IP, the service
#     account token and ca.crt under /var/run/secrets), against a stand-in API server, so the
#     static binary's TLS client and config work without DNS or NSS.
# Needs root (buildah mount, chroot), curl and python3.
#
#   deploy/check-image.sh [IMAGE]        (default spark-admission:<version>)
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
image="${1:-spark-admission:${version}}"
buildah=(buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")
fail() { echo "check-image.sh: $*" >&2; exit 1; }

echo "== configuration of $image"
config=$("${buildah[@]}" inspect --type image "$image")
user=$(jq -r '.OCIv1.config.User' <<<"$config")
entrypoint=$(jq -c '.OCIv1.config.Entrypoint' <<<"$config")
cmd=$(jq -c '.OCIv1.config.Cmd' <<<"$config")
[[ "$user" == "65532:65532" ]] || fail "user is $user, expected 65532:65532"
[[ "$entrypoint" == '["/usr/local/bin/spark-admission"]' ]] || fail "entrypoint is $entrypoint"
[[ "$cmd" == '["serve"]' ]] || fail "cmd is $cmd, expected [\"serve\"]"
echo "   user $user, entrypoint $entrypoint, cmd $cmd"

work=$(mktemp -d)
container=$("${buildah[@]}" from --quiet "$image")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
root=$("${buildah[@]}" mount "$container")

echo "== contents"
contents=$(cd "$root" && find . -not -type d | sort)
expected=$'./etc/passwd\n./etc/ssl/certs/ca-certificates.crt\n./usr/local/bin/spark-admission'
[[ "$contents" == "$expected" ]] || fail "unexpected files in the image:"$'\n'"$contents"
(cd "$root" && du -b ./usr/local/bin/spark-admission ./etc/ssl/certs/ca-certificates.crt ./etc/passwd | sed 's/^/   /')
echo "   image size: $("${buildah[@]}" images --format '{{.Size}}' "$image" | head -n 1)"
grep -qx 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' "$root/etc/passwd" || fail "no passwd entry for 65532"
if readelf -l "$root/usr/local/bin/spark-admission" | grep -q 'Requesting program interpreter'; then
  fail "the binary is dynamically linked"
fi

# Files for the checks go into the working container's copy of the root filesystem (removed
# with it, never committed): certificates, a policy and a service account.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p "$root/check"
"$root/usr/local/bin/spark-admission" certs --dns localhost --dns 127.0.0.1 --out "$root/check" >/dev/null 2>&1
cp examples/policies/platform.yaml "$root/check/policy.yaml"
cp tests/data/quotas/policy.yaml "$root/check/quotas.yaml"
chown -R 65532:65532 "$root/check"

echo "== serve from the image's root, as uid 65532"
webhook=$(free_port)
admin=$(free_port)
chroot --userspec=65532:65532 "$root" /usr/local/bin/spark-admission serve \
  --listen "127.0.0.1:$webhook" --admin-listen "127.0.0.1:$admin" \
  --tls-cert /check/tls.crt --tls-key /check/tls.key --policy-file /check/policy.yaml \
  --certs-dir /check >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null || { cat "$work/serve.log" >&2; fail "/healthz did not answer"; }
echo "   /healthz: ok"
curl -fsS --cacert "$root/check/ca.crt" -H 'Content-Type: application/json' \
  --data @tests/fixtures/spark-4.3/executor-review.json \
  "https://127.0.0.1:$webhook/mutate" >"$work/answer.json" || { cat "$work/serve.log" >&2; fail "/mutate did not answer"; }
python3 - "$work/answer.json" <<'PY' || fail "the answer to the executor review is not the platform policy's"
import base64, json, sys
response = json.load(open(sys.argv[1]))["response"]
assert response["allowed"] is True, response
patch = json.loads(base64.b64decode(response["patch"]))
paths = {op["path"] for op in patch}
assert "/spec/nodeSelector/pool" in paths or "/spec/affinity" in paths, paths
assert response["auditAnnotations"]["applied-rules"] == "cost-labels,executor-pool,warehouse-credentials,resource-guardrails", response
print("   /mutate: allowed with a patch of %d operations" % len(patch))
PY

echo "== in-cluster configuration (KUBERNETES_SERVICE_HOST=127.0.0.1) against a stand-in API server"
api=$(free_port)
serviceaccount="$root/var/run/secrets/kubernetes.io/serviceaccount"
mkdir -p "$serviceaccount"
cp "$root/check/ca.crt" "$serviceaccount/ca.crt"
echo -n check-token >"$serviceaccount/token"
echo -n spark-admission >"$serviceaccount/namespace"
python3 - "$api" "$root/check/tls.crt" "$root/check/tls.key" tests/data/quotas/pods-with-room.json "$work/api.log" <<'PY' &
import http.server, json, ssl, sys
port, cert, key, pods, log = sys.argv[1:]
items = json.load(open(pods))["items"]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as out:
            out.write("%s %s\n" % (self.path, self.headers.get("Authorization")))
        body = json.dumps({"apiVersion": "v1", "kind": "PodList",
                           "metadata": {"resourceVersion": "1"}, "items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(port)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
PY
pids+=($!)
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$api") 2>/dev/null && break
  sleep 0.1
done
env -i KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$api" \
  "$(command -v chroot)" --userspec=65532:65532 "$root" /usr/local/bin/spark-admission usage \
  -p /check/quotas.yaml -o json >"$work/usage.json" 2>"$work/usage.err" ||
  { cat "$work/usage.err" >&2; fail "usage could not read the pods in-cluster style"; }
grep -q '^/api/v1/pods?.*labelSelector=spark-role' "$work/api.log" || fail "no pod LIST reached the stand-in API server"
grep -q ' Bearer check-token$' "$work/api.log" || fail "the service account token was not sent"
python3 - "$work/usage.json" <<'PY' || fail "usage did not count the listed pods"
import json, sys
rows = json.load(open(sys.argv[1]))
namespace = [r for r in rows if r["quota"] == "etl-apps" and r.get("application") is None]
assert namespace and namespace[0]["namespace"] == "spark-jobs", rows
cpu = [m for m in namespace[0]["measures"] if m["resource"] == "cpu"]
# pods-with-room.json: one executor of 2 CPUs in spark-jobs.
assert cpu and cpu[0]["used"] == "2", rows
print("   usage through the in-cluster config: namespace spark-jobs uses 2 CPUs of the listed pods")
PY
echo "== image ok"
