#!/usr/bin/env bash
# A LLaMA-2-7B-shaped checkpoint on this CPU, umi beside HF transformers on the same files
# (#15): wall time from start to the first token and peak RSS (/usr/bin/time -v), then the
# greedy tokens of both for a short prompt (scripts/bf16_agreement.py). The checkpoint has random weights
# (scripts/make_llama_checkpoint.py, made here if absent): its text is noise, never a model.
#
#   scripts/bench_7b_cpu.sh            # 7b; SIZE=13b, CKPT=DIR, TOKENS=N, PROMPT=TEXT
#
# Needs a release build (scripts/setup.sh) and transformers in target/bench-venv
# (scripts/bench_seed.sh makes it). The page cache is dropped before each run where this
# user may (root), so every run reads the weights from disk.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-7b}
CKPT=${CKPT:-target/ckpt-$SIZE}
TOKENS=${TOKENS:-8}
PROMPT=${PROMPT:-"The capital of France is"}
PY=${PY:-target/bench-venv/bin/python}
OUT=${OUT:-target/bench-7b}
UMI=./target/release/umi
mkdir -p "$OUT"

[ -f "$CKPT/config.json" ] ||
    python3 scripts/make_llama_checkpoint.py "$SIZE" "$CKPT" --tokenizer models/llama2-tokenizer.json
weights=$(du -cb "$CKPT"/*.safetensors | tail -1 | cut -f1)

drop_caches() { sync; { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null || true; }

# measure LABEL COMMAND...: runs it under /usr/bin/time -v, prints a table row.
measure() {
    local label=$1
    shift
    drop_caches
    /usr/bin/time -v -o "$OUT/$label.time" "$@" >"$OUT/$label.out" 2>"$OUT/$label.err"
    local rss_kb wall
    rss_kb=$(awk -F': ' '/Maximum resident/ {print $2}' "$OUT/$label.time")
    wall=$(awk -F': ' '/Elapsed \(wall/ {print $2}' "$OUT/$label.time")
    python3 - "$label" "$rss_kb" "$wall" "$weights" <<'PY'
import sys
label, rss_kb, wall, weights = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
rss = rss_kb * 1024
print(f"| {label} | {weights / 1e9:.2f} GB | {rss / 1e9:.2f} GB | {rss / weights:.3f}x | {secs:.1f} s |")
PY
}

echo "machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "checkpoint: $CKPT ($SIZE, random weights), prompt: \"$PROMPT\""
echo
echo "| start to first token | weights | peak RSS | RSS / weights | wall |"
echo "|---|---:|---:|---:|---:|"
measure umi "$UMI" generate --model "$CKPT" --prompt "$PROMPT" --max-new-tokens 1 --temperature 0
measure transformers "$PY" scripts/hf_greedy.py "$CKPT" --prompt "$PROMPT" --new-tokens 1

# Greedy tokens: umi's own sequence, scored step by step by transformers with both of its
# attention backends (sdpa, eager), which themselves part ways on near-ties.
printf '%s\n' "$PROMPT" >"$OUT/prompt.txt"
echo
"$PY" scripts/bf16_agreement.py "$CKPT" --tokens "$TOKENS" --prompts "$OUT/prompt.txt" --steps --generate \
    2>"$OUT/agreement.err"
