#!/usr/bin/env bash
# Installs the system packages the tests read (Debian), then runs the whole test suite.
#   - dataset-fashion-mnist: the full Fashion-MNIST set (accuracy checks against model cards)
#   - libonnx-testdata: ONNX operator conformance cases
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ -d /usr/share/libonnx-testdata/data/node ] || need+=(libonnx-testdata)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo test --release "$@"
