#!/usr/bin/env bash
# The cost of structured output: decode tokens/s of the bundled model with and without a
# JSON schema (scripts/bench/long_json.schema.json: 64 or more objects, so no run ends
# before --gen-tokens), at 1 and 8 streams. The two run in turn, PAIRS times each, so a
# machine whose speed drifts is compared pair by pair; prints the medians and the median
# ratio, and the time the grammar took per generated token (masks and matching, measured
# inside the engine, which the machine's noise does not blur as much).
# Usage: scripts/bench_structured.sh [PAIRS]   (default 5; release build first)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-5}
umi=./target/release/umi
schema=scripts/bench/long_json.schema.json
common=(bench engine --dtype quantized --prompt-tokens 128 --gen-tokens 64 --repeats 1 --json)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for streams in 1 8; do
  for _ in $(seq "$pairs"); do
    "$umi" "${common[@]}" --streams "$streams" >>"$out"
    "$umi" "${common[@]}" --streams "$streams" --json-schema "$schema" >>"$out"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"{'streams':>7} {'free tok/s':>11} {'schema tok/s':>13} {'schema/free':>12} {'grammar µs/token':>17}   (total generated tok/s, medians)")
for streams in (1, 8):
    free = [r["total_tok_s"] for r in rows if r["streams"] == streams and not r["constrained"]]
    held = [r["total_tok_s"] for r in rows if r["streams"] == streams and r["constrained"]]
    ratio = statistics.median(h / f for f, h in zip(free, held))
    cost = statistics.median(r["grammar_us_per_token"] for r in rows if r["streams"] == streams and r["constrained"])
    print(f"{streams:>7} {statistics.median(free):>11.1f} {statistics.median(held):>13.1f} {ratio:>12.3f} {cost:>17.0f}")
print(f"model {rows[0]['model']} ({rows[0]['dtype']}), prompt 128, 64 generated, {len(rows) // 4} pairs each")
PY
