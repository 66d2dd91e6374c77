#!/usr/bin/env python3
"""Writes tests/data/conv_grad_torch.json: PyTorch's conv2d outputs and gradients for the
convolution shapes tests/conv_grad.rs checks (stem, 3x3, strided 1x1, uneven pads, dilated,
grouped, depthwise, 1-D), so that CI compares our training convolution against PyTorch without
torch installed. Run with a Python that has torch (scripts/setup-torch-venv.sh)."""
import json
import pathlib
import sys

import torch
import torch.nn.functional as F

# name, (n, c, h, w), (o, kh, kw), stride, pads (top, bottom, left, right), dilation, groups
CASES = [
    ("stem_1ch", (2, 1, 9, 9), (4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ("conv3x3", (2, 4, 6, 6), (5, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ("pointwise_strided", (2, 6, 6, 6), (4, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    ("uneven_pads_strided", (2, 3, 7, 6), (4, 3, 3), (2, 2), (0, 1, 1, 0), (1, 1), 1),
    ("dilated", (2, 2, 8, 8), (3, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
    ("grouped", (2, 4, 5, 5), (6, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
    ("depthwise", (2, 4, 6, 6), (4, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4),
    ("conv1d", (2, 3, 1, 10), (4, 1, 3), (1, 1), (0, 0, 1, 1), (1, 1), 1),
]


def flat(t):
    return [float(f"{v:.8g}") for v in t.detach().reshape(-1).tolist()]


def main(out):
    torch.manual_seed(0)
    cases = []
    for name, xs, (o, kh, kw), stride, (t, b, l, r), dilation, groups in CASES:
        x = torch.randn(*xs, dtype=torch.float64, requires_grad=True)
        w = torch.randn(o, xs[1] // groups, kh, kw, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(o, dtype=torch.float64, requires_grad=True)
        xp = F.pad(x, (l, r, t, b))
        y = F.conv2d(xp, w, bias, stride=stride, dilation=dilation, groups=groups)
        cot = torch.randn_like(y)
        (y * cot).sum().backward()
        cases.append({
            "name": name, "x_shape": list(xs), "w_shape": list(w.shape), "stride": list(stride),
            "pads": [t, b, l, r], "dilation": list(dilation), "groups": groups,
            "x": flat(x), "w": flat(w), "b": flat(bias), "cotangent": flat(cot),
            "y_shape": list(y.shape), "y": flat(y),
            "dx": flat(x.grad), "dw": flat(w.grad), "db": flat(bias.grad),
        })
    doc = {"generator": f"scripts/conv_grad_reference.py, torch {torch.__version__}, float64",
           "cases": cases}
    pathlib.Path(out).write_text(json.dumps(doc, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/conv_grad_torch.json")
