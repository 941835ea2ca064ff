#!/usr/bin/env bash
# Cost of the gRPC path: the same greedy `umi run` over data/queries/demo.json, once with the
# three roles in process and once with each role in its own `umi worker` process on
# loopback. Prints seconds per agent step for both. Usage: scripts/bench_roles.sh [STEPS] [TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-4}
TOKENS=${2:-32}
UMI=./target/release/umi
OUT=target/bench-roles
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release --quiet
common=(--temperature 0 --max-new-tokens "$TOKENS" --max-steps "$STEPS")

pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' EXIT
port=56051
for role in planner caller summarizer; do
  $UMI worker --role "$role" --listen "127.0.0.1:$port" 2>>"$OUT/workers.log" &
  pids+=($!)
  port=$((port + 1))
done
sleep 2  # the workers load the model (~0.5 s) before listening

$UMI run --out "$OUT/in-process" "${common[@]}" >/dev/null
$UMI run --out "$OUT/workers" "${common[@]}" \
  --planner-endpoint http://127.0.0.1:56051 --caller-endpoint http://127.0.0.1:56052 \
  --summarizer-endpoint http://127.0.0.1:56053 >/dev/null
for mode in in-process workers; do
  python3 - "$OUT/$mode/summary.json" "$mode" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<11} {s['queries']} queries, {s['steps']} agent steps, {s['seconds']:.2f} s, {s['seconds'] / max(s['steps'], 1):.3f} s/step")
PY
done
