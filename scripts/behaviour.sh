#!/usr/bin/env bash
# Runs a fixed set of seeded jobs with one `compress` binary and keeps every output, so two
# builds can be compared (scripts/same_behaviour.sh does both and diffs them):
#   scripts/behaviour.sh BINARY OUT_DIR
# Covers each method on models/lenet5 (plus budgets, SGD, schedules, distillation, the L0
# penalty and residual gates), l0-hc and dep-l0 on models/resnet20 for a few steps, random keep
# plans on every fixture model, and a convert. Latency is skipped: it is a timing, not behaviour.
set -euo pipefail
bin=$(realpath "$1")
out=$2
cd "$(dirname "$0")/.."
mkdir -p "$out"
run() { # name, args...
  local name=$1
  shift
  # --data given as a relative path: the default is the building tree's absolute path.
  "$bin" run "$@" --data fixtures/data/fashion-mnist-subset --seed 3 --latency-runs 0 --quiet \
    --force -o "$out/$name.onnx" \
    || echo "exit $? for $name" >"$out/$name.failed"
}
l5=models/lenet5/model.onnx
fast=(--epochs 2 --max-steps 14 --batch-size 64)
for m in l0-hc l0-arm l0-ar dep-l0 swp; do
  run "lenet5-$m" "$l5" --method "$m" "${fast[@]}"
done
run lenet5-dep-backward "$l5" --method dep-l0 --dep-chain backward --dep-n0 16 "${fast[@]}"
run lenet5-hc-budget-sgd "$l5" --method l0-hc --target-macs 0.5 --optimizer sgd --nesterov \
  --schedule cosine --distill-weight 1 "${fast[@]}"
run lenet5-arm-l0pen "$l5" --method l0-arm --penalty l0 --lambda 0.5 --round-to 4 "${fast[@]}"
run lenet300-hc models/lenet300/model.onnx --method l0-hc --augment "${fast[@]}"
run resnet20-hc models/resnet20/model.onnx --method l0-hc --epochs 1 --max-steps 3 \
  --batch-size 32 --gate-residual
run resnet20-dep models/resnet20/model.onnx --method dep-l0 --epochs 1 --max-steps 3 \
  --batch-size 32
for f in fixtures/models/*/ fixtures/patterns/*/; do
  name=$(basename "$f")
  "$bin" prune "$f/model.onnx" --random-keep 0.5 --seed 7 --latency-runs 0 --force \
    -o "$out/prune-$name.onnx" --report "$out/prune-$name.report.json" >/dev/null 2>"$out/prune-$name.err" \
    || echo "exit $?" >"$out/prune-$name.failed"
done
"$bin" convert models/resnet20/model.onnx -o "$out/convert-resnet20.onnx" --force >/dev/null
"$bin" inspect fixtures/models/densenet121/model.onnx --json >"$out/inspect-densenet121.json"
"$bin" inspect models/lenet5/model.onnx >"$out/inspect-lenet5.txt"
echo "outputs in $out"
