#!/usr/bin/env bash
# Instructions per review, counted by valgrind (callgrind), for spark-admission's handler work
# (parse, policy, patch, response encoding: examples/review_instructions.rs) beside the two
# allowed:true baselines of benches/load.sh without their transport. A count repeats exactly
# for the same binary and input, so a change of a few percent shows, where load.sh's CPU
# figures move by 20% between runs on this machine; what it cannot show is time spent waiting
# on memory, which instructions do not count.
#
#   benches/instructions.sh            # executor and driver; prints a markdown table
#
# Each figure is (instructions for N+1 reviews - instructions for 1) / N, so start-up and the
# first review's one-time costs (policy parse, lazy statics) are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet --example review_instructions
BIN=${CARGO_TARGET_DIR:-target}/release/examples/review_instructions
OUT=$(mktemp -d /tmp/spark-admission-instructions.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

count() { # WHAT BODY TIMES -> total instructions
    valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" "$BIN" "$1" "$2" "$3" \
        >/dev/null 2>"$OUT/valgrind.log" || { cat "$OUT/valgrind.log" >&2; exit 1; }
    awk '/^summary:/ { print $2 }' "$OUT/cg.out"
}

per_review() { # WHAT BODY -> instructions per review
    local one many
    one=$(count "$1" "$2" 1)
    many=$(count "$1" "$2" $((N + 1)))
    echo $(((many - one) / N))
}

echo "| body | spark-admission | kube-rs baseline | ratio | lean baseline | ratio |"
echo "| --- | --- | --- | --- | --- | --- |"
for body in executor driver; do
    policy=$(per_review policy "$body")
    kube=$(per_review kube-rs "$body")
    lean=$(per_review lean "$body")
    python3 -c "p, k, l = $policy, $kube, $lean; print(f'| $body | {p:,} | {k:,} | {p / k:.2f}x | {l:,} | {p / l:.2f}x |')"
done
