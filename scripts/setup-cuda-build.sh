#!/usr/bin/env bash
# Makes `cargo build --release --features cuda` work without network access beyond the package
# registries.
#
# Why: burn's CUDA backend (cubecl-cuda) always depends on cubecl-llvm, whose build dependency
# tracel-llvm-bundler downloads an LLVM 23 archive from GitHub at build time. The bundler skips
# that download when its install prefix already holds the marker `.tracel-llvm-installed`. The
# PyPI wheels mlc-llvm-static (static LLVM 23.1.1, headers, llvm-config) and
# mlc-llvm-static-extra-targets (adds NVPTX) carry an equivalent prefix, so this script installs
# them there. Idempotent: a prefix with the marker is left alone.
#
# Usage: bash scripts/setup-cuda-build.sh [--force]
#   --force   reinstall even when the marker is present
# Environment: XDG_DATA_HOME (default ~/.local/share) picks the prefix, as the bundler does;
#   PYTHON (default python3) is the interpreter whose pip downloads the wheels.
set -euo pipefail

bundle="tracel-llvm-23.1.0-4"
llvm_version="23.1.1.post0"
prefix="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/$bundle"
marker="$prefix/.tracel-llvm-installed"
python="${PYTHON:-python3}"
force=0

for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup-cuda-build: unknown argument '$arg' (only --force)" >&2
      exit 2
      ;;
  esac
done

if [[ -f "$marker" && "$force" == 0 ]]; then
  echo "setup-cuda-build: LLVM already installed at $prefix (marker present); nothing to do"
  echo "setup-cuda-build: build with: CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda"
  exit 0
fi

if ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "setup-cuda-build: '$python -m pip' is not available; install python3-pip (or set PYTHON)" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "setup-cuda-build: downloading mlc-llvm-static==$llvm_version and mlc-llvm-static-extra-targets==$llvm_version from PyPI"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --target "$tmp/wheels" \
  "mlc-llvm-static==$llvm_version" "mlc-llvm-static-extra-targets==$llvm_version"

src="$tmp/wheels/mlc_llvm_static/static"
if [[ ! -x "$src/bin/llvm-config" ]]; then
  echo "setup-cuda-build: the wheels did not contain mlc_llvm_static/static/bin/llvm-config" >&2
  exit 2
fi
# The bundler's build script runs llvm-config; a CUDA build needs the NVPTX target in it.
if ! "$src/bin/llvm-config" --targets-built | grep -qw NVPTX; then
  echo "setup-cuda-build: the installed LLVM lacks the NVPTX target (is mlc-llvm-static-extra-targets installed?)" >&2
  exit 2
fi

# Build the new prefix beside the final one and rename it, so an interrupted run never leaves
# a half-copied prefix behind.
mkdir -p "$(dirname "$prefix")"
staging="$prefix.partial.$$"
rm -rf "$staging"
cp -a "$src" "$staging"
touch "$staging/.tracel-llvm-installed"
rm -rf "$prefix"
mv "$staging" "$prefix"

echo "setup-cuda-build: installed LLVM $("$prefix/bin/llvm-config" --version) (targets: $("$prefix/bin/llvm-config" --targets-built)) at $prefix"
echo "setup-cuda-build: build with: CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda"
