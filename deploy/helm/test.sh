#!/usr/bin/env bash
# Tests the Helm chart with a real helm (install-helm.sh) and the test kube-apiserver
# (tests/e2e/cluster.sh). Run from .ci/run, or by hand from anywhere:
#
#   deploy/helm/test.sh
#
#   1. helm lint, with each certificate mode;
#   2. helm template with the default values against the Kustomize manifests
#      (deploy/overlays/self-signed after its generate.sh, and deploy/prometheus), compared by
#      ci/compare.py; the alerts copy; rendering by Kubernetes version and mode;
#   3. helm install into the test apiserver in namespace platform, release sa, with a policy in
#      values and the webhooks pointed (webhook.url) at a spark-admission server started here
#      with the Deployment's own arguments and the chart's generated pair; a Spark pod created
#      and checked against that policy; helm upgrade keeps the pair; a policy edit checked by
#      validate-policy; a values typo refused by the schema; a first install with a bad policy,
#      and its repair through the policy-check Service by the replica that is not ready; helm
#      uninstall.
#
# The binary: $SPARK_ADMISSION, else the newer of target/release and target/debug, else built
# (cargo build, debug). Needs python3 with PyYAML, jq, kubectl, openssl, and tests/e2e/setup.sh's
# kube-apiserver and etcd (run here; it is idempotent).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
chart=$here/spark-admission
t0=$SECONDS

