#!/usr/bin/env bash
# Idempotent installer for the spark-admission end-to-end test environment:
#   - Debian packages: etcd-server, golang-go, rsync, jq, openssl, dpkg-dev, python3-venv
#   - kube-apiserver, built from Debian's `kubernetes` source package (cached)
#   - a Python venv with pyspark (cached)
# Everything is cached under $E2E_CACHE (default /var/cache/spark-admission-e2e);
# with a warm cache this takes a few seconds.
set -euo pipefail

E2E_CACHE=${E2E_CACHE:-/var/cache/spark-admission-e2e}
PYSPARK_VERSION=${PYSPARK_VERSION:-4.3.0}
BIN_DIR="$E2E_CACHE/bin"
APISERVER="$BIN_DIR/kube-apiserver"
VENV="$E2E_CACHE/venv"
BUILD_DIR="$E2E_CACHE/build"
SRC_LIST=/etc/apt/sources.list.d/spark-admission-e2e-src.sources
SRC_LIST_ONELINE=/etc/apt/sources.list.d/spark-admission-e2e-src.list

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (apt-get, /var/cache)"
mkdir -p "$E2E_CACHE" "$BIN_DIR"

APT_UPDATED=0
apt_update() {
  if [[ $APT_UPDATED == 0 ]]; then
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}

# ---------------------------------------------------------------- apt packages
PKGS=(etcd-server golang-go golang-github-modern-go-reflect2-dev rsync jq openssl curl make dpkg-dev python3-venv ca-certificates haproxy)
missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  apt_update
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# etcd-server's package starts a system etcd on the default ports; we run our
# own instances, so make sure the packaged service does not hold the ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi
ETCD=$(command -v etcd || true)
[[ -z $ETCD && -x /usr/bin/etcd ]] && ETCD=/usr/bin/etcd
[[ -n $ETCD ]] || die "etcd binary not found after installing etcd-server"

# -------------------------------------------------------------- kube-apiserver
# The stamp marks a binary built with both fixes below; an older cached binary is rebuilt.
APISERVER_STAMP="$APISERVER.reflect2-1.0.2.serviceport-tcp"
apiserver_ok() { [[ -x $APISERVER && -f $APISERVER_STAMP ]] && "$APISERVER" --version >/dev/null 2>&1; }

