#!/usr/bin/env bash
# The hostile inputs of issue 19 against release builds of this tree and of a base commit
# (default f5b6da3, main before the linear-cost work), alternated RUNS times: an executor pod
# with 45,000 distinct nodeSelectorTerms under the built-in rules, then four 2.9 MB driver
# ConfigMaps at once, fitted to a quota (tests/cost_serve.rs, `measure_hostile_inputs`, with a
# fake empty Kubernetes API). Prints, per build and run, the server's peak RSS (VmHWM) when idle,
# after the affinity review and after the ConfigMaps, and the time to answer each.
#
#   benches/hostile.sh                  # about 25 minutes the first time (two release builds)
#   BASE=main RUNS=1 benches/hostile.sh
#
# Then the complexity test (tests/cost_linear.rs) in release on both trees, for the ratios at n
# and 10n of every dimension (COST_LINEAR=0 skips it). Not run by CI: it builds twice and takes
# minutes; the tests themselves are in `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-f5b6da3}
RUNS=${RUNS:-3}
COST_LINEAR=${COST_LINEAR:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

work=$(mktemp -d /tmp/spark-admission-hostile.XXXXXX)
cleanup() {
  git worktree remove --force "$work/base" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The base tree gets this tree's measurement tests (they use only APIs both have) and their
# dev-dependency, and a target directory of its own: cargo hashes a package by its path within
# the workspace, so two checkouts sharing one would take each other's builds for their own.
BASE_TARGET=${BASE_TARGET:-$CARGO_TARGET_DIR/hostile-base}
git worktree add -q --detach "$work/base" "$BASE"
cp tests/cost_serve.rs tests/cost_linear.rs "$work/base/tests/"
cp Cargo.lock "$work/base/Cargo.lock"
grep -q '^allocation-counter' "$work/base/Cargo.toml" ||
  sed -i 's/^\[dev-dependencies\]$/[dev-dependencies]\nallocation-counter = "0.8.1"/' "$work/base/Cargo.toml"
(cd "$work/base" && CARGO_TARGET_DIR=$BASE_TARGET cargo build --release --quiet --bin spark-admission)
cp "$BASE_TARGET/release/spark-admission" "$work/spark-admission-base"
cargo build --release --quiet --bin spark-admission
cp "$CARGO_TARGET_DIR/release/spark-admission" "$work/spark-admission-this"

measure() {
  SPARK_ADMISSION_BIN="$work/spark-admission-$1" cargo test --release --quiet --test cost_serve -- \
    --ignored --nocapture measure_hostile_inputs 2>/dev/null | sed -n "s/^FIGURES /$1 /p"
}
echo "== serve: peak RSS (KiB) and time to answer (ms), $BASE (base) and this tree (this)"
for _ in $(seq "$RUNS"); do
  measure base
  measure this
done

if [ "$COST_LINEAR" = 1 ]; then
  echo "== tests/cost_linear.rs in release, $BASE (base): quadratic dimensions fail there"
  (cd "$work/base" && CARGO_TARGET_DIR=$BASE_TARGET COST_RUNS=1 cargo test --release --quiet --test cost_linear -- \
    --nocapture --test-threads=1 2>&1 | grep -E 'heap \(|^test result' || true)
  echo "== tests/cost_linear.rs in release, this tree"
  cargo test --release --quiet --test cost_linear -- --nocapture --test-threads=1 2>&1 |
    grep -E 'heap \(|^test result' || true
fi
