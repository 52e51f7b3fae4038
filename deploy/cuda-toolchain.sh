#!/usr/bin/env bash
# Installs a CUDA compiler toolchain from PyPI wheels, without root and without a GPU, so a
# build machine can compile and link the `cuda` features it cannot run (issue #31):
#   nvidia-cuda-nvcc 13.0.88      nvcc, ptxas, fatbinary, nvlink
#   nvidia-nvvm 13.0.88           cicc (nvcc's device front end), libnvvm, libdevice
#   nvidia-cuda-crt 13.0.88       nvcc's crt/ headers
#   nvidia-cuda-runtime 13.0.96   the CUDA runtime headers (cuda_fp16.h, ...) and libcudart
#   nvidia-cuda-cccl 13.0.85      CUB, Thrust and libcu++ headers
#   nvidia-cuda-culibos 13.0.85   libculibos.a (whisper-rs-sys links it for CUDA builds)
# each pinned by version and sha256 (six wheels), into $MMC_TOOLS_DIR/cuda-13.0 (default ~/.cache/mmc),
# laid out as a CUDA toolkit root (bin/, include/, lib/). Idempotent.
#
# Why CUDA 13: the CUDA 12 wheels (nvidia-cuda-nvcc-cu12, up to 12.9) ship ptxas and
# libnvvm but not the `nvcc` driver itself; CUDA 13's wheels ship it (split over the five
# packages above, which unpack into one toolkit tree). CUDA 13 compiles for compute
# capability 7.5 and up (Turing .. Blackwell), which covers the A10/L4/A100/H100/H200 nodes
# the Kubernetes GPU overlay targets.
# Why 13.0 and not a later 13.x: candle ships most of its kernels as PTX, which the GPU
# node's driver compiles when a service starts; a driver accepts PTX only from a toolkit no
# newer than itself (else CUDA_ERROR_UNSUPPORTED_PTX_VERSION). 13.0 is the toolkit of the
# R580 drivers, the oldest that runs CUDA 13, so the binaries run on any R580+ node.
#
# Link stubs: candle links its CUDA libraries at build time (cudarc's `dynamic-linking`:
# libcuda from the driver, NVRTC, cuRAND, cuBLAS, cuBLASLt), none of which a machine without
# a GPU has. With a cargo workspace at hand (run from the repository), this script also
# writes stub libraries into lib/stubs/ (where cudarc's build script looks): every function
# cudarc's bindings declare, with the real libraries' sonames (libcuda.so.1, libnvrtc.so.13,
# libcurand.so.10, libcublas.so.13, libcublasLt.so.13), as NVIDIA's own toolkit does for
# libcuda. A binary linked against them records those sonames and runs with the real
# libraries of the GPU node; started where they are missing, the dynamic loader stops it at
# once, naming the missing library (libcuda.so.1: the NVIDIA driver).
#
# `--cublas` adds cuBLAS's headers (from the nvidia-cublas wheel, pinned likewise; ~420 MB to
# download, of which only the headers are kept) and points lib/libcublas*.so at the stubs:
# whisper.cpp's CUDA backend (mmc-speech/cuda) compiles against cuBLAS through CMake's
# FindCUDAToolkit, which looks for both. candle needs neither.
#
# Prints the environment the builds need; use it as
#
#   eval "$(bash deploy/cuda-toolchain.sh)"
#   cargo build --release -p mmc-embed --features cuda
#
# candle's kernel build (cudaforge/nvcc) reads PATH, CUDA_ROOT and CUDA_COMPUTE_CAP
# (default here 90: H100/H200; "80" for A100, several as "80,90" where the crate supports
# it); cudarc reads `nvcc --version` for the API version.
set -euo pipefail

say() { printf '\033[1m[cuda-toolchain]\033[0m %s\n' "$*" >&2; }

