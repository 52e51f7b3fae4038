#!/usr/bin/env bash
# Installs a CUDA compiler toolchain from PyPI wheels, without root and without a GPU, so a
# build machine can compile the `cuda` features it cannot run (issue #31):
#   nvidia-cuda-nvcc 13.2.86      nvcc, ptxas, fatbinary, nvlink
#   nvidia-nvvm 13.2.86           cicc (nvcc's device front end), libnvvm, libdevice
#   nvidia-cuda-crt 13.2.86       nvcc's crt/ headers
#   nvidia-cuda-runtime 13.2.86   the CUDA runtime headers (cuda_fp16.h, ...) and libcudart
#   nvidia-cuda-cccl 13.2.86      CUB, Thrust and libcu++ headers
# each pinned by version and sha256, into $MMC_TOOLS_DIR/cuda-13.2.86 (default
# ~/.cache/mmc), laid out as a CUDA toolkit root (bin/, include/, lib/). Idempotent.
#
# Why CUDA 13 and not 12: the CUDA 12 wheels (nvidia-cuda-nvcc-cu12, up to 12.9) ship
# ptxas and libnvvm but not the `nvcc` driver itself; CUDA 13's wheels ship it (split
# over the five packages above, which unpack into one toolkit tree).
# CUDA 13 compiles for compute capability 7.5 and up (Turing .. Blackwell), which covers
# the A10/L4/A100/H100/H200 nodes the Kubernetes GPU overlay targets. The driver on the GPU
# node must support CUDA 13 (R580 or newer).
#
# Prints the environment the builds need; use it as
#
#   eval "$(bash deploy/cuda-toolchain.sh)"
#   cargo build --release -p mmc-embed --features cuda
#
# candle's kernel build (cudaforge/nvcc) reads PATH, CUDA_ROOT and CUDA_COMPUTE_CAP
# (default here 90: H100/H200; "80" for A100, several as "80,90" where the crate supports
# it); cudarc reads `nvcc --version` for the API version and loads libcuda, cuBLAS and
# NVRTC at run time from the GPU node's driver and libraries (nothing links against them).
set -euo pipefail

say() { printf '\033[1m[cuda-toolchain]\033[0m %s\n' "$*" >&2; }

VERSION=13.2.86
root=${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/cuda-$VERSION
WHEELS=(
  "nvidia-cuda-nvcc nvidia_cuda_nvcc-$VERSION-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 7d3f56c8d705bad35bbba69eb0470d90856fd5d4dc48c6a6173aaf1e9f887cf5"
  "nvidia-cuda-runtime nvidia_cuda_runtime-$VERSION-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 3498247680dfddce31bad102af7e3e26fc795342a3cac64722bb0fa95e7f60f0"
  "nvidia-cuda-cccl nvidia_cuda_cccl-$VERSION-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 35da671cf0cecd3539da214a11bb8e7634366c9e950da9c5feecf6c490a65b20"
  "nvidia-cuda-crt nvidia_cuda_crt-$VERSION-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl e3ab08801bf9b1e6dc979275d25e816bb5000521b648e19c324d5eef0c79f1da"
  "nvidia-nvvm nvidia_nvvm-$VERSION-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl a9244f3209922d655612c11ebb4117ea1f80983cb2b215c9cccded127282cebc"
)

if [ "$(uname -m)" != x86_64 ]; then
  say "these wheels are for x86_64 Linux; on $(uname -m) install the CUDA toolkit from NVIDIA"
  exit 1
fi

if [ ! -x "$root/bin/nvcc" ] || [ ! -f "$root/.installed" ]; then
  say "installing CUDA $VERSION (nvcc, cicc, runtime headers, CCCL) into $root"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  for entry in "${WHEELS[@]}"; do
    read -r name file sha <<<"$entry"
    python3 -m pip download -q --no-deps --only-binary=:all: --dest "$work" "$name==$VERSION" >&2
    [ -f "$work/$file" ] || { say "pip did not fetch $file"; exit 1; }
    echo "$sha  $work/$file" | sha256sum -c --quiet - || { say "checksum mismatch for $file"; exit 1; }
    python3 -m zipfile -e "$work/$file" "$work/unpacked"
  done
  # The wheels put the toolkit under nvidia/cu13/ (CCCL's headers under include/cccl).
  rm -rf "$root"
  mkdir -p "$(dirname "$root")"
  mv "$work/unpacked/nvidia/cu13" "$root"
  chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
  # Linkers look for the unversioned name.
  ln -sf libcudart.so.13 "$root/lib/libcudart.so"
  [ -d "$root/lib64" ] || ln -s lib "$root/lib64"
  "$root/bin/nvcc" --version >&2
  touch "$root/.installed"
fi

cat <<EOF
export CUDA_ROOT="$root"
export CUDA_PATH="$root"
export CUDA_HOME="$root"
export CUDAToolkit_ROOT="$root"
export PATH="$root/bin:\$PATH"
export LIBRARY_PATH="$root/lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
EOF
