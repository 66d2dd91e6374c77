#!/usr/bin/env bash
# Makes a Python venv with CPU PyTorch for the PyTorch side of `cargo bench --bench train_speed`
# (and for scripts/conv_grad_reference.py). CI does not need it.
# Usage: scripts/setup-torch-venv.sh [DIR]   (default .torch-venv), then
#        COMPRESS_TORCH_PYTHON=DIR/bin/python cargo bench --bench train_speed
set -euo pipefail
dir="${1:-.torch-venv}"
python3 -m venv "$dir"
"$dir/bin/pip" install --upgrade pip
"$dir/bin/pip" install --index-url https://download.pytorch.org/whl/cpu torch
"$dir/bin/python" -c 'import torch; print("torch", torch.__version__)'
