#!/usr/bin/env bash
# Runs the property tests over umi's parsers of untrusted text (model outputs, query,
# answer and static files, Python literals, the calculator and local tools, token files
# and authorization headers; the journals a crash may have cut: umi-durable's reader,
# the coordinator's task journal and ids, the evaluation's resume file) with CASES inputs each (default one
# million); CI runs the same tests with proptest's default 256.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${CASES:-1000000}
export PROPTEST_CASES=$CASES
for target in "umi-core fuzz" "umi-tools fuzz" "umi-rpc fuzz" \
  "umi-durable fuzz" "umi-coordinator fuzz" "umi-eval fuzz"; do
  set -- $target
  echo "== $1 --test $2 ($CASES cases per property)"
  /usr/bin/time -f "%e s" cargo test --release -q -p "$1" --test "$2"
done
