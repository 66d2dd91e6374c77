"""Writes fixtures/external/dynamo_classifier/: a small conv-BN-ReLU classifier exported by
PyTorch's dynamo exporter with its weights in a side file, as that exporter writes by default.

`torch.onnx.export(model, (x,), "model.onnx", dynamo=True, external_data=True)` (torch 2.15)
writes `model.onnx` plus `model.onnx.data` beside it. The exporter decides per tensor: the
larger weights go to the side file, small ones (biases, shape constants) stay inline, so the
fixture has both kinds. Unlike the TorchScript exporter it folds eval-mode BatchNorm into the
conv weights, writes opset 20 / IR 10, reads ReduceMean's axes from an input, and sets
Reshape's `allowzero=1`. The batch axis is symbolic (`dynamic_shapes`).

Random weights and BN statistics, fixed seed. `test_data_set_0` holds a 2x3x32x32 input and the
PyTorch output; onnxruntime, run from the file's path, must reproduce it to 1e-4.

Usage (from the repository root): /work/torch-venv/bin/python converters/export_dynamo_external.py
"""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
from common import ort_session, setup_threads, write_test_data  # noqa: E402

NAME = "dynamo_classifier"
SIDE_FILE = "model.onnx.data"


def conv_bn_relu(c1, c2, stride=1):
    return nn.Sequential(
        nn.Conv2d(c1, c2, 3, stride, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU()
    )


class Block(nn.Module):
    """Two conv-BN-ReLU with a residual add, so the classifier has a coupled channel group."""

    def __init__(self, c):
        super().__init__()
        self.a = conv_bn_relu(c, c)
        self.b = conv_bn_relu(c, c)

    def forward(self, x):
        return x + self.b(self.a(x))


class Classifier(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 16),
            conv_bn_relu(16, 32, stride=2),
            Block(32),
            nn.MaxPool2d(2),
            conv_bn_relu(32, 48),
        )
        self.head = nn.Linear(48, classes)

    def forward(self, x):
        x = self.features(x)
        return self.head(torch.flatten(torch.mean(x, dim=(2, 3)), 1))


def randomize_bn(model, gen):
    """Non-trivial BN statistics, so the folded weights differ from the raw ones."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=gen)
            m.bias.data = 0.2 * torch.randn(n, generator=gen)
            m.running_mean = 0.1 * torch.randn(n, generator=gen)
            m.running_var = 0.5 + torch.rand(n, generator=gen)


def main():
    setup_threads()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Classifier()
    randomize_bn(model, gen)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        y = model(x).numpy()

    out = os.path.join("fixtures", "external", NAME)
    os.makedirs(out, exist_ok=True)
    for stale in ("model.onnx", SIDE_FILE):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    path = os.path.join(out, "model.onnx")
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model,
        (x,),
        path,
        dynamo=True,
        external_data=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: batch}},
    )
    assert sorted(os.listdir(out))[:2] == ["model.onnx", SIDE_FILE], os.listdir(out)
    onnx.checker.check_model(path, full_check=True)
    write_test_data(out, x.numpy(), y)

    stored = onnx.load(path, load_external_data=False)
    external = [t.name for t in stored.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    inline = [t.name for t in stored.graph.initializer
              if t.data_location != onnx.TensorProto.EXTERNAL]
    assert external, "the exporter wrote no external data"
    sess = ort_session(path)
    got = sess.run(["logits"], {"input": x.numpy()})[0]
    diff = float(np.abs(got - y).max())
    assert diff < 1e-4, diff
    opset = next(o.version for o in stored.opset_import if o.domain in ("", "ai.onnx"))
    ops = sorted({n.op_type for n in stored.graph.node})
    print(f"IR {stored.ir_version}, opset {opset}, ops {ops}")
    print(f"{len(external)} external, {len(inline)} inline initializers")
    print(f"onnxruntime vs PyTorch: max abs diff {diff:.2e}")
    sizes = {f: os.path.getsize(os.path.join(out, f)) for f in ("model.onnx", SIDE_FILE)}
    print(f"wrote {out}: {sizes}")


if __name__ == "__main__":
    main()