log() { printf '[helm test %3ds] %s\n' "$((SECONDS - t0))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
# expect_fail OUT_FILE CMD...: CMD must fail; its output goes to OUT_FILE.
expect_fail() { local out=$1; shift; if "$@" >"$out" 2>&1; then cat "$out" >&2; die "expected to fail: $*"; fi; }
# expect_in FILE TEXT: FILE contains TEXT.
expect_in() { grep -qF -- "$2" "$1" || { cat "$1" >&2; die "'$2' not in the output above"; }; }

# The test apiserver and etcd, and the tools (jq, openssl) the steps below use.
"$repo/tests/e2e/setup.sh" >/dev/null
HELM=$("$here/install-helm.sh" | sed -n 1p)
log "helm: $("$HELM" version --short)"
helm() { "$HELM" "$@"; }

bin=${SPARK_ADMISSION:-}
if [[ -z $bin ]]; then
  for candidate in "$repo/target/release/spark-admission" "$repo/target/debug/spark-admission"; do
    if [[ -x $candidate && ( -z $bin || $candidate -nt $bin ) ]]; then bin=$candidate; fi
  done
fi
if [[ -z $bin ]]; then
  (cd "$repo" && cargo build --locked --quiet --bin spark-admission)
  bin=$repo/target/debug/spark-admission
fi
log "binary: $bin"

tmp=$(mktemp -d /tmp/spark-admission-helm.XXXXXX)
server_pid=
status=1
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  "$repo/tests/e2e/cluster.sh" stop "$tmp/cluster" >/dev/null 2>&1 || true
  if ((status == 0)); then rm -rf "$tmp"; else
    echo "helm test failed; files kept in $tmp (server.log, cluster/logs)" >&2
  fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
log "1. helm lint, each certificate mode"
helm lint --strict "$chart" >/dev/null
for values in "$here"/ci/values-*.yaml; do
  helm lint --strict "$chart" -f "$values" >/dev/null || { helm lint --strict "$chart" -f "$values"; die "lint with $values"; }
done

# ---------------------------------------------------------------------------------------------
log "2. helm template with the default values = the Kustomize manifests"
cmp "$chart/files/alerts.yaml" "$repo/deploy/prometheus/alerts.yaml" ||
  die "$chart/files/alerts.yaml is not a copy of deploy/prometheus/alerts.yaml: copy it again"
cmp "$chart/files/spark-usage.yaml" "$repo/deploy/prometheus/spark-usage.yaml" ||
  die "$chart/files/spark-usage.yaml is not a copy of deploy/prometheus/spark-usage.yaml: copy it again"
cmp "$chart/files/platform-policy.yaml" "$repo/examples/policies/platform.yaml" ||
  die "$chart/files/platform-policy.yaml is not a copy of examples/policies/platform.yaml: copy it again"
# The self-signed overlay needs its generate.sh: run it in a copy, never in the work tree.
mkdir -p "$tmp/deploy/overlays"
cp -r "$repo/deploy/base" "$repo/deploy/prometheus" "$tmp/deploy/"
cp -r "$repo/deploy/overlays/self-signed" "$tmp/deploy/overlays/"
rm -rf "$tmp/deploy/overlays/self-signed/certs" "$tmp/deploy/overlays/self-signed/certs.previous"
SPARK_ADMISSION=$bin DAYS=2 "$tmp/deploy/overlays/self-signed/generate.sh" 2>/dev/null
kubectl kustomize "$tmp/deploy/overlays/self-signed" > "$tmp/kustomize.yaml"
# generate.sh reuses a pair only when it names every name the apiserver calls: its own, yes;
# one made before the policy-check Service, no (it says to rotate, and the rotation serves).
SPARK_ADMISSION=$bin "$tmp/deploy/overlays/self-signed/generate.sh" 2>"$tmp/out" || { cat "$tmp/out" >&2; die "generate.sh refused its own pair"; }
expect_in "$tmp/out" "reusing the pair"
cp -r "$tmp/deploy" "$tmp/deploy-old"
"$bin" certs --dns spark-admission.spark-admission.svc --dns spark-admission.spark-admission.svc.cluster.local \
  --dns spark-admission.spark-admission --out "$tmp/old-pair" >/dev/null 2>&1
cp "$tmp/old-pair/"{ca.crt,ca.key,tls.crt,tls.key} "$tmp/deploy-old/overlays/self-signed/certs/"
expect_fail "$tmp/out" env SPARK_ADMISSION="$bin" "$tmp/deploy-old/overlays/self-signed/generate.sh"
expect_in "$tmp/out" "does not name spark-admission-policy-check.spark-admission.svc"
SPARK_ADMISSION=$bin DAYS=2 "$tmp/deploy-old/overlays/self-signed/generate.sh" --rotate 2>/dev/null
SPARK_ADMISSION=$bin "$tmp/deploy-old/overlays/self-signed/generate.sh" 2>"$tmp/out" || { cat "$tmp/out" >&2; die "generate.sh refused the rotated pair"; }
expect_in "$tmp/out" "caBundle trusts the new CA and the previous one"
{ cat "$tmp/kustomize.yaml"; echo ---; kubectl kustomize "$tmp/deploy/prometheus"; } > "$tmp/kustomize-monitoring.yaml"
helm template spark-admission "$chart" -n spark-admission > "$tmp/helm.yaml"
helm template spark-admission "$chart" -n spark-admission -f "$here/ci/values-generate.yaml" > "$tmp/helm-monitoring.yaml"

# What differs on purpose (the chart README says why):
namespace='Namespace//spark-admission=helm install -n NS --create-namespace makes the namespace; the chart does not own it'
secret_label='Secret/spark-admission/spark-admission-tls.metadata.labels.app.kubernetes.io/part-of=the base labels its own objects only, not the overlay Secret'
secret_names='Secret/spark-admission/spark-admission-tls.metadata.annotations=the names the chart generated the pair for, so an upgrade knows when they change (generate.sh reads the certificate instead)'
python3 "$here/ci/compare.py" "$tmp/kustomize.yaml" "$tmp/helm.yaml" \
  --by-design "$namespace" --known "$secret_label" --known "$secret_names"
monitoring_label='deploy/prometheus sets no part-of label'
python3 "$here/ci/compare.py" "$tmp/kustomize-monitoring.yaml" "$tmp/helm-monitoring.yaml" \
  --by-design "$namespace" --known "$secret_label" --known "$secret_names" \
  --known "NetworkPolicy/spark-admission/spark-admission-metrics.metadata.labels.app.kubernetes.io/part-of=$monitoring_label" \
  --known "PrometheusRule/spark-admission/spark-admission.metadata.labels.app.kubernetes.io/part-of=$monitoring_label" \
  --known "ServiceMonitor/spark-admission/spark-admission.metadata.labels.app.kubernetes.io/part-of=$monitoring_label" \
  --known "PrometheusRule/spark-admission/spark-admission-spark-usage.metadata.labels.app.kubernetes.io/part-of=$monitoring_label"

# By Kubernetes version, mode and release (independent answers: deploy/README.md's version notes).
python3 - "$tmp" "$HELM" "$chart" "$here/ci" <<'PY'
import subprocess, sys, yaml
tmp, helm, chart, ci = sys.argv[1:]
def render(*args, release="spark-admission", ns="spark-admission"):
    out = subprocess.run([helm, "template", release, chart, "-n", ns, *args],
                         check=True, capture_output=True, text=True).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
def hooks(objs, kind):
    return next(o for (k, _), o in objs.items() if k == kind)["webhooks"]
for version, conditions, pdb in [("1.20.2", False, "policy/v1beta1"), ("1.29.0", False, "policy/v1"),
                                 ("1.30.0", True, "policy/v1"), ("1.34.1", True, "policy/v1")]:
    objs = render("--kube-version", version)
    got = [("matchConditions" in w) for k in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
           for w in hooks(objs, k) if w["name"] != "mutate.spark-admission.io"]
    assert got == [conditions, conditions], (version, got)
    assert objs[("PodDisruptionBudget", "spark-admission")]["apiVersion"] == pdb, version
objs = render("--kube-version", "1.20.2", "--set", "webhook.matchConditions=enabled")
assert all("matchConditions" in w for w in hooks(objs, "ValidatingWebhookConfiguration"))
# Another release and namespace: every name, namespace and selector follows.
objs = render(release="sa", ns="platform")
deploy = objs[("Deployment", "sa-spark-admission")]
args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
assert args[args.index("--guard-configmap") + 1] == "platform/sa-spark-admission-policy", args
assert deploy["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "sa-spark-admission-policy"
role = objs[("Role", "sa-spark-admission")]
assert role["metadata"]["namespace"] == "platform" and role["rules"][0]["resourceNames"] == ["sa-spark-admission-policy"]
assert any(r["apiGroups"] == ["coordination.k8s.io"] for r in role["rules"])
mutating = hooks(objs, "MutatingWebhookConfiguration")
for w in mutating:
    assert w["clientConfig"]["service"] == {"namespace": "platform", "name": "sa-spark-admission",
                                            "path": w["clientConfig"]["service"]["path"], "port": 443}
    assert w["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "platform"]
validating = hooks(objs, "ValidatingWebhookConfiguration")[0]
assert validating["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "platform"}}
assert validating["matchConditions"][0]["expression"] == "object.metadata.name == 'sa-spark-admission-policy'"
# The policy webhook calls its own Service, which lists every replica, ready or not.
assert validating["clientConfig"]["service"] == {"namespace": "platform", "name": "sa-spark-admission-policy-check",
                                                 "path": "/validate-policy", "port": 443}
check = objs[("Service", "sa-spark-admission-policy-check")]
assert check["spec"]["publishNotReadyAddresses"] is True
assert check["spec"]["selector"] == objs[("Service", "sa-spark-admission")]["spec"]["selector"]
assert "publishNotReadyAddresses" not in objs[("Service", "sa-spark-admission")]["spec"]
# The longest release name (53): the fullname is cut to 63 characters, the Service name still fits a DNS label.
long = render(release="r" * 53, ns="platform")
assert any(k == "Service" and n.endswith("-policy-check") and len(n) <= 63 for k, n in long), sorted(long)
# cert-manager: the chart's CA chain, the Certificate for the Service, the injection annotation.
objs = render("-f", f"{ci}/values-cert-manager.yaml", release="sa", ns="platform")
cert = objs[("Certificate", "sa-spark-admission-tls")]
assert cert["spec"]["dnsNames"] == ["sa-spark-admission.platform.svc", "sa-spark-admission.platform.svc.cluster.local",
                                   "sa-spark-admission-policy-check.platform.svc",
                                   "sa-spark-admission-policy-check.platform.svc.cluster.local"]
assert cert["spec"]["issuerRef"]["name"] == "sa-spark-admission-ca"
assert {("Issuer", "sa-spark-admission-selfsigned"), ("Issuer", "sa-spark-admission-ca"), ("Certificate", "sa-spark-admission-ca")} <= set(objs)
assert ("Secret", "sa-spark-admission-tls") not in objs
for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
    o = next(o for (k, _), o in objs.items() if k == kind)
    assert o["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "platform/sa-spark-admission-tls"}
    assert all("caBundle" not in w["clientConfig"] for w in o["webhooks"])
objs = render("-f", f"{ci}/values-cert-manager-issuer.yaml")
assert objs[("Certificate", "spark-admission-tls")]["spec"]["issuerRef"]["kind"] == "ClusterIssuer"
assert not any(k == "Issuer" for k, _ in objs)
# existingSecret: no Secret rendered, the Deployment mounts the named one, caBundle from values.
objs = render("-f", f"{ci}/values-existing-secret.yaml")
assert not any(k == "Secret" for k, _ in objs)
assert objs[("Deployment", "spark-admission")]["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"] == "my-webhook-tls"
assert all(w["clientConfig"]["caBundle"] == "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==" for w in hooks(objs, "MutatingWebhookConfiguration"))
# existingPolicyConfigMap: no policy ConfigMap; volume, RBAC and guard name it.
objs = render("--set", "existingPolicyConfigMap=team-policy")
assert ("ConfigMap", "spark-admission-policy") not in objs
assert objs[("Role", "spark-admission")]["rules"][0]["resourceNames"] == ["team-policy"]
args = objs[("Deployment", "spark-admission")]["spec"]["template"]["spec"]["containers"][0]["args"]
assert args[args.index("--guard-configmap") + 1] == "spark-admission/team-policy", args
print("template checks: versions, release/namespace, certificate modes, existingPolicyConfigMap: ok")
PY

expect_fail "$tmp/out" helm template spark-admission "$chart" --set certificates.mode=existingSecret,certificates.existingSecret.name=x
expect_in "$tmp/out" "certificates.existingSecret.caBundle (base64 PEM) is required"

# ---------------------------------------------------------------------------------------------
log "3. helm install into the test apiserver"
"$repo/tests/e2e/cluster.sh" start "$tmp/cluster" >/dev/null 2>"$tmp/cluster-start.log" ||
  { cat "$tmp/cluster-start.log" >&2; die "cluster start"; }
# shellcheck disable=SC1091
source "$tmp/cluster/env"
# Kubernetes 1.20 does not label namespaces with kubernetes.io/metadata.name (1.21+ does).
for ns in platform spark-jobs; do
  kubectl create namespace "$ns" >/dev/null
  kubectl label namespace "$ns" "kubernetes.io/metadata.name=$ns" --overwrite >/dev/null
done
# two_free_ports: two ports free on this machine, on one line.
two_free_ports() {
  python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])'
}
read -r port admin_port < <(two_free_ports)

# The policy the stored pod is checked against (the independent answer).
cat > "$tmp/values.yaml" <<YAML
policy:
  rules:
    - name: team-labels
      labels:
        cost-center: "{namespace}"
        installed-by: helm
    - name: executor-pool
      match:
        roles: [executor]
      nodeSelector:
        helm-pool: spark-helm
      tolerations:
        - {key: dedicated, operator: Equal, value: spark, effect: NoSchedule}
certificates:
  generate:
    ipAddresses: [127.0.0.1]
webhook:
  url: https://127.0.0.1:$port
YAML
helm install sa "$chart" -n platform -f "$tmp/values.yaml" > "$tmp/install.log" || { cat "$tmp/install.log"; die "helm install"; }
for object in deployment/sa-spark-admission service/sa-spark-admission serviceaccount/sa-spark-admission \
  configmap/sa-spark-admission-policy secret/sa-spark-admission-tls role/sa-spark-admission \
  rolebinding/sa-spark-admission poddisruptionbudget/sa-spark-admission networkpolicy/sa-spark-admission; do
  kubectl -n platform get "$object" >/dev/null || die "$object not installed"
done
kubectl get clusterrole/sa-spark-admission clusterrolebinding/sa-spark-admission \
  mutatingwebhookconfiguration/sa-spark-admission validatingwebhookconfiguration/sa-spark-admission-policy >/dev/null
# Rendered for the cluster's version (1.20): no matchConditions, PDB policy/v1beta1.
helm get manifest sa -n platform > "$tmp/manifest.yaml"
grep -q matchConditions "$tmp/manifest.yaml" && die "matchConditions rendered for Kubernetes 1.20"
[[ $(kubectl get mutatingwebhookconfiguration sa-spark-admission -o json | jq -r '[.webhooks[].name] | join(",")') == \
  mutate.spark-admission.io,spark-conf.spark-admission.io ]] || die "the mutating webhooks as stored"
[[ $(kubectl -n platform get pdb sa-spark-admission -o jsonpath='{.apiVersion}') == policy/v1beta1 ]] || die "PDB apiVersion on 1.20"

# The server, run as the Deployment runs it: its args, the mounted files here, local ports.
mkdir -p "$tmp/policy" "$tmp/tls"
kubectl -n platform get configmap sa-spark-admission-policy -o json | jq -r '.data["policy.yaml"]' > "$tmp/policy/policy.yaml"
for key in tls.crt tls.key ca.crt; do
  kubectl -n platform get secret sa-spark-admission-tls -o json | jq -r --arg k "$key" '.data[$k]' | base64 -d > "$tmp/tls/$key"
done
# deployment_args NAMESPACE DEPLOYMENT POLICY_DIR TLS_DIR: the Deployment's server arguments,
# one a line, with its mounted files' paths moved to the directories here.
deployment_args() {
  kubectl -n "$1" get deployment "$2" -o json | jq -r '.spec.template.spec.containers[0].args[]' |
    sed -e "s#^/etc/spark-admission/policy/#$3/#" -e "s#^/etc/spark-admission/tls/#$4/#"
}
mapfile -t args < <(deployment_args platform sa-spark-admission "$tmp/policy" "$tmp/tls")
printf '%s\n' "${args[@]}" | grep -qx -- --guard-configmap || die "no --guard-configmap in ${args[*]}"
start_server() {
  "$bin" "${args[@]}" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" >>"$tmp/server.log" 2>&1 &
  server_pid=$!
}
wait_ready() { # wait_ready EXPECTED_STATUS [ADMIN_PORT PID LOG]
  local i code admin=${2:-$admin_port} pid=${3:-$server_pid} log=${4:-$tmp/server.log}
  for i in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz" || true)
    [[ $code == "$1" ]] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "server exited"; }
    sleep 0.1
  done
  cat "$log" >&2; die "/readyz not $1 (last $code)"
}
start_server
wait_ready 200
log "server ready: ${args[*]}"

# A real Spark executor pod (tests/fixtures), stored through the chart's webhook.
jq '.request.object | del(.metadata.managedFields, .metadata.creationTimestamp, .spec.priority, .spec.preemptionPolicy)
    | .metadata.namespace = "spark-jobs" | .metadata.name = "helm-exec-1"' \
  "$repo/tests/fixtures/spark-4.3/executor-review.json" | kubectl create -f - >/dev/null
kubectl -n spark-jobs get pod helm-exec-1 -o json > "$tmp/pod.json"
python3 - "$tmp/pod.json" <<'PY'
import json, sys
pod = json.load(open(sys.argv[1]))
labels, spec = pod["metadata"]["labels"], pod["spec"]
assert labels.get("cost-center") == "spark-jobs" and labels.get("installed-by") == "helm", labels
assert spec.get("nodeSelector", {}).get("helm-pool") == "spark-helm", spec.get("nodeSelector")
assert {"key": "dedicated", "operator": "Equal", "value": "spark", "effect": "NoSchedule"} in spec.get("tolerations", []), spec.get("tolerations")
assert "spark-admission.io/policy-hash" in pod["metadata"].get("annotations", {}), pod["metadata"].get("annotations")
print("stored pod: labels, nodeSelector and toleration of the values' policy: ok")
PY

log "helm upgrade keeps the generated pair"
secret_before=$(kubectl -n platform get secret sa-spark-admission-tls -o json | jq -cS .data)
bundles() { for kind in mutatingwebhookconfiguration/sa-spark-admission validatingwebhookconfiguration/sa-spark-admission-policy; do
  kubectl get "$kind" -o json | jq -r '.webhooks[].clientConfig.caBundle'; done | sort -u; }
[[ $(bundles) == "$(jq -r '.["ca.crt"]' <<<"$secret_before")" ]] || die "caBundle is not the Secret's ca.crt"
helm upgrade sa "$chart" -n platform -f "$tmp/values.yaml" --set replicaCount=3 > "$tmp/upgrade.log" || { cat "$tmp/upgrade.log"; die "helm upgrade"; }
[[ $(kubectl -n platform get secret sa-spark-admission-tls -o json | jq -cS .data) == "$secret_before" ]] || die "the Secret's data changed on upgrade"
[[ $(bundles) == "$(jq -r '.["ca.crt"]' <<<"$secret_before")" ]] || die "caBundle changed on upgrade"
[[ $(kubectl -n platform get deployment sa-spark-admission -o jsonpath='{.spec.replicas}') == 3 ]] || die "replicas not 3"

log "renewal: the Secret deleted, helm upgrade generates a new pair and caBundle"
kubectl -n platform delete secret sa-spark-admission-tls >/dev/null
helm upgrade sa "$chart" -n platform -f "$tmp/values.yaml" --set replicaCount=3 >/dev/null
secret_after=$(kubectl -n platform get secret sa-spark-admission-tls -o json | jq -cS .data)
[[ $secret_after != "$secret_before" ]] || die "no new pair after the Secret was deleted"
[[ $(bundles) == "$(jq -r '.["ca.crt"]' <<<"$secret_after")" ]] || die "caBundle is not the new ca.crt"
# The webhooks now trust only the new CA; the local server serves the first pair ...
for key in tls.crt tls.key ca.crt; do jq -r --arg k "$key" '.[$k]' <<<"$secret_after" | base64 -d > "$tmp/tls/$key.new"; mv "$tmp/tls/$key.new" "$tmp/tls/$key"; done
# ... until it re-reads the files (every second): then the new CA verifies it.
for i in $(seq 1 50); do
  curl -s -o /dev/null --cacert "$tmp/tls/ca.crt" "https://127.0.0.1:$port/" && break
  ((i < 50)) || die "the server does not serve the new pair"
  sleep 0.2
done

log "a pair made for other names (a chart from before the policy-check Service): replaced, both CAs trusted meanwhile"
# Such a Secret carries no spark-admission.io/certificate-names (or other names in it).
kubectl -n platform annotate secret sa-spark-admission-tls spark-admission.io/certificate-names- >/dev/null
helm upgrade sa "$chart" -n platform -f "$tmp/values.yaml" --set replicaCount=3 >/dev/null
secret_renamed=$(kubectl -n platform get secret sa-spark-admission-tls -o json | jq -cS .data)
[[ $(jq -r '.["tls.crt"]' <<<"$secret_renamed") != $(jq -r '.["tls.crt"]' <<<"$secret_after") ]] || die "the pair was kept"
jq -r '.["tls.crt"]' <<<"$secret_renamed" | base64 -d > "$tmp/renamed.crt"
openssl x509 -noout -checkhost sa-spark-admission-policy-check.platform.svc -in "$tmp/renamed.crt" | grep -q 'does match' ||
  die "the new pair does not name the policy-check Service"
jq -r '.["ca.crt"]' <<<"$secret_renamed" | base64 -d > "$tmp/bundle.pem"
[[ $(grep -c 'BEGIN CERTIFICATE' "$tmp/bundle.pem") == 2 ]] || die "caBundle does not hold the new and the old CA"
grep -qF "$(sed -n 2p "$tmp/tls/ca.crt")" "$tmp/bundle.pem" || die "the old CA is not in the bundle"
[[ $(bundles) == "$(jq -r '.["ca.crt"]' <<<"$secret_renamed")" ]] || die "caBundle is not the Secret's ca.crt"
# The server still serves the old pair: the pod webhook, trusting both CAs, still reaches it.
jq '.request.object | del(.metadata.managedFields, .metadata.creationTimestamp, .spec.priority, .spec.preemptionPolicy)
    | .metadata.namespace = "spark-jobs" | .metadata.name = "helm-exec-2"' \
  "$repo/tests/fixtures/spark-4.3/executor-review.json" | kubectl create -f - >/dev/null || die "pod refused during the switch"
[[ $(kubectl -n spark-jobs get pod helm-exec-2 -o jsonpath='{.metadata.labels.installed-by}') == helm ]] || die "helm-exec-2 not mutated"
# The next upgrade keeps the new pair and the bundle.
helm upgrade sa "$chart" -n platform -f "$tmp/values.yaml" --set replicaCount=3 >/dev/null
[[ $(kubectl -n platform get secret sa-spark-admission-tls -o json | jq -cS .data) == "$secret_renamed" ]] || die "the new pair was not kept"
for key in tls.crt tls.key ca.crt; do jq -r --arg k "$key" '.[$k]' <<<"$secret_renamed" | base64 -d > "$tmp/tls/$key.new"; mv "$tmp/tls/$key.new" "$tmp/tls/$key"; done

log "a policy edit goes through validate-policy: a valid one is stored, an invalid one refused"
sed 's/installed-by: helm/installed-by: helm-v2/' "$tmp/values.yaml" > "$tmp/values-v2.yaml"
helm upgrade sa "$chart" -n platform -f "$tmp/values-v2.yaml" >/dev/null
kubectl -n platform get configmap sa-spark-admission-policy -o jsonpath='{.data.policy\.yaml}' | grep -q 'installed-by: helm-v2' || die "valid policy not stored"
policy_v2=$(kubectl -n platform get configmap sa-spark-admission-policy -o jsonpath='{.data.policy\.yaml}')
sed 's/roles: \[executor\]/roles: [executors]/' "$tmp/values-v2.yaml" > "$tmp/values-bad.yaml"
expect_fail "$tmp/out" helm upgrade sa "$chart" -n platform -f "$tmp/values-bad.yaml"
expect_in "$tmp/out" 'admission webhook "validate-policy.spark-admission.io" denied the request'
expect_in "$tmp/out" 'executors'
log "refused: $(grep -o 'denied the request.*' "$tmp/out" | head -n1 | cut -c1-200)"
[[ $(kubectl -n platform get configmap sa-spark-admission-policy -o jsonpath='{.data.policy\.yaml}') == "$policy_v2" ]] ||
  die "the stored policy changed"

log "a values typo fails with the schema's message"
expect_fail "$tmp/out" helm upgrade sa "$chart" -n platform -f "$tmp/values.yaml" --set replicaCont=2
expect_in "$tmp/out" "values don't meet the specifications of the schema(s)"
expect_in "$tmp/out" "additional properties 'replicaCont' not allowed"
printf 'replicaCount: "2"\n' > "$tmp/typo.yaml"
expect_fail "$tmp/out" helm install typo "$chart" -n platform -f "$tmp/typo.yaml"
expect_in "$tmp/out" "at '/replicaCount': got string, want integer"

log "a bad policy at first install: stored, never ready; the fix checked by that replica, through the policy-check Service"
# Release sb calls its Services, not webhook.url. The apiserver here reaches a Service through
# its Endpoints (tests/e2e/cluster.sh: --enable-aggregator-routing), written below as the
# endpoints controller writes them for a Service with publishNotReadyAddresses (there is no
# controller here): the replica that is not ready, in addresses. The replica is a server run
# as sb's Deployment runs it, on an address of this machine that Endpoints accept (not loopback).
kubectl create namespace platform2 >/dev/null
kubectl label namespace platform2 kubernetes.io/metadata.name=platform2 >/dev/null
host_ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | grep -v '^127\.' | head -n1 || true)
[[ -n $host_ip ]] || die "no IPv4 address besides loopback (hostname -I) for the replica's Endpoints"
sed 's/roles: \[executors\]/roles: [drivers]/' "$tmp/values-bad.yaml" > "$tmp/values-bad2.yaml"
grep -q drivers "$tmp/values-bad2.yaml" || die "values-bad2.yaml has no second mistake"
python3 - "$tmp" <<'PY'
import sys, yaml
for source, target in (("values-bad", "values-bad-sb"), ("values-bad2", "values-bad2-sb"), ("values-v2", "values-fixed-sb")):
    values = yaml.safe_load(open(f"{sys.argv[1]}/{source}.yaml"))
    del values["webhook"]  # the Services, as an installation uses them
    yaml.safe_dump(values, open(f"{sys.argv[1]}/{target}.yaml", "w"))
PY
helm install sb "$chart" -n platform2 -f "$tmp/values-bad-sb.yaml" >/dev/null || die "first install with a bad policy"
[[ $(kubectl get validatingwebhookconfiguration sb-spark-admission-policy -o jsonpath='{.webhooks[0].clientConfig.service.name}') == \
  sb-spark-admission-policy-check ]] || die "the policy webhook does not call the policy-check Service"
[[ $(kubectl -n platform2 get service sb-spark-admission-policy-check -o jsonpath='{.spec.publishNotReadyAddresses}') == true ]] ||
  die "the policy-check Service does not publish replicas that are not ready"
mkdir -p "$tmp/policy-sb" "$tmp/tls-sb"
kubectl -n platform2 get configmap sb-spark-admission-policy -o jsonpath='{.data.policy\.yaml}' > "$tmp/policy-sb/policy.yaml"
grep -q executors "$tmp/policy-sb/policy.yaml" || die "bad policy not stored"
for key in tls.crt tls.key; do
  kubectl -n platform2 get secret sb-spark-admission-tls -o json | jq -r --arg k "$key" '.data[$k]' | base64 -d > "$tmp/tls-sb/$key"
done
mapfile -t sb_args < <(deployment_args platform2 sb-spark-admission "$tmp/policy-sb" "$tmp/tls-sb")
read -r sb_port sb_admin < <(two_free_ports)
"$bin" "${sb_args[@]}" --listen "$host_ip:$sb_port" --admin-listen "127.0.0.1:$sb_admin" >>"$tmp/server-sb.log" 2>&1 &
sb_pid=$!
trap 'kill "$sb_pid" 2>/dev/null || true; cleanup' EXIT
wait_ready 503 "$sb_admin" "$sb_pid" "$tmp/server-sb.log"   # alive on the bad policy, never ready
kubectl -n platform2 apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Endpoints
metadata:
  name: sb-spark-admission-policy-check
subsets:
  - addresses: [{ip: "$host_ip"}]
    ports: [{name: https, port: $sb_port, protocol: TCP}]
YAML
# The replica that is not ready checks every edit: one still wrong is refused with its error ...
for i in $(seq 1 20); do  # the apiserver sees the new Endpoints within its informer's delay
  if ! helm upgrade sb "$chart" -n platform2 -f "$tmp/values-bad2-sb.yaml" >"$tmp/out" 2>&1; then
    grep -qF 'denied the request' "$tmp/out" && break
  fi
  ((i < 20)) || { cat "$tmp/out" >&2; die "the second bad policy was not refused by the replica"; }
  sleep 0.5
done
expect_in "$tmp/out" 'admission webhook "validate-policy.spark-admission.io" denied the request'
expect_in "$tmp/out" 'drivers'
log "refused by the replica that is not ready: $(grep -o 'denied the request.*' "$tmp/out" | head -n1 | cut -c1-160)"
grep -q executors <(kubectl -n platform2 get configmap sb-spark-admission-policy -o jsonpath='{.data.policy\.yaml}') ||
  die "the stored policy changed"
# ... and the fixed one is stored, without break glass; loaded, it makes the replica ready.
helm upgrade sb "$chart" -n platform2 -f "$tmp/values-fixed-sb.yaml" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; die "the fixed policy was refused"; }
kubectl -n platform2 get configmap sb-spark-admission-policy -o jsonpath='{.data.policy\.yaml}' > "$tmp/policy-sb/policy.yaml.new"
grep -q 'installed-by: helm-v2' "$tmp/policy-sb/policy.yaml.new" || die "fixed policy not stored"
mv "$tmp/policy-sb/policy.yaml.new" "$tmp/policy-sb/policy.yaml"   # the kubelet's volume update
wait_ready 200 "$sb_admin" "$sb_pid" "$tmp/server-sb.log"
kill "$sb_pid"; wait "$sb_pid" 2>/dev/null || true
trap cleanup EXIT

log "helm uninstall"
helm uninstall sa -n platform >/dev/null
helm uninstall sb -n platform2 >/dev/null
left=$(kubectl get mutatingwebhookconfigurations,validatingwebhookconfigurations,clusterroles,clusterrolebindings -o name | grep -c 'spark-admission' || true)
((left == 0)) || die "$left cluster-scoped objects left after uninstall"
[[ -z $(kubectl -n platform get deploy,cm,secret,svc -o name 2>/dev/null | grep spark-admission) ]] || die "objects left in platform"

status=0
log "ok ($((SECONDS - t0)) s)"
