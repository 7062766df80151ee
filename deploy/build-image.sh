#!/usr/bin/env bash
# Builds the spark-admission image without pulling anything: a statically linked binary
# (profile dist) in an image FROM scratch that holds only the binary, the CA certificates and an
# /etc/passwd entry for uid 65532. Needs cargo (the host target, x86_64-unknown-linux-gnu, with
# glibc's static libraries from libc6-dev), buildah, and the CA bundle of Debian's
# ca-certificates. deploy/Dockerfile builds the same layout for those who can pull images.
#
#   deploy/build-image.sh [--tag NAME] [--out FILE.tar]
#
# --tag  image name in buildah's local storage (default spark-admission:<version>)
# --out  also write the image as an OCI archive (load it with `podman load`, `skopeo copy
#        oci-archive:FILE docker://REGISTRY/...` or `ctr images import`)
#
# BUILDAH_STORAGE_DRIVER (default vfs, which works without overlay support in the kernel or
# privileges to mount) and CARGO_TARGET_DIR are read from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
tag="spark-admission:${version}"
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag="${2:?--tag needs a NAME}"; shift 2 ;;
    --out) out="${2:?--out needs a FILE.tar}"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1; allowed: --tag NAME, --out FILE.tar" >&2; exit 2 ;;
  esac
done

buildah=(buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")
target=x86_64-unknown-linux-gnu
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -s "$ca_bundle" ]] || { echo "build-image.sh: $ca_bundle is missing; install ca-certificates" >&2; exit 1; }
command -v buildah >/dev/null || { echo "build-image.sh: buildah is missing; apt-get install buildah" >&2; exit 1; }

# Static glibc: only the final link of the binary needs +crt-static (ring's and mimalloc's C
# code are static archives either way), so `cargo rustc` passes it to that crate alone (a
# RUSTFLAGS change would also reach build scripts and proc macros). The profile is `dist`, the
# release build with whole-program optimisation (Cargo.toml; BENCHMARKS.md, "The shipped
# build"): what ships takes less CPU per review than what the benchmarks build. The musl target
# would be the usual choice but is not installable offline. Symbols are stripped by the
# profile itself (`strip = "symbols"`), so `cargo install --profile dist` strips them too.
echo "== static dist build (+crt-static on the final link)"
started=$SECONDS
cargo rustc --profile dist --locked --bin spark-admission -- -C target-feature=+crt-static
echo "   built in $((SECONDS - started))s"
built="${CARGO_TARGET_DIR:-target}/dist/spark-admission"
# A later `cargo build --profile dist` links that path again, dynamically: keep this one.
binary_dir=$(mktemp -d)
trap 'rm -rf "$binary_dir" "${rootfs:-}"' EXIT
binary="$binary_dir/spark-admission"
cp "$built" "$binary"
# A dynamic binary would find no loader in an empty image; refuse it here, not at pod start.
if readelf -l "$binary" | grep -q 'Requesting program interpreter'; then
  echo "build-image.sh: $binary is dynamically linked" >&2
  exit 1
fi

echo "== image $tag (FROM scratch)"
rootfs=$(mktemp -d)
install -D -m 0755 "$binary" "$rootfs/usr/local/bin/spark-admission"
install -D -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
install -D -m 0644 deploy/image/passwd "$rootfs/etc/passwd"

container=$("${buildah[@]}" from scratch)
"${buildah[@]}" copy --quiet "$container" "$rootfs/" / >/dev/null
# Numeric user and group, so the kubelet can check runAsNonRoot without reading /etc/passwd.
"${buildah[@]}" config \
  --user 65532:65532 \
  --entrypoint '["/usr/local/bin/spark-admission"]' \
  --cmd serve \
  --port 8443 --port 8080 \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label org.opencontainers.image.title=spark-admission \
  --label "org.opencontainers.image.version=$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$container"
"${buildah[@]}" commit --quiet --rm "$container" "$tag" >/dev/null
echo "   $tag: $("${buildah[@]}" images --format '{{.Size}}' "$tag" | head -n 1)"

if [[ -n "$out" ]]; then
  rm -f "$out"
  "${buildah[@]}" push --quiet "$tag" "oci-archive:$out:$tag"
  echo "   wrote $out ($(du -h "$out" | cut -f1))"
fi
