#!/usr/bin/env bash
# Installs umi under a prefix, as a release archive would hold it:
#   PREFIX/bin/umi                      the binary (target/release/umi, or $UMI_BIN)
#   PREFIX/share/umi/models/            the bundled SmolLM2 model (scripts/setup.sh fetched it)
#   PREFIX/share/umi/data/              the query sets and test data
# The installed umi finds its model there from any directory ($UMI_HOME overrides).
#
#   scripts/install.sh [PREFIX]         # default: ~/.local
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:-$HOME/.local}
BIN=${UMI_BIN:-target/release/umi}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -x $BIN ]] || { echo "no $BIN: run scripts/setup.sh (or cargo build --release) first" >&2; exit 1; }
[[ -f $MODEL ]] || { echo "no $MODEL: run scripts/setup.sh first" >&2; exit 1; }
mkdir -p "$PREFIX/bin" "$PREFIX/share/umi/models" "$PREFIX/share/umi/data"
install -m 755 "$BIN" "$PREFIX/bin/umi.tmp" && mv "$PREFIX/bin/umi.tmp" "$PREFIX/bin/umi"
cp "$MODEL" "$PREFIX/share/umi/models/"
cp -r data/. "$PREFIX/share/umi/data/"
echo "installed $PREFIX/bin/umi (model and data in $PREFIX/share/umi)"
