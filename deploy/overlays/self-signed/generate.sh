#!/usr/bin/env bash
# Serving certificate for clusters without cert-manager.
#
#   deploy/overlays/self-signed/generate.sh                    # once (reuses certs/ if present)
#   kubectl apply -k deploy/overlays/self-signed
#
#   generate.sh --rotate            # new CA and serving pair; the old CA stays trusted too
#   generate.sh --drop-previous-ca  # after the rotated pair is served everywhere
#
# Runs `spark-admission certs` to write certs/ca.crt, ca.key, tls.crt, tls.key (a CA valid ten
# years and a serving certificate for the Service's DNS names valid $DAYS days, default 365),
# and writes ca-bundle-mutating.yaml and ca-bundle-validating.yaml, which set caBundle on the
# two webhook configurations from the caBundle the command prints. The kustomization turns
# certs/tls.* into Secret spark-admission-tls.
#
# certs/ holds private keys: it is git-ignored; keep it somewhere safe (ca.key never goes to the
# cluster), or regenerate with --rotate when it is lost.
#
# The binary: $SPARK_ADMISSION if set, else spark-admission on PATH, else the newer of the
# repository's target/release and target/debug builds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../../.." && pwd -P)
certs=$here/certs
previous=$here/certs.previous
patch_mutating=$here/ca-bundle-mutating.yaml
patch_validating=$here/ca-bundle-validating.yaml
days=${DAYS:-365}
# The kube-apiserver calls https://spark-admission.spark-admission.svc (the pod webhooks'
# Service) and https://spark-admission-policy-check.spark-admission.svc (the policy webhook's,
# deploy/base/service.yaml); the other names are for anything calling them from inside the
# cluster.
dns=(
  spark-admission.spark-admission.svc
  spark-admission.spark-admission.svc.cluster.local
  spark-admission.spark-admission
  spark-admission-policy-check.spark-admission.svc
  spark-admission-policy-check.spark-admission.svc.cluster.local
  spark-admission-policy-check.spark-admission
)

die() { echo "generate.sh: $*" >&2; exit 1; }

mode=keep
case ${1:-} in
  "") ;;
  --rotate) mode=rotate ;;
  --drop-previous-ca) mode=drop ;;
  -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (use --rotate, --drop-previous-ca or nothing)" ;;
esac

bin=${SPARK_ADMISSION:-$(command -v spark-admission || true)}
if [[ -z $bin ]]; then
  # The newer of the repository's release and debug builds.
  for candidate in "$repo/target/release/spark-admission" "$repo/target/debug/spark-admission"; do
    if [[ -x $candidate && ( -z $bin || $candidate -nt $bin ) ]]; then bin=$candidate; fi
  done
fi

have_certs() { [[ -f $certs/ca.crt && -f $certs/ca.key && -f $certs/tls.crt && -f $certs/tls.key ]]; }

generate() {
  [[ -n $bin && -x $bin ]] || die "spark-admission binary not found: set SPARK_ADMISSION, put it on PATH, or run 'cargo build --release'"
  local args=() name
  for name in "${dns[@]}"; do args+=(--dns "$name"); done
  bundle=$("$bin" certs "${args[@]}" --out "$certs" --days "$days")
  bundle=$(printf '%s' "$bundle" | tr -d '[:space:]')
  # The printed caBundle is certs/ca.crt in base64; check before trusting it.
  [[ $(printf '%s' "$bundle" | base64 -d 2>/dev/null) == "$(cat "$certs/ca.crt")" ]] \
    || die "the caBundle printed by '$bin certs' is not certs/ca.crt in base64"
}

bundle=
case $mode in
  keep)
    if have_certs; then
      # A pair from before a name was added (the policy-check Service) would be refused by the
      # apiserver for that name: say so rather than reuse it.
      command -v openssl >/dev/null || die "openssl is needed to check the names of $certs/tls.crt"
      for name in "${dns[@]}"; do
        openssl x509 -noout -checkhost "$name" -in "$certs/tls.crt" | grep -q 'does match' ||
          die "$certs/tls.crt does not name $name (made before it was added): run generate.sh --rotate, which keeps the old CA trusted while the replicas switch"
      done
      echo "generate.sh: reusing the pair in $certs (use --rotate for a new one)" >&2
      bundle=$(base64 -w0 < "$certs/ca.crt")
    else
      generate
    fi
    ;;
  rotate)
    have_certs || die "nothing to rotate: $certs is incomplete (run without --rotate)"
    rm -rf "$previous"
    mv "$certs" "$previous"
    generate
    ;;
  drop)
    have_certs || die "$certs is incomplete"
    rm -rf "$previous"
    bundle=$(base64 -w0 < "$certs/ca.crt")
    ;;
esac

# During a rotation both CAs are trusted: the replicas switch to the new pair only when the
# kubelet updates the mounted Secret (about a minute), and caBundle changes at once.
if [[ -f $previous/ca.crt ]]; then
  bundle=$( { printf '%s' "$bundle" | base64 -d; cat "$previous/ca.crt"; } | base64 -w0)
  echo "generate.sh: caBundle trusts the new CA and the previous one ($previous)" >&2
fi

umask 022
# One file per webhook configuration: kustomize before v5.1 (kubectl 1.27) reads one patch per file.
from=certs/ca.crt
if [[ -f $previous/ca.crt ]]; then from="certs/ca.crt and certs.previous/ca.crt"; fi
write_patch() { # write_patch FILE KIND NAME WEBHOOK...: every webhook of the configuration
  local file=$1 kind=$2 name=$3 webhook
  shift 3
  {
    cat <<YAML
# Written by generate.sh from the caBundle of $from. Do not edit; rerun generate.sh.
apiVersion: admissionregistration.k8s.io/v1
kind: $kind
metadata:
  name: $name
webhooks:
YAML
    for webhook in "$@"; do
      cat <<YAML
  - name: $webhook
    clientConfig:
      caBundle: $bundle
YAML
    done
  } > "$file.tmp"
  mv "$file.tmp" "$file"
}
# Both entries of the mutating configuration: the driver ConfigMaps' entry is called with the
# same certificate, and without its caBundle the apiserver cannot verify it (with
# failurePolicy Ignore, those ConfigMaps would pass unchanged).
write_patch "$patch_mutating" MutatingWebhookConfiguration spark-admission \
  mutate.spark-admission.io spark-conf.spark-admission.io
write_patch "$patch_validating" ValidatingWebhookConfiguration spark-admission-policy validate-policy.spark-admission.io

echo "generate.sh: wrote $patch_mutating and $patch_validating (pair in $certs)" >&2
echo "generate.sh: serving certificate expires $(openssl x509 -noout -enddate -in "$certs/tls.crt" 2>/dev/null | cut -d= -f2 || echo '(openssl not installed)')" >&2
echo "generate.sh: next: kubectl apply -k ${here#"$repo"/}" >&2
