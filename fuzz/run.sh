#!/usr/bin/env bash
# Builds every fuzz target once, then runs each in turn for SECONDS seconds (default 15) from
# the seed corpora fuzz/seed.py writes. Exits non-zero on the first crash; libFuzzer leaves the
# input in fuzz/artifacts/<target>/ (reproduce: cargo +nightly fuzz run -s none <target> <file>).
# Needs the nightly toolchain and cargo-fuzz (.ci/run installs both). No sanitizer (-s none):
# the crate forbids unsafe code, so what there is to find is panics, overflows (debug assertions
# are on) and wrong answers, and the build runs several times faster without ASan.
#
# FUZZ_PROFILE=dev builds without optimisation (.ci/run: the build from clean takes a third of
# the release build's time, which matters more than speed for a 15 s run); the default is
# release, for long runs.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]      e.g. fuzz/run.sh 600 quantity
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
shift || true
python3 fuzz/seed.py
# cargo fuzz has no --locked; this fails as it would if fuzz/Cargo.lock is out of date.
cargo +nightly tree --locked --manifest-path fuzz/Cargo.toml >/dev/null
profile=(-a)
[[ "${FUZZ_PROFILE:-release}" == dev ]] && profile=(--dev)
cargo +nightly fuzz build -s none "${profile[@]}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  cargo +nightly fuzz run -s none "${profile[@]}" "$target" -- \
    -max_total_time="$seconds" -timeout=20 -print_final_stats=1
done
