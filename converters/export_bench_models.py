#!/usr/bin/env python3
"""Export full-size models for the speed benchmarks (too big to commit: ResNet-18 is 47 MB).

Usage: OMP_WAIT_POLICY=passive python converters/export_bench_models.py [--out bench-models]

Writes <out>/resnet18.onnx: torchvision.models.resnet18() (64/128/256/512 channels, 1000
classes, input [batch,3,224,224] with a dynamic batch), seeded random weights, exported the way
a user exports a trained model: torch.onnx.export in eval mode with its defaults (BatchNorm
folded into the convolutions by the exporter). `cargo bench --bench prune_speed` picks it up
from bench-models/ (or from COMPRESS_BENCH_RESNET18). Weights do not change latency, so random
ones are as good as trained ones here; the export is checked against PyTorch in ONNX Runtime.
"""
import argparse
import inspect
import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "bench-models"))
    args = ap.parse_args()
    common.setup_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "resnet18.onnx")
    kwargs = dict(input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=common.OPSET)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    torch.onnx.export(model, (x,), path, **kwargs)
    common.undedupe_initializers(path)
    with torch.no_grad():
        y = model(x).numpy()
    diff = float(np.abs(common.ort_run(common.ort_session(path), x.numpy()) - y).max())
    ops, opset = common.onnx_info(path)
    print(f"{path}: {os.path.getsize(path)} bytes, params {common.count_params(model)}, "
          f"MACs {common.count_macs(model, x)}, opset {opset}, ops {ops}, ORT vs PyTorch {diff:.2e}")
    assert diff < 1e-3, diff


if __name__ == "__main__":
    main()
