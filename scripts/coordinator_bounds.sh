#!/usr/bin/env bash
# What a coordinator holds after many tasks (#27 item 1): submits UMI_BOUNDS_TASKS
# (default 100,000) tasks through the coordinator's task table and journal with instant
# scripted roles and the defaults of `umi coordinator` (--max-ended 10000, compaction
# past 8 MiB and twice the live content), and prints the peak RSS, the journal's peak,
# end and live sizes, and how long a restart on the journal takes before it can listen.
# CI runs the 600-task version (services/coordinator/tests/bounds.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release -p umi-coordinator --test bounds -- --ignored --nocapture measure_a_hundred_thousand_tasks
