#!/usr/bin/env bash
# GPU check and training benchmark, for a machine with an NVIDIA GPU and no network: a prebuilt
# `compress` (built with `--features cuda,wgpu`, stripped, xz-compressed: see README "GPU"),
# this repository and PyTorch are all it needs.
#
#  1. `compress devices --json`: which of the requested devices this binary can use here.
#  2. The same short fine-tuning (LeNet-5, l0-hc) on the CPU and on each device; each device's
#     report is compared with the CPU's (losses, accuracies, kept gates, export verified).
#  3. Training images/s of LeNet-5, ResNet-20 and the resnet18 fixture at each batch size, on
#     each device and in PyTorch eager on the same GPU, round robin (every round visits each
#     model and engine once, starting one engine later each round). compress's step time is
#     (train time of WARMUP+STEPS steps - train time of WARMUP steps) / STEPS, as the train_speed
#     bench measures it; PyTorch times STEPS steps after WARMUP, synchronised.
#  Results: OUT/results.jsonl (one row per measurement), OUT/gpu-bench.json (rows, medians,
#  ratios to PyTorch) and OUT/gpu-bench.md (a table for BENCHMARKS.md).
#
# Usage: bash scripts/gpu-bench.sh [options]
#   --bin PATH            compress binary, or PATH.xz (unpacked into OUT)  [target/release/compress]
#   --python PATH         Python with PyTorch                                [python3]
#   --out DIR             results directory                                   [bench-results/gpu]
#   --devices LIST        compress devices to check and time                 [cuda,wgpu]
#   --models LIST         of lenet5, resnet20, resnet18                      [lenet5,resnet20,resnet18]
#   --batches LIST        batch sizes                                         [128,256]
#   --rounds N            round-robin rounds (medians over rounds)           [3]
#   --steps N / --warmup N  timed and untimed steps per measurement          [20 / 5]
#   --finetune-steps N    steps of the fine-tuning comparison                [40]
#   --method M            gate method of the compress runs                   [l0-hc]
#   --torch MODE          require | auto (skip PyTorch if not importable) | skip  [require]
#   --torch-device D      PyTorch's device                                    [cuda]
#   --skip-check / --skip-bench   leave out step 2 / step 3
#   --dry-run             print the commands instead of running them
# Exit status: 0 when every requested device is usable and matches the CPU, 1 otherwise, 2 on
# bad arguments. A CPU-only rehearsal (what CI runs): --devices cpu --torch auto
# --torch-device cpu --models lenet5,resnet18 --batches 16 --rounds 1 --steps 20 --warmup 2.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

bin="$repo/target/release/compress"
python=python3
out="$repo/bench-results/gpu"
devices=cuda,wgpu
models=lenet5,resnet20,resnet18
batches=128,256
rounds=3
steps=20
warmup=5
finetune_steps=40
method=l0-hc
torch_mode=require
torch_device=cuda
do_check=1
do_bench=1
dry=0

usage() {
  echo "gpu-bench: $1 (see the options at the top of scripts/gpu-bench.sh)" >&2
  exit 2
}
count() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || usage "$1 $2: expected a positive whole number"; }
while [ $# -gt 0 ]; do
  opt=$1
  case "$opt" in
    --skip-check) do_check=0; shift; continue ;;
    --skip-bench) do_bench=0; shift; continue ;;
    --dry-run) dry=1; shift; continue ;;
    -h | --help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
  [ $# -ge 2 ] || usage "$opt: needs a value"
  val=$2
  shift 2
  case "$opt" in
    --bin) bin=$val ;;
    --python) python=$val ;;
    --out) out=$val ;;
    --devices) devices=$val ;;
    --models) models=$val ;;
    --batches) batches=$val ;;
    --rounds) count "$opt" "$val"; rounds=$val ;;
    --steps) count "$opt" "$val"; steps=$val ;;
    --warmup) count "$opt" "$val"; warmup=$val ;;
    --finetune-steps) count "$opt" "$val"; finetune_steps=$val ;;
    --method) method=$val ;;
    --torch) [[ "$val" =~ ^(require|auto|skip)$ ]] || usage "--torch $val: expected require, auto or skip"; torch_mode=$val ;;
    --torch-device) torch_device=$val ;;
    *) usage "unknown option $opt" ;;
  esac
