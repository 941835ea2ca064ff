#!/usr/bin/env bash
# Fault runs: a cluster on the simulated engine (a test double for GPU workers: it waits
# the time a 7B model on an H100 would take and writes valid role outputs) solves TASKS
# tasks through `umi run --coordinator` while one fault is injected over and over:
#   none              no fault (the baseline)
#   planner-kill      a planner replica SIGKILLed every 10 s and restarted 2 s later
#   worker-stop       a planner replica SIGSTOPped for the role deadline + 10 s, then SIGCONTed (twice)
#   etcd-kill         etcd SIGKILLed and restarted 5 s later on its data (twice)
#   coordinator-kill  the coordinator SIGKILLed and restarted on its task journal 2 s later (3 times)
#   all-at-once       every fault above and the client's, on a random schedule (seed $SEED, default
#                     1) until the run ends: every 3-8 s one of: a worker of any role SIGKILLed
#                     (restarted 2 s later), a worker SIGSTOPped for 5-20 s, etcd SIGKILLed
#                     (restarted 5 s later), the coordinator SIGKILLed (restarted 2 s later), the
#                     client SIGKILLed and started again on its output folder (it resumes); the
#                     faults' log is $OUT/all-at-once/faults.log. Not in the default list: run it
#                     with TASKS=2000 scripts/fault_suite.sh all-at-once
# Then it checks the answer files: answered = an answer (solved or given up) with no
# failure recorded; failed = an answer recording why it failed; lost = no
# answer file at all; duplicated = a task the coordinator ended more than once (its logs
# across restarts) or two answer files for one query. It prints a line per scenario and,
# last, `tasks N answered A failed F lost L duplicated D` over all of them.
# Usage: scripts/fault_suite.sh [SCENARIO...]   (env: TASKS=800, PROFILE=<sim profile json>)
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-800}
SCENARIOS=${*:-none planner-kill worker-stop etcd-kill coordinator-kill}
UMI=$PWD/target/release/umi
OUT=${OUT:-$PWD/target/fault-suite}
DEADLINE=30
[ -x "$UMI" ] || cargo build --release --quiet
mkdir -p "$OUT"
: >"$OUT/results.txt"

# The real ToolBench queries, copied up to TASKS with distinct ids and texts.
python3 - "$TASKS" "$OUT/queries.json" <<'PY'
import json, sys
base = []
for g in ("G1", "G2", "G3"):
    base += json.load(open(f"data/toolbench-real/instruction/{g}_query.json"))
n = int(sys.argv[1])
out = []
for i in range(n):
    q = dict(base[i % len(base)])
    q["query_id"] = f"f{i}"
    q["query"] = f"{q['query']} (request {i})"
    out.append(q)
json.dump(out, open(sys.argv[2], "w"))
PY

sim=(--engine sim)
[ -n "${PROFILE:-}" ] && sim+=(--sim-profile "$PROFILE")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT

start_etcd() {
  etcd --name umi --data-dir "$dir/etcd" --logger=zap --log-level=error \
    --listen-client-urls "http://127.0.0.1:$ETCD" --advertise-client-urls "http://127.0.0.1:$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD + 1))" \
    --initial-cluster "umi=http://127.0.0.1:$((ETCD + 1))" >>"$dir/etcd.log" 2>&1 &
  etcd_pid=$!; pids+=("$etcd_pid")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ETCD/health" >/dev/null && return; sleep 0.1; done
  echo "etcd did not start" >&2; exit 1
}
# start_worker NAME ROLE PORT
start_worker() {
  "$UMI" worker --role "$2" --listen "127.0.0.1:$3" --etcd "http://127.0.0.1:$ETCD" --lease-ttl 3 \
    "${sim[@]}" --max-batch 8 >>"$dir/$1.log" 2>&1 &
  eval "pid_$1=$!"; pids+=("$!")
}
start_coordinator() {
  RUST_LOG=umi_coordinator=info "$UMI" coordinator --listen "127.0.0.1:$COORD" --etcd "http://127.0.0.1:$ETCD" \
    --task-journal "$dir/tasks.jsonl" --concurrency 64 --role-deadline "$DEADLINE" >>"$dir/coordinator.log" 2>&1 &
  coord_pid=$!; pids+=("$coord_pid")
}

