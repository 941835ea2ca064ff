#!/usr/bin/env bash
# `umi data glpft` at ToolBench's size: a synthetic ToolBench folder of N answer files
# (default 126,000, about the full training set's solution trajectories), each a hard
# link to one of data/toolbench-real's 13 real files with a trajectory, under its own id,
# so the input costs
# no disk; every trajectory goes through all six scripts (--all-trajectories). Prints
# wall time, peak memory (RSS) and bytes in and out.
#
# With GLPFT=PATH/TO/Multi-LLM-Agent/GLPFT it also runs the reference's six scripts on the
# first REF answer files (default 2,000; stage 1 with its data[:20] cut removed), in the
# same run, for a rate to compare (they hold everything in memory, so not at full size),
# with os.listdir sorted as umi reads files, and compares the bytes.
# Needs `pip install tqdm` in python3 for the reference.
#
# Usage: scripts/bench_glpft.sh [N] [REF]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-126000}
REF=${2:-2000}
WORK=${WORK:-target/bench-glpft}
UMI=./target/release/umi
rm -rf "$WORK"
mkdir -p "$WORK"
cargo build --release --quiet

make_toolbench() { # dir count
  local dir=$1 count=$2
  mkdir -p "$dir/test_query_ids" "$dir/answer"/G{1,2,3}_answer
  for s in G1_category G1_instruction G1_tool G2_category G2_instruction G3_instruction; do
    echo '{}' > "$dir/test_query_ids/$s.json"
  done
  # The 13 real files that hold a trajectory (train_messages): one trajectory per file.
  mapfile -t real < <(grep -l '"train_messages"' data/toolbench-real/answer/*/*.json)
  local i group
  for ((i = 0; i < count; i++)); do
    group=G$((i % 3 + 1))_answer
    ln "${real[i % ${#real[@]}]}" "$dir/answer/$group/${i}_ChatGPT_DFS_woFilter_w2.json"
  done
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, $(date -u +%F)"
make_toolbench "$WORK/toolbench" "$N"
in_bytes=$(find "$WORK/toolbench/answer" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s}')
/usr/bin/time -f '%e %M' -o "$WORK/umi.time" \
  $UMI data glpft --toolbench "$WORK/toolbench" --out "$WORK/out" --all-trajectories > "$WORK/umi.out" 2> "$WORK/umi.err"
read -r secs rss_kb < "$WORK/umi.time"
out_bytes=$(du -sb "$WORK/out" | cut -f1)
cat "$WORK/umi.out"
echo "| program | answer files | read | written | seconds | files/s | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '| umi data glpft | %d | %.1f GB | %.1f GB | %.1f | %.0f | %.0f MiB |\n' \
  "$N" "$(echo "$in_bytes / 1000000000" | bc -l)" "$(echo "$out_bytes / 1000000000" | bc -l)" "$secs" \
  "$(echo "$N / $secs" | bc -l)" "$(echo "$rss_kb / 1024" | bc -l)"
rm -rf "$WORK/out"

if [ -n "${GLPFT:-}" ]; then
  make_toolbench "$WORK/ref-toolbench" "$REF"
  sed 's/data\[:20\]/data/' "$GLPFT/process_data/toolbench/prepro_raw_stage_1.py" > "$WORK/stage_1_all.py"
  ref_in=$(find "$WORK/ref-toolbench/answer" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s}')
  raw="$WORK/ref-out/raw_data"
  sorted_listdir='import os, runpy, sys
_listdir = os.listdir
os.listdir = lambda path=".": sorted(_listdir(path))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")'
  start=$(date +%s.%N)
  peak=0
  run_ref() {
    /usr/bin/time -f '%M' -o "$WORK/ref.time" env PYTHONPATH="$GLPFT" python3 -c "$sorted_listdir" "$@" > /dev/null 2>&1
    local kb; kb=$(cat "$WORK/ref.time"); [ "$kb" -gt "$peak" ] && peak=$kb; true
  }
  run_ref "$WORK/stage_1_all.py" --data_dir "$WORK/ref-toolbench" --output_path "$raw"
  run_ref "$GLPFT/process_data/toolbench/prepro_raw_stage_2.py" --input_path "$raw/raw_data_stage_1.json" --output_path "$raw"
  for mode in backbone planner caller summarizer; do
    run_ref "$GLPFT/process_data/toolbench/prepro_$mode.py" --input_path "$raw/raw_data_stage_2.json" \
      --output_path "$WORK/ref-out/train_$mode.json" --prompt_type "toolbench_$mode"
  done
  secs=$(echo "$(date +%s.%N) - $start" | bc -l)
  out_bytes=$(du -sb "$WORK/ref-out" | cut -f1)
  printf '| reference scripts (6 runs) | %d | %.2f GB | %.2f GB | %.1f | %.0f | %.0f MiB |\n' \
    "$REF" "$(echo "$ref_in / 1000000000" | bc -l)" "$(echo "$out_bytes / 1000000000" | bc -l)" "$secs" \
    "$(echo "$REF / $secs" | bc -l)" "$(echo "$peak / 1024" | bc -l)"
  $UMI data glpft --toolbench "$WORK/ref-toolbench" --out "$WORK/umi-ref-out" --all-trajectories > /dev/null 2>&1
  for f in raw_data/raw_data_stage_1.json raw_data/raw_data_stage_2.json train_backbone.json train_planner.json train_caller.json train_summarizer.json; do
    cmp -s "$WORK/ref-out/$f" "$WORK/umi-ref-out/$f" && echo "same bytes: $f" || echo "DIFFERENT: $f"
  done
fi
