#!/usr/bin/env bash
# StableToolBench's benchmark with umi, end to end: its six solvable query groups (765
# queries), tools answered from its tool response cache (optionally simulating misses),
# answer files in the roles its converter reads, then its converter when it is there, then
# its solvable pass rate when a judge is given.
#
#   scripts/stabletoolbench.sh STABLETOOLBENCH_DIR [CACHE_DIR] [-- extra umi run flags]
#   JUDGE=http://host:port/v1 scripts/stabletoolbench.sh ...   # also the pass rate
#
# STABLETOOLBENCH_DIR: a checkout of THUNLP-MT/StableToolBench (its
# solvable_queries/test_instruction/*.json; its toolbench/tooleval for the converter).
# CACHE_DIR: its tool_response_cache (default: STABLETOOLBENCH_DIR/tool_response_cache;
# without one, every tool call gets a "no recorded response" observation).
# Answers go to ${OUT:-runs/stabletoolbench}/<group>/, converted answers to
# ${OUT}/converted/<group>.json. Resumable: rerun to finish an interrupted run.
# JUDGE: an OpenAI-compatible endpoint (StableToolBench uses gpt-3.5-turbo-16k; model
# JUDGE_MODEL, key UMI_JUDGE_API_KEY) for `umi eval pass-rate`, per group:
# <group>/pass_rate.json in StableToolBench's schema, the rates printed at the end.
# A --width 1 in the umi run flags makes single-chain (CoT@1) files; the method follows.
set -euo pipefail
STB=${1:?usage: scripts/stabletoolbench.sh STABLETOOLBENCH_DIR [CACHE_DIR] [-- umi run flags]}
shift
CACHE=
if [[ $# -gt 0 && $1 != -- ]]; then CACHE=$1; shift; fi
[[ ${1:-} == -- ]] && shift
CACHE=${CACHE:-$STB/tool_response_cache}
OUT=${OUT:-runs/stabletoolbench}
UMI=${UMI:-./target/release/umi}
# STB_GROUPS: the groups to run, space-separated (default: all six).
read -r -a GROUPS_ <<<"${STB_GROUPS:-G1_instruction G1_category G1_tool G2_instruction G2_category G3_instruction}"
record=()
[[ -d $CACHE ]] && record=(--record "$CACHE") || echo "no cache at $CACHE: tool calls will find no recorded response" >&2
width=2
args=("$@")
for i in "${!args[@]}"; do
  [[ ${args[$i]} == --width ]] && width=${args[$((i + 1))]:-2}
  [[ ${args[$i]} == --width=* ]] && width=${args[$i]#--width=}
done
method=DFS_woFilter_w$width
[[ $width == 1 ]] && method=CoT@1
judge=()
[[ -n ${JUDGE:-} ]] && judge=(--judge "$JUDGE")
[[ -n ${JUDGE_MODEL:-} ]] && judge+=(--judge-model "$JUDGE_MODEL")
mkdir -p "$OUT/converted"
OUT=$(cd "$OUT" && pwd)
: >"$OUT/pass_rate.txt"
start=$(date +%s)
for g in "${GROUPS_[@]}"; do
  echo "== $g" >&2
  "$UMI" run --queries "$STB/solvable_queries/test_instruction/$g.json" --out "$OUT/$g" \
    --answer-format toolbench "${record[@]}" "$@" 2>&1 | grep -E "^tool calls|queries \(" >&2
  if [[ -f $STB/toolbench/tooleval/convert_to_answer_format.py ]]; then
    (cd "$STB/toolbench/tooleval" && python3 convert_to_answer_format.py --answer_dir "$OUT/$g" \
      --method "$method" --output "$OUT/converted/$g.json" >/dev/null)
  fi
  if [[ ${#judge[@]} -gt 0 ]]; then
    "$UMI" eval pass-rate --answers "$OUT/$g" --method "$method" "${judge[@]}" | sed "s/^/$g: /" | tee -a "$OUT/pass_rate.txt"
  fi
done
answers=$(find "$OUT" -maxdepth 2 -name "*_$method.json" | wc -l)
echo "answer files: $answers; seconds: $(( $(date +%s) - start ))"
[[ ${#judge[@]} -gt 0 ]] && cat "$OUT/pass_rate.txt"
true