for scenario in $SCENARIOS; do
  dir="$OUT/$scenario"
  rm -rf "$dir" && mkdir -p "$dir"
  ETCD=$((23000 + RANDOM % 2000 * 2)); COORD=$((ETCD + 7000))
  start_etcd
  start_worker planner0 planner $((COORD + 1))
  start_worker planner1 planner $((COORD + 2))
  start_worker caller0 caller $((COORD + 3))
  start_worker caller1 caller $((COORD + 4))
  start_worker summarizer0 summarizer $((COORD + 5))
  start_coordinator
  sleep 3
  started=$(date +%s.%N)
  start_client() {
    "$UMI" run --coordinator "http://127.0.0.1:$COORD" --queries "$OUT/queries.json" --out "$dir/answers" \
      >>"$dir/client.log" 2>&1 &
    client=$!
  }
  start_client
  alive() { kill -0 "$client" 2>/dev/null; }
  sleep 10
  case $scenario in
    none) ;;
    planner-kill)
      while alive; do
        kill -KILL "$pid_planner0" 2>/dev/null || true; sleep 2
        start_worker planner0 planner $((COORD + 1)); sleep 8
      done ;;
    worker-stop)
      for _ in 1 2; do
        alive || break
        kill -STOP "$pid_planner1"; sleep $((DEADLINE + 10)); kill -CONT "$pid_planner1"; sleep 10
      done ;;
    etcd-kill)
      for _ in 1 2; do
        alive || break
        kill -KILL "$etcd_pid"; sleep 5; start_etcd; sleep 15
      done ;;
    coordinator-kill)
      for _ in 1 2 3; do
        alive || break
        kill -KILL "$coord_pid"; sleep 2; start_coordinator; sleep 18
      done ;;
    all-at-once)
      RANDOM=${SEED:-1}
      workers=(planner0:planner:1 planner1:planner:2 caller0:caller:3 caller1:caller:4 summarizer0:summarizer:5)
      : >"$dir/faults.log"
      note() { echo "$(date +%T) $*" | tee -a "$dir/faults.log"; }
      while alive; do
        sleep $((3 + RANDOM % 6))
        alive || break
        IFS=: read -r name role port <<<"${workers[RANDOM % ${#workers[@]}]}"
        pid_var=pid_$name
        case $((RANDOM % 5)) in
          0) note worker-kill "$name"
             kill -KILL "${!pid_var}" 2>/dev/null || true; sleep 2
             start_worker "$name" "$role" $((COORD + port)) ;;
          1) stop_s=$((5 + RANDOM % 16)); note worker-stop "$name" "$stop_s s"
             kill -STOP "${!pid_var}" 2>/dev/null || true; sleep "$stop_s"
             kill -CONT "${!pid_var}" 2>/dev/null || true ;;
          2) note etcd-kill
             kill -KILL "$etcd_pid" 2>/dev/null || true; sleep 5; start_etcd ;;
          3) note coordinator-kill
             kill -KILL "$coord_pid" 2>/dev/null || true; sleep 2; start_coordinator ;;
          4) alive || break
             note client-kill
             kill -KILL "$client" 2>/dev/null || true; wait "$client" 2>/dev/null || true
             sleep 1; start_client ;;
        esac
      done
      echo "faults injected: $(wc -l <"$dir/faults.log") ($(cut -d' ' -f2 "$dir/faults.log" | sort | uniq -c | awk '{printf "%s%s %d", (NR > 1 ? ", " : ""), $2, $1}'))" \
        | tee -a "$dir/faults.log" ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
  wait "$client" || true
  ended=$(date +%s.%N)
  cleanup
  python3 - "$scenario" "$OUT/queries.json" "$dir" "$started" "$ended" <<'PY' | tee -a "$OUT/results.txt"
import collections, glob, json, os, re, sys
scenario, queries, d, t0, t1 = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
ids = [q["query_id"] for q in json.load(open(queries))]
files = collections.defaultdict(list)
for f in glob.glob(os.path.join(d, "answers", "*.json")):
    m = re.match(r"^(.*)_(DFS_woFilter_w\d+|CoT@\d+)\.json$", os.path.basename(f))
    if m:
        files[m.group(1)].append(f)
answered = failed = lost = sim_marked = 0
times = []
for i in ids:
    fs = files.get(i, [])
    if not fs:
        lost += 1
        continue
    a = json.load(open(fs[0]))
    times.append(os.path.getmtime(fs[0]))
    sim_marked += a.get("engine") == "sim"
    if "failure" in a:
        failed += 1
    else:
        answered += 1
log = open(os.path.join(d, "coordinator.log"), errors="replace").read()
# Solved (not failed or cancelled) more than once: work done twice.
ends = collections.Counter(t for t, state in re.findall(r'task ended task_id=(\S+) state=(\w+)', log)
                           if state in ("answered", "gave_up", "exhausted"))
dup = sum(1 for n in ends.values() if n > 1) + sum(1 for fs in files.values() if len(fs) > 1)
times.sort()
# The longest wait between two answers: how long the fault held the cluster up.
stall = max((b - a for a, b in zip(times, times[1:])), default=0.0)
print(f"{scenario}: tasks {len(ids)} answered {answered} failed {failed} lost {lost} duplicated {dup} "
      f"seconds {t1 - t0:.0f} longest-stall {stall:.1f} marked-sim {sim_marked}")
PY
done
awk '{ t += $3; a += $5; f += $7; lo += $9; d += $11 }
  END { printf "tasks %d answered %d failed %d lost %d duplicated %d\n", t, a, f, lo, d }' "$OUT/results.txt"
