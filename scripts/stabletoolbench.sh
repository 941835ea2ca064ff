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
# REFERENCE: a folder of reference answers per group (<REFERENCE>/<group>/, e.g.
# StableToolBench's virtual_chatgpt_cot answers; their method REFERENCE_METHOD, default
# CoT@1): with a judge, also ToolEval's win rate against them, per group
# (<group>/win_rate.json, `umi eval win-rate`, WIN_RATE_TIMES rounds, default 7).
# Afterwards `umi report OUT` draws the whole run (outcomes, calls, trees, both rates).
#
#   OFFLINE=1 scripts/stabletoolbench.sh ...   # nothing outside: no network, no key
#
# OFFLINE=1: a umi worker on loopback (the bundled model, or the model flags in
# OFFLINE_WORKER_FLAGS) simulates the cache's misses (saved into the cache only with
# OFFLINE_SAVE_CACHE=1: a small model's inventions would become recorded replies) and judges
# the answers; its replies are capped at OFFLINE_MAX_TOKENS new tokens (default 256); it
# listens on 127.0.0.1:OFFLINE_PORT (default 18431, the same each run so a rerun resumes).
# StableToolBench's published figures use GPT-4-class simulators and judges: a small
# local model's verdicts say little about the answers, and a different judge gives other
# rates. The loop is the point; with real checkpoints the judge is your choice (JUDGE=).
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
mkdir -p "$OUT"
offline=()
if [[ -n ${OFFLINE:-} ]]; then
  # A fresh key each run; the worker listens on loopback only, on a fixed port (the
  # simulator's address is one of the run's inputs, so a resumed run must find it again).
  key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  log=$OUT/offline-worker.log
  read -r -a worker_flags <<<"${OFFLINE_WORKER_FLAGS:---dtype quantized}"
  UMI_OPENAI_API_KEY=$key "$UMI" worker --role planner --listen 127.0.0.1:0 \
    --openai-listen "127.0.0.1:${OFFLINE_PORT:-18431}" --openai-max-tokens "${OFFLINE_MAX_TOKENS:-256}" \
    "${worker_flags[@]}" 2>"$log" &
  worker=$!
  trap 'kill "$worker" 2>/dev/null; wait "$worker" 2>/dev/null || true' EXIT
  base=
  for _ in $(seq 600); do
    base=$(sed -n 's|.*OpenAI-compatible endpoints on \(http://[^ ]*/v1\).*|\1|p' "$log")
    [[ -n $base ]] && break
    kill -0 "$worker" 2>/dev/null || { cat "$log" >&2; echo "the offline worker stopped" >&2; exit 1; }
    sleep 0.2
  done
  [[ -n $base ]] || { cat "$log" >&2; echo "the offline worker did not start in 120 s" >&2; exit 1; }
  echo "offline: simulator and judge on $base (log: $log)" >&2
  export UMI_SIMULATE_API_KEY=$key UMI_JUDGE_API_KEY=$key
  offline=(--simulate-with "$base")
  # The small model's inventions stay out of a shared cache unless asked for.
  [[ -d $CACHE && -n ${OFFLINE_SAVE_CACHE:-} ]] && offline+=(--save-cache)
  JUDGE=$base
fi
judge=()
[[ -n ${JUDGE:-} ]] && judge=(--judge "$JUDGE")
[[ -n ${JUDGE_MODEL:-} ]] && judge+=(--judge-model "$JUDGE_MODEL")
mkdir -p "$OUT/converted"
OUT=$(cd "$OUT" && pwd)
converter=$STB/toolbench/tooleval/convert_to_answer_format.py
if [[ -f $converter ]]; then
  # The converter's imports (StableToolBench's requirements, tqdm among them) are checked
  # on an empty folder now rather than after the first group's hour of answering.
  probe=$(mktemp -d)
  if ! (cd "${converter%/*}" && python3 convert_to_answer_format.py --answer_dir "$probe" \
    --method "$method" --output "$probe/converted.json" >/dev/null 2>"$probe/stderr"); then
    cat "$probe/stderr" >&2
    echo "StableToolBench's converter ($converter) does not run with python3 here (above);" \
      "install its requirements (pip install tqdm ...) first" >&2
    rm -rf "$probe"
    exit 1
  fi
  rm -rf "$probe"
fi
: >"$OUT/pass_rate.txt"
start=$(date +%s)
for g in "${GROUPS_[@]}"; do
  echo "== $g" >&2
  "$UMI" run --queries "$STB/solvable_queries/test_instruction/$g.json" --out "$OUT/$g" \
    --answer-format toolbench ${record[@]+"${record[@]}"} ${offline[@]+"${offline[@]}"} "$@" 2>&1 | grep -E "^tool calls|queries \(" >&2
  if [[ -f $converter ]]; then
    (cd "${converter%/*}" && python3 convert_to_answer_format.py --answer_dir "$OUT/$g" \
      --method "$method" --output "$OUT/converted/$g.json" >/dev/null)
  fi
  if [[ ${#judge[@]} -gt 0 ]]; then
    "$UMI" eval pass-rate --answers "$OUT/$g" --method "$method" "${judge[@]}" | sed "s/^/$g: /" | tee -a "$OUT/pass_rate.txt"
    if [[ -n ${REFERENCE:-} && -d $REFERENCE/$g ]]; then
      "$UMI" eval win-rate --answers "$OUT/$g" --method "$method" --reference "$REFERENCE/$g" \
        --reference-method "${REFERENCE_METHOD:-CoT@1}" --evaluate-times "${WIN_RATE_TIMES:-7}" \
        "${judge[@]}" | tee -a "$OUT/pass_rate.txt"
    fi
  fi
done
answers=$(find "$OUT" -maxdepth 2 -name "*_$method.json" | wc -l)
echo "answer files: $answers; seconds: $(( $(date +%s) - start ))"
[[ ${#judge[@]} -gt 0 ]] && cat "$OUT/pass_rate.txt"
"$UMI" report "$OUT" >/dev/null && echo "report: $OUT/report.html"
true