VERSION=13.0
root=${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/cuda-$VERSION
# package version sha256 (the wheel's name follows from them)
WHEELS=(
  "nvidia-cuda-nvcc 13.0.88 manylinux2014_x86_64.manylinux_2_17_x86_64 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
  "nvidia-cuda-runtime 13.0.96 manylinux2014_x86_64.manylinux_2_17_x86_64 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cccl 13.0.85 manylinux2014_x86_64.manylinux_2_17_x86_64 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
  "nvidia-cuda-crt 13.0.88 manylinux2014_x86_64.manylinux_2_17_x86_64 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
  "nvidia-nvvm 13.0.88 manylinux2010_x86_64.manylinux_2_12_x86_64 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
  "nvidia-cuda-culibos 13.0.85 manylinux2014_x86_64.manylinux_2_17_x86_64 5c178858405f485367175e14f8a7536af6c86c5c428d25301f2218406c316ba0"
)

CUBLAS="nvidia-cublas 13.0.2.14 manylinux_2_27_x86_64 0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c"
with_cublas=0
[ "${1:-}" = --cublas ] && with_cublas=1

# Fetches wheel "package version platform sha256" into directory $2 and checks it; prints its path.
fetch_wheel() {
  local name version platform sha file
  read -r name version platform sha <<<"$1"
  file="$2/${name//-/_}-$version-py3-none-$platform.whl"
  python3 -m pip download -q --no-deps --only-binary=:all: --dest "$2" "$name==$version" >&2
  [ -f "$file" ] || { say "pip did not fetch $(basename "$file")"; exit 1; }
  echo "$sha  $file" | sha256sum -c --quiet - || { say "checksum mismatch for $(basename "$file")"; exit 1; }
  echo "$file"
}

if [ "$(uname -m)" != x86_64 ]; then
  say "these wheels are for x86_64 Linux; on $(uname -m) install the CUDA toolkit from NVIDIA"
  exit 1
fi

if [ ! -x "$root/bin/nvcc" ] || [ ! -f "$root/.installed" ] || [ ! -f "$root/lib/libculibos.a" ]; then
  say "installing CUDA $VERSION (nvcc, cicc, runtime headers, CCCL) into $root"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  for entry in "${WHEELS[@]}"; do
    python3 -m zipfile -e "$(fetch_wheel "$entry" "$work")" "$work/unpacked"
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

# Link stubs (see the top): generated from the cudarc version in Cargo.lock, once per version.
cudarc_dir=
if [ -f Cargo.lock ]; then
  cudarc_version=$(sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
  if [ -n "$cudarc_version" ]; then
    find_cudarc() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$cudarc_version" 2>/dev/null | head -1; }
    cudarc_dir=$(find_cudarc)
    [ -n "$cudarc_dir" ] || { cargo fetch --locked >&2 && cudarc_dir=$(find_cudarc); }
  fi
fi
if [ -n "$cudarc_dir" ]; then
  stubs="$root/lib/stubs"
  stamp="$stubs/.from-$(basename "$cudarc_dir")"
  if [ ! -f "$stamp" ]; then
    say "writing link stubs for $(basename "$cudarc_dir") into $stubs"
    rm -rf "$stubs" && mkdir -p "$stubs"
    # module of cudarc's bindings, library name, soname
    for lib in "driver cuda libcuda.so.1" "nvrtc nvrtc libnvrtc.so.13" "curand curand libcurand.so.10" \
               "cublas cublas libcublas.so.13" "cublaslt cublasLt libcublasLt.so.13"; do
      read -r module name soname <<<"$lib"
      # Only the names matter to the linker: `pub unsafe fn cuInit(` -> `void cuInit(void) {}`.
      sed -n 's/^pub unsafe fn \([A-Za-z0-9_]*\)(.*/void \1(void) {}/p' "$cudarc_dir/src/$module/sys/mod.rs" \
        | sort -u > "$stubs/$name.c"
      [ -s "$stubs/$name.c" ] || { say "no functions found in cudarc's $module bindings"; exit 1; }
      cc -shared -fPIC -o "$stubs/lib$name.so" -Wl,-soname,"$soname" "$stubs/$name.c"
      rm "$stubs/$name.c"
    done
    touch "$stamp"
  fi
else
  say "no cargo workspace with cudarc here: link stubs not written (cargo check needs none)"
fi

if [ "$with_cublas" = 1 ] && [ ! -f "$root/include/cublas_v2.h" ]; then
  say "adding cuBLAS's headers to $root"
  cublas_work=$(mktemp -d)
  python3 - "$(fetch_wheel "$CUBLAS" "$cublas_work")" "$root/include" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("nvidia/cu13/include/") and name.endswith(".h"):
            with open(os.path.join(sys.argv[2], os.path.basename(name)), "wb") as out:
                out.write(z.read(name))
PY
  rm -rf "$cublas_work"
fi
if [ "$with_cublas" = 1 ]; then
  [ -f "$root/lib/stubs/libcublas.so" ] || { say "--cublas needs the link stubs (run it from the repository)"; exit 1; }
  ln -sf stubs/libcublas.so "$root/lib/libcublas.so"
  ln -sf stubs/libcublasLt.so "$root/lib/libcublasLt.so"
fi

cat <<EOF
export CUDA_ROOT="$root"
export CUDA_PATH="$root"
export CUDA_HOME="$root"
export CUDAToolkit_ROOT="$root"
export PATH="$root/bin:\$PATH"
export LIBRARY_PATH="$root/lib:$root/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
EOF
