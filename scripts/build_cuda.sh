#!/usr/bin/env bash
# Builds umi with the `cuda` feature into target/cuda/release/umi.
#
# With a CUDA toolkit installed (nvcc on PATH, or CUDA_HOME set), this is just
#   CUDA_COMPUTE_CAP=90 cargo build --release --features cuda
# Without one (a CPU build host, a plain rust image), it first puts NVIDIA's CUDA 13.0
# compiler, headers and libraries, from their PyPI wheels, under target/cuda-toolkit, and
# links against a generated stand-in for the driver library libcuda.so.1: the real one
# is the GPU machine's, loaded when the binary starts there. The binary then needs
# CUDA 13 libraries where it runs (libcudart.so.13, libcublas.so.13, libcurand.so.10, as
# in /usr/local/cuda/lib64 of a CUDA 13 image) and a driver of the 580 series or newer.
#
#   scripts/build_cuda.sh              # compute capability 90 (H100, H200)
#   CUDA_COMPUTE_CAP=80 scripts/build_cuda.sh   # A100
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
TOOLKIT=${CUDA_TOOLKIT_DIR:-$PWD/target/cuda-toolkit}
CUDA_WHEELS=(
  "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" "nvidia-cuda-nvrtc==13.0.88"
  "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35"
)

if ! command -v nvcc >/dev/null && [ -z "${CUDA_HOME:-}" ]; then
  root=$TOOLKIT/nvidia/cu13
  if [ ! -x "$root/bin/nvcc" ]; then
    echo "==> CUDA 13.0 toolkit from PyPI wheels into $TOOLKIT"
    mkdir -p "$TOOLKIT/wheels"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 \
      -d "$TOOLKIT/wheels" "${CUDA_WHEELS[@]}"
    for wheel in "$TOOLKIT"/wheels/*.whl; do
      python3 -m zipfile -e "$wheel" "$TOOLKIT"
    done
    chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
    # The linker looks for unversioned names; the wheels ship only the versioned ones.
    for lib in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
      ln -sf "lib$lib" "$root/lib/lib${lib%%.so*}.so"
    done
    # Every driver entry point cuda.h declares, under the names the binary will ask
    # libcuda.so.1 for at run time (cuda.h maps most to versioned names, e.g. _v2).
    mkdir -p "$root/lib/stubs"
    { grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' "$root/include/cuda.h"
      gcc -E -I "$root/include" "$root/include/cuda.h" | grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\s*\('
    } | tr -d ' (' | sort -u | awk '{print "int " $1 "(void) { return 999; }"}' \
      >"$root/lib/stubs/libcuda.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 "$root/lib/stubs/libcuda.c" \
      -o "$root/lib/stubs/libcuda.so"
  fi
  export CUDA_HOME=$root PATH=$root/bin:$PATH
fi

echo "==> cargo build --release --features cuda (compute capability $CUDA_COMPUTE_CAP)"
cargo build --release --features cuda --bin umi --target-dir target/cuda
echo "built target/cuda/release/umi"

# The engine's CUDA test (batched decode equals each request alone), for bench_cuda.sh's
# HF_TEST_BIN: built here, run on the GPU machine.
echo "==> the engine's CUDA test binary"
cargo test --release -p umi-engine --features cuda --test hf_checkpoints --no-run \
  --target-dir target/cuda
test_bin=$(ls -t target/cuda/release/deps/hf_checkpoints-* | grep -v '\.d$' | head -1)
cp "$test_bin" target/cuda/release/hf_checkpoints
echo "built target/cuda/release/hf_checkpoints"