# Add a deb-src entry derived from the machine's own Debian entries (no host
# name is written here: it is copied from the existing configuration).
add_deb_src() {
  local codename f
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ -n $codename ]] || die "cannot determine the Debian codename"
  if [[ -f $SRC_LIST || -f $SRC_LIST_ONELINE ]]; then return 0; fi
  # deb822 files: copy every stanza of Types "deb" whose URIs point at a
  # Debian archive (".../debian...") and whose Suites contain the plain
  # codename, with Types changed to deb-src. (Third-party repositories are
  # skipped: most have no source packages and would break apt-get update.)
  local out=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    out+=$(awk -v RS='' -v ORS='\n\n' -v cn="$codename" '
      /(^|\n)Types:[^\n]*(^|[ \t])deb([ \t]|\n|$)/ &&
      /(^|\n)URIs:[^\n]*\/debian/ &&
      /(^|\n)Suites:[^\n]*[ \t]/ {
        if (match($0, "(^|\n)Suites:[^\n]*")) {
          s = substr($0, RSTART, RLENGTH)
          if (s ~ ("[ \t]" cn "([ \t]|$)")) print
        }
      }' "$f" | sed -E 's/^Types:.*/Types: deb-src/')
    out+=$'\n'
  done
  if [[ -n ${out//[[:space:]]/} ]]; then
    log "adding deb-src entry $SRC_LIST (derived from existing .sources files)"
    printf '%s\n' "$out" > "$SRC_LIST"
    return 0
  fi
  # one-line lists
  local lines
  lines=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -E "^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]*/debian[^[:space:]]*[[:space:]]+$codename[[:space:]]" |
    sed -E 's/^deb([[:space:]])/deb-src\1/' || true)
  [[ -n $lines ]] || die "no Debian '$codename' apt entry found to derive a deb-src entry from"
  log "adding deb-src entry $SRC_LIST_ONELINE (derived from existing one-line lists)"
  printf '%s\n' "$lines" > "$SRC_LIST_ONELINE"
}

build_apiserver() {
  local t0 src go_ver
  t0=$(date +%s)
  add_deb_src
  if [[ -z $(apt-cache showsrc kubernetes 2>/dev/null) ]]; then APT_UPDATED=0; apt_update; fi
  mkdir -p "$BUILD_DIR"
  src=$(find "$BUILD_DIR" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  if [[ -z $src || ! -d $src/vendor ]]; then
    [[ -n $src ]] && rm -rf "$src"
    log "apt-get source kubernetes (into $BUILD_DIR)"
    if ! (cd "$BUILD_DIR" && apt-get source -qq kubernetes >/dev/null 2>"$BUILD_DIR/apt-source.err"); then
      # stale package lists (e.g. a security update replaced the source): refresh once
      APT_UPDATED=0; apt_update
      (cd "$BUILD_DIR" && apt-get source -qq kubernetes >/dev/null 2>"$BUILD_DIR/apt-source.err") ||
        { cat "$BUILD_DIR/apt-source.err" >&2; die "apt-get source kubernetes failed"; }
    fi
    src=$(find "$BUILD_DIR" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  fi
  [[ -n $src && -d $src/cmd/kube-apiserver ]] || die "kubernetes source tree not found in $BUILD_DIR"
  go_ver=$(go version)
  log "building kube-apiserver in $src with $go_ver (takes ~10 min on 2 cores)"
  mkdir -p "$BUILD_DIR/gopath" "$BUILD_DIR/gocache" "$BUILD_DIR/home"
  # `make WHAT=cmd/kube-apiserver` as debian/rules does: it first runs the
  # code generators (pkg/generated/openapi is not in the tarball), then builds
  # in GOPATH mode (hack/lib/init.sh sets GO111MODULE=off) with vendor/.
  # The version (v1.20.2) is baked into hack/lib/version.sh by `git archive`.
  # Kubernetes 1.20 vendors modern-go/reflect2 v1.0.1, whose map iteration crashes the
  # process (SIGSEGV in mapiterinit) when built with Go 1.18 or later, as bookworm's Go is:
  # the apiserver dies the first time it records a mutating webhook's patch. reflect2 v1.0.2
  # fixes it; Debian packages it, so the vendored copy is replaced with Debian's.
  local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -f $reflect2/reflect2.go ]] || die "golang-github-modern-go-reflect2-dev is not installed"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  find "$reflect2" -maxdepth 1 -type f -name '*.go' ! -name '*_test.go' -exec cp {} "$src/vendor/github.com/modern-go/reflect2/" \;
  find "$reflect2" -maxdepth 1 -type f -name '*.s' -exec cp {} "$src/vendor/github.com/modern-go/reflect2/" \;
  # Spark's cluster mode creates a driver Service whose ports carry no `protocol`. Kubernetes
  # 1.20's server-side apply then fails to build the Service's managed fields (protocol is part
  # of the ports list's merge key and has no OpenAPI default), and the apiserver answers 500.
  # Kubernetes 1.21 (PR 98576) gave ServicePort.Protocol the `+default="TCP"` marker that
  # ContainerPort.Protocol already carries; the build regenerates the OpenAPI from it.
  local types="$src/staging/src/k8s.io/api/core/v1/types.go"
  awk '
    /^type ServicePort struct/ { in_port = 1 }
    in_port && /^}/ { in_port = 0 }
    in_port && /^\tProtocol Protocol `json:"protocol,omitempty"/ && previous !~ /\+default="TCP"/ {
      print "\t// +default=\"TCP\""
    }
    { print; previous = $0 }
  ' "$types" > "$types.new" && mv "$types.new" "$types"
  awk '/^type ServicePort struct/,/^}/' "$types" | grep -q '+default="TCP"' ||
    die "could not add the +default marker to ServicePort.Protocol in $types"
  (
    cd "$src"
    export GOPATH="$BUILD_DIR/gopath" GOCACHE="$BUILD_DIR/gocache" HOME="$BUILD_DIR/home"
    export CGO_ENABLED=0 GOFLAGS= GOTOOLCHAIN=local GOPROXY=off GO111MODULE=off
    make WHAT=cmd/kube-apiserver
    cp _output/bin/kube-apiserver "$BUILD_DIR/kube-apiserver.new"
  ) > "$BUILD_DIR/build.log" 2>&1 || { tail -n 60 "$BUILD_DIR/build.log" >&2; die "kube-apiserver build failed (log: $BUILD_DIR/build.log)"; }
  install -m 0755 "$BUILD_DIR/kube-apiserver.new" "$APISERVER"
  touch "$APISERVER_STAMP"
  rm -f "$BUILD_DIR/kube-apiserver.new"
  # The stamped binary is all later runs use; the source tree, GOPATH and Go build cache are
  # several GB that a small CI disk needs for the Rust builds (CI once ran out of space).
  rm -rf "$src" "$BUILD_DIR/gopath" "$BUILD_DIR/gocache" "$BUILD_DIR/home"
  echo "$(( $(date +%s) - t0 ))" > "$BUILD_DIR/build-seconds"
  log "kube-apiserver built in $(( $(date +%s) - t0 ))s"
}

if apiserver_ok; then
  log "kube-apiserver cached: $APISERVER"
else
  build_apiserver
  apiserver_ok || die "built $APISERVER but it does not run --version"
fi

# ---------------------------------------------------------------- pyspark venv
venv_ok() {
  [[ -x $VENV/bin/spark-submit && -x $VENV/bin/python ]] &&
    "$VENV/bin/python" -c "import pyspark, py4j, sys; sys.exit(0 if pyspark.__version__ == '$PYSPARK_VERSION' else 1)" 2>/dev/null
}
if venv_ok; then
  log "pyspark venv cached: $VENV"
else
  # Prefer Debian's python3 (python3-venv installed above); fall back to PATH.
  PY=/usr/bin/python3; [[ -x $PY ]] || PY=$(command -v python3)
  log "creating venv $VENV with $PY, pip install pyspark==$PYSPARK_VERSION py4j"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "pyspark==$PYSPARK_VERSION" py4j
  venv_ok || die "pyspark venv check failed"
  # spark-submit finds SPARK_HOME with the `python3` on PATH: the venv's bin
  # must come first on PATH (or the venv be activated).
  PATH="$VENV/bin:$PATH" SPARK_LOCAL_IP=127.0.0.1 "$VENV/bin/spark-submit" --version 2>&1 |
    grep -q "version $PYSPARK_VERSION" || die "spark-submit --version failed in $VENV"
fi
command -v java >/dev/null 2>&1 || die "java not found (Spark needs Java 17)"

cat <<INFO
etcd:            $ETCD ($("$ETCD" --version 2>/dev/null | head -n1))
kube-apiserver:  $APISERVER ($("$APISERVER" --version 2>/dev/null))
pyspark venv:    $VENV (spark-submit: $VENV/bin/spark-submit)
java:            $(command -v java) ($(java -version 2>&1 | head -n1))
kubectl:         $(command -v kubectl || echo 'NOT FOUND')
INFO
