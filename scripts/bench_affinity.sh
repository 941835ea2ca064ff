#!/usr/bin/env bash
# Task-affinity routing vs least-outstanding: the planner replicas' prefix-cache hit rate
# and tasks/s with 1, 2 and 4 planner replicas, on the simulated engine (a test double:
# 400 tasks, 64 at once, so that one replica's cache holds every running task's prompts)
# and on the real CPU engine (the bundled SmolLM2, one thread per worker: 32 tasks, 8 at once, of at
# most 4 steps, 32 new tokens per call). Reports in target/bench-affinity/*/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
UMI=$PWD/target/release/umi
OUT=target/bench-affinity
[ -x "$UMI" ] || cargo build --release --quiet
sim=(bench cluster --tasks 400 --concurrency 64)
"$UMI" "${sim[@]}" --planners 1,2,4 --routing affinity --dir "$OUT/sim-affinity"
"$UMI" "${sim[@]}" --planners 2,4 --routing least-outstanding --dir "$OUT/sim-least-outstanding"
model=(bench cluster --engine model --tasks 32 --concurrency 8 --max-steps 4 --max-new-tokens 32 --callers 1 --summarizers 1)
RAYON_NUM_THREADS=1 "$UMI" "${model[@]}" --planners 1,2 --routing affinity --dir "$OUT/model-affinity"
RAYON_NUM_THREADS=1 "$UMI" "${model[@]}" --planners 2 --routing least-outstanding --dir "$OUT/model-least-outstanding"
