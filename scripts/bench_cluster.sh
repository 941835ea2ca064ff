#!/usr/bin/env bash
# Throughput of the distributed path: `umi cluster up` (etcd, workers, coordinator on
# loopback) with 1, then 2 replicas of the planner (the role called at every step), each
# worker limited to one core (RAYON_NUM_THREADS=1: a stand-in for one GPU per replica),
# and `umi run --coordinator` over N copies of tests/fixtures/one-query.json.
# Prints tasks/s for each. Usage: scripts/bench_cluster.sh [QUERIES] [STEPS] [TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-16}
STEPS=${2:-4}
TOKENS=${3:-32}
UMI=$PWD/target/release/umi
OUT=target/bench-cluster
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release --quiet
python3 - "$N" "$OUT/queries.json" <<'PY'
import json, sys
one = json.load(open("tests/fixtures/one-query.json"))[0]
json.dump([dict(one, query_id=i) for i in range(1, int(sys.argv[1]) + 1)], open(sys.argv[2], "w"))
PY

for planners in 1 2; do
  dir="$OUT/planners-$planners"
  mkdir -p "$dir"
  RUST_LOG=umi_worker=info RAYON_NUM_THREADS=1 $UMI cluster up --dir "$dir/cluster" --etcd-port 57379 --coordinator-port 57050 \
    --planners "$planners" --dtype quantized --max-steps "$STEPS" --max-new-tokens "$TOKENS" \
    --concurrency 16 2>"$dir/cluster.log" &
  cluster=$!
  # Ready when the coordinator sees every worker: then the cluster prints its client
  # command (TLS and a token of its own, in $dir/cluster/secrets).
  for _ in $(seq 1 3000); do
    grep -q "Ctrl-C stops the cluster" "$dir/cluster.log" 2>/dev/null && break
    sleep 0.1
  done
  $UMI run --coordinator https://127.0.0.1:57050 --tls-ca "$dir/cluster/secrets/ca.pem" \
    --auth-token-file "$dir/cluster/secrets/token" \
    --queries "$OUT/queries.json" --out "$dir/answers" >/dev/null
  kill -TERM "$cluster"
  wait "$cluster" || true
  python3 - "$dir/answers/summary.json" "$planners" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"planners={sys.argv[2]}: {s['queries']} tasks, {s['steps']} agent steps, {s['seconds']:.1f} s, "
      f"{s['queries'] / s['seconds']:.3f} tasks/s, {s['solved']} solved, {s['failed']} exhausted or failed")
PY
  for log in "$dir"/cluster/planner-*.log; do
    echo "  $(basename "$log" .log): $(grep -c "role call served" "$log") calls served"
  done
done

# The bottleneck role alone: planner calls through the same client, to 1 then 2 replicas,
# each replica pinned to its own core (taskset), as replicas on their own GPUs would be.
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' EXIT
for core in 0 1; do
  RAYON_NUM_THREADS=1 taskset -c "$core" $UMI worker --role planner --listen "127.0.0.1:$((57151 + core))" \
    --dtype quantized 2>"$OUT/planner-core$core.log" &
  pids+=($!)
done
for _ in $(seq 1 300); do
  [ "$(cat "$OUT"/planner-core*.log | grep -c " role on ")" -ge 2 ] && break
  sleep 0.1
done
$UMI bench role --role planner --requests 48 --concurrency 8 --max-new-tokens "$TOKENS" \
  --endpoint http://127.0.0.1:57151
$UMI bench role --role planner --requests 48 --concurrency 8 --max-new-tokens "$TOKENS" \
  --endpoint http://127.0.0.1:57151 --endpoint http://127.0.0.1:57152
