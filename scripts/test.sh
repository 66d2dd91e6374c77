#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite:
#   - Debian: dataset-fashion-mnist (accuracy checks against model cards),
#             libonnx-testdata (ONNX operator conformance), python3-venv
#   - PyPI (in a venv under the target dir): onnx and onnxruntime, which check every pruned
#     model the tests export (ONNX's checker with full_check, and ONNX Runtime's outputs)
# The tests run with the `ort` feature, so every export is also verified in ONNX Runtime from
# inside compress; the wheel's libonnxruntime is the library it loads (ORT_DYLIB_PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ -d /usr/share/libonnx-testdata/data/node ] || need+=(libonnx-testdata)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

target="${CARGO_TARGET_DIR:-target}"
venv="$target/check-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onnx==1.23.2 onnxruntime==1.31.1 numpy
fi

mkdir -p "$target"
exports="$(cd "$target" && pwd)/pruned-exports"
rm -rf "$exports"
ORT_DYLIB_PATH="$("$venv/bin/python" -c 'import glob, os, onnxruntime
print(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*"))[0])')"
export ORT_DYLIB_PATH
COMPRESS_EXPORT_DIR="$exports" cargo test --release --features ort "$@"
"$venv/bin/python" scripts/check_exports.py "$exports"