done
IFS=, read -r -a device_list <<<"$devices"
IFS=, read -r -a model_list <<<"$models"
IFS=, read -r -a batch_list <<<"$batches"
for d in "${device_list[@]}"; do
  [[ "$d" =~ ^(cpu|cuda|wgpu)$ ]] || usage "--devices: unknown device '$d' (cpu, cuda or wgpu)"
done
for m in "${model_list[@]}"; do
  [[ "$m" =~ ^(lenet5|resnet20|resnet18)$ ]] || usage "--models: unknown model '$m' (lenet5, resnet20 or resnet18)"
done
for b in "${batch_list[@]}"; do count --batches "$b"; done

helper() { "$python" "$repo/scripts/gpu_bench.py" "$@"; }
step() { # prints the command in a dry run, runs it otherwise
  if [ "$dry" = 1 ]; then
    { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3
  else
    "$@"
  fi
}
note() { echo "gpu-bench: $*" >&2; }
exec 3>&1 # a dry run prints every command here, whatever the command's own output is redirected to

mkdir -p "$out"
out="$(cd "$out" && pwd)"
if [[ "$bin" == *.xz ]]; then
  step sh -c "xz -dc '$bin' > '$out/compress' && chmod +x '$out/compress'"
  bin="$out/compress"
fi
[ "$dry" = 1 ] || [ -x "$bin" ] || usage "--bin $bin: not an executable"
results="$out/results.jsonl"
[ "$dry" = 1 ] || : >"$results"
status=0

# The NVIDIA driver's Vulkan ICD, for wgpu, where the loader does not find it by itself.
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
    /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then
      export VK_DRIVER_FILES="$icd"
      note "wgpu: using the Vulkan driver $icd"
      break
    fi
  done
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" # silences the Vulkan loader's warnings

# 1. Devices
usable=()
if [ "$dry" = 1 ]; then
  step "$bin" devices --json
  usable=("${device_list[@]}")
else
  "$bin" devices --json >"$out/devices.json"
  "$bin" devices
  for d in "${device_list[@]}"; do
    if "$python" -c 'import json, sys
d = {x["device"]: x for x in json.load(open(sys.argv[1]))["devices"]}[sys.argv[2]]
sys.exit(0 if d["usable"] else 1)' "$out/devices.json" "$d"; then
      usable+=("$d")
    else
      note "$d is not usable here (see above); left out"
      status=1
    fi
  done
fi

torch_ok=0
if [ "$torch_mode" != skip ]; then
  if [ "$dry" = 1 ] || "$python" -c 'import torch' 2>/dev/null; then
    torch_ok=1
  elif [ "$torch_mode" = require ]; then
    usage "--python $python cannot import torch (use --torch auto or skip to leave PyTorch out)"
  else
    note "PyTorch not importable with $python: PyTorch columns left out"
  fi
fi

# 2. The same short fine-tuning on the CPU and on each device
if [ "$do_check" = 1 ]; then
  ft=(run models/lenet5/model.onnx --method l0-hc --epochs 1 --max-steps "$finetune_steps"
    --batch-size 64 --seed 3 --latency-runs 0 --data "$repo/fixtures/data/fashion-mnist-subset"
    --quiet --force)
  mkdir -p "$out/finetune"
  (cd "$repo" && step "$bin" "${ft[@]}" --device cpu -o "$out/finetune/cpu.onnx" >>"$out/compress.log")
  for d in "${usable[@]}"; do
    (cd "$repo" && step "$bin" "${ft[@]}" --device "$d" -o "$out/finetune/$d.onnx" >>"$out/compress.log") || {
      note "fine-tuning on $d failed (exit $?)"
      status=1
      continue
    }
    if [ "$dry" = 1 ]; then
      step helper compare-finetune "$out/finetune/cpu.report.json" "$out/finetune/$d.report.json" --device "$d"
    elif helper compare-finetune "$out/finetune/cpu.report.json" \
      "$out/finetune/$d.report.json" --device "$d" >>"$results"; then
      note "fine-tuning on $d matches the CPU"
    else
      note "fine-tuning on $d differs from the CPU: see the finetune rows of $results"
      status=1
    fi
  done
fi

# 3. Training throughput, round robin
data_for() { # the dataset a model trains on
  case "$1" in
    resnet18) echo "$out/data/rgb32" ;;
    *) echo "$repo/fixtures/data/fashion-mnist-subset" ;;
  esac
}
onnx_for() {
  case "$1" in
    resnet18) echo "$repo/fixtures/models/resnet18/model.onnx" ;;
    *) echo "$repo/models/$1/model.onnx" ;;
  esac
}
measure() { # model batch engine round
  local model=$1 batch=$2 engine=$3 round=$4 tags
  tags=(--tag "model=$model" --tag "engine=$engine" --tag "round=$round")
  if [ "$engine" = torch ]; then
    step helper torch-step --model "$model" --batch "$batch" --steps "$steps" --warmup "$warmup" \
      --device "$torch_device" "${tags[@]}"
    return
  fi
  local dev=${engine#compress-} tmp="$out/tmp"
  mkdir -p "$tmp"
  local common=(run "$(onnx_for "$model")" --method "$method" --epochs 1 --batch-size "$batch"
    --val-fraction 0.01 --latency-runs 0 --data "$(data_for "$model")" --device "$dev" --quiet
    --force)
  step "$bin" "${common[@]}" --max-steps "$warmup" -o "$tmp/short.onnx" >>"$out/compress.log"
  step "$bin" "${common[@]}" --max-steps "$((warmup + steps))" -o "$tmp/long.onnx" >>"$out/compress.log"
  step helper step-time "$tmp/short.report.json" "$tmp/long.report.json" --steps "$steps" \
    --batch "$batch" "${tags[@]}"
}
if [ "$do_bench" = 1 ]; then
  max_batch=0
  for b in "${batch_list[@]}"; do [ "$b" -gt "$max_batch" ] && max_batch=$b; done
  # Both timed runs must stay in their first epoch (the second epoch adds a validation pass):
  # the shipped subset has 9,000 training images, 1% held out.
  if [ "$(((warmup + steps) * max_batch))" -gt 8910 ]; then
    usage "--warmup + --steps at batch $max_batch exceed one epoch of the 9,000-image subset"
  fi
  if [[ " ${model_list[*]} " == *" resnet18 "* ]] && [ ! -d "$out/data/rgb32" ]; then
    # The fixture takes 3x64x64: a synthetic RGB image folder (resized on load) stands in.
    step helper image-folder "$out/data/rgb32" --train "$(((warmup + steps + 2) * max_batch))" \
      --test 100 --size 32
  fi
  engines=()
  for d in "${usable[@]}"; do engines+=("compress-$d"); done
  [ "$torch_ok" = 1 ] && engines+=(torch)
  for ((r = 1; r <= rounds; r++)); do
    for m in "${model_list[@]}"; do
      for b in "${batch_list[@]}"; do
        n=${#engines[@]}
        for ((i = 0; i < n; i++)); do
          e=${engines[$(((i + r - 1) % n))]}
          note "round $r/$rounds: $m batch $b on $e"
          if [ "$dry" = 1 ]; then
            measure "$m" "$b" "$e" "$r"
          elif ! (cd "$repo" && measure "$m" "$b" "$e" "$r") >>"$results"; then
            note "$m batch $b on $e failed"
            status=1
          fi
        done
      done
    done
  done
fi

# 4. Result files
if [ "$dry" = 1 ]; then
  step helper summarize "$results" --json "$out/gpu-bench.json" --md "$out/gpu-bench.md"
  exit 0
fi
gpu_name=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version \
  --format=csv,noheader | head -1 || echo "none found")
"$python" - "$out/meta.json" "$bin" "$gpu_name" "$method" "$steps" "$warmup" "$rounds" <<'EOF'
import datetime, json, platform, sys
path, binary, gpu, method, steps, warmup, rounds = sys.argv[1:]
meta = {"benchmark": "gpu-bench", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(), "binary": binary, "gpu": gpu,
        "context": {"GPU": gpu, "compress method": method, "timed steps": steps,
                    "warm-up steps": warmup, "rounds": rounds},
        "devices": json.load(open(path.replace("meta.json", "devices.json")))}
json.dump(meta, open(path, "w"))
EOF
helper summarize "$results" --json "$out/gpu-bench.json" --md "$out/gpu-bench.md" --meta "$out/meta.json"
cat "$out/gpu-bench.md"
exit "$status"
