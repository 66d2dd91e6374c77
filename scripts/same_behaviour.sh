#!/usr/bin/env bash
# Shows that the working tree behaves exactly as an earlier revision: builds both (release,
# default features), runs scripts/behaviour.sh with each and compares the outputs
# (scripts/compare_behaviour.py): identical model bytes, identical reports apart from timings.
#   scripts/same_behaviour.sh BASE_REV [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: scripts/same_behaviour.sh BASE_REV [WORK_DIR]}
work=${2:-$(mktemp -d)}
target=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TARGET_DIR=$target
mkdir -p "$work"
if [ ! -x "$work/compress-base" ]; then
  git worktree add --detach "$work/base-tree" "$base" >/dev/null
  (cd "$work/base-tree" && cargo build --release --quiet)
  cp "$target/release/compress" "$work/compress-base"
  git worktree remove --force "$work/base-tree"
fi
cargo build --release --quiet
cp "$target/release/compress" "$work/compress-head"
rm -rf "$work/base-out" "$work/head-out"
bash scripts/behaviour.sh "$work/compress-base" "$work/base-out" >/dev/null
bash scripts/behaviour.sh "$work/compress-head" "$work/head-out" >/dev/null
python3 scripts/compare_behaviour.py "$work/base-out" "$work/head-out"
