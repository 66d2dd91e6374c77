"""Writes fixtures/detectors/<name>/: detector, segmentation and OCR graphs as real exporters
write them, with random weights (fixed seed) and dynamic height and width.

- `yolo`: an Ultralytics-style detector (Conv-BN-SiLU, C2f blocks with Split and Concat, SPPF
  with a MaxPool chain, nearest x2 Resize FPN, decoupled box/class heads, DFL with
  Reshape/Transpose/Softmax, three output scales concatenated into one `[b, 4+nc, anchors]`
  output). The anchor-grid decoding is left out: it is computed from the input's shape, which
  an import at a given size folds into constants.
- `yolo_decode`: the same detector (narrower) with Ultralytics' anchor decoding: anchors and
  strides made from each scale's shape (Shape, Range, ConstantOfShape, Expand, Cast), boxes as
  centre/size times stride. An import at one size folds the anchors, so exports of it carry
  that fixed size.
- `unet`: a U-Net (double Conv-BN-ReLU, MaxPool down, ConvTranspose up, skip concats).
- `ocr`: a PaddleOCR DB-style text detector as paddle2onnx writes it: every weight a Constant
  node (no initializers), HardSwish, squeeze-excitation (GlobalAveragePool, 1x1 convs,
  HardSigmoid, Mul), a channel LayerNorm written out as ReduceMean/Sub/Pow/Add/Sqrt/Div, a
  nearest Resize FPN, and a ConvTranspose head.

All three are exported with the TorchScript exporter (dynamo=False), opset 17, input
`[batch, 3, height, width]`. Each directory gets `model.onnx` and two reference sets:
`test_data_set_0` (1x3x64x64) and `test_data_set_1` (1x3x96x128), with the PyTorch outputs
(ONNX Runtime must reproduce them to 1e-4).

Usage (from the repository root): /work/torch-venv/bin/python converters/export_detectors.py
"""
import inspect
import json
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from common import ort_session, setup_threads  # noqa: E402

OPSET = 17
SIZES = [(64, 64), (96, 128)]
OUT = os.path.join("fixtures", "detectors")


# ---------------------------------------------------------------- YOLO-style detector


class ConvBnSiLU(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1 = ConvBnSiLU(c, c, 3)
        self.cv2 = ConvBnSiLU(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """cv1 to 2c channels, split in halves, n bottlenecks on the last piece, concat all."""

    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = ConvBnSiLU(c1, 2 * self.c, 1)
        self.cv2 = ConvBnSiLU((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = ConvBnSiLU(c1, c_, 1)
        self.cv2 = ConvBnSiLU(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over reg_max bins, expectation by a fixed conv."""

    def __init__(self, c1=8):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b = x.shape[0]
        x = x.view(b, 4, self.c1, -1).transpose(2, 1).softmax(1)
        return self.conv(x).view(b, 4, -1)


class Detect(nn.Module):
    def __init__(self, nc, ch, reg_max=8):
        super().__init__()
        self.nc, self.reg_max = nc, reg_max
        self.no = nc + 4 * reg_max
        c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0] // 2, nc)
        self.cv2 = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(x, c2, 3), ConvBnSiLU(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
            for x in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(x, c3, 3), ConvBnSiLU(c3, c3, 3), nn.Conv2d(c3, nc, 1))
            for x in ch
        )
        self.dfl = DFL(reg_max)

    def forward(self, xs):
        b = xs[0].shape[0]
        outs = [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(xs)]
        cat = torch.cat([o.view(b, self.no, -1) for o in outs], 2)
        box, cls = cat.split((4 * self.reg_max, self.nc), 1)
        return torch.cat((self.dfl(box), cls.sigmoid()), 1)


def make_anchors(feats, strides, offset=0.5):
    """Anchor centres and strides of every cell of every scale, as Ultralytics computes them."""
    points, stride_list = [], []
    for i, stride in enumerate(strides):
        _, _, h, w = feats[i].shape
        sx = torch.arange(end=w, dtype=torch.float32) + offset
        sy = torch.arange(end=h, dtype=torch.float32) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), stride, dtype=torch.float32))
    return torch.cat(points).transpose(0, 1), torch.cat(stride_list).transpose(0, 1)


class DecodeDetect(Detect):
    """Detect with the box decoding: DFL distances around anchor centres, scaled by stride."""

    def forward(self, xs):
        b = xs[0].shape[0]
        outs = [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(xs)]
        anchors, strides = make_anchors(outs, [8, 16, 32])
        cat = torch.cat([o.view(b, self.no, -1) for o in outs], 2)
        box, cls = cat.split((4 * self.reg_max, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1 = anchors.unsqueeze(0) - lt
        x2y2 = anchors.unsqueeze(0) + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class Yolo(nn.Module):
    def __init__(self, nc=8, w=(16, 24, 32, 48), decode=False):
        super().__init__()
        self.stem = ConvBnSiLU(3, w[0], 3, 2)  # /2
        self.d1 = nn.Sequential(ConvBnSiLU(w[0], w[1], 3, 2), C2f(w[1], w[1], 1))  # /4
        self.d2 = nn.Sequential(ConvBnSiLU(w[1], w[2], 3, 2), C2f(w[2], w[2], 1))  # /8 P3
        self.d3 = nn.Sequential(ConvBnSiLU(w[2], w[3], 3, 2), C2f(w[3], w[3], 1))  # /16 P4
        self.d4 = nn.Sequential(ConvBnSiLU(w[3], w[3], 3, 2), C2f(w[3], w[3], 1), SPPF(w[3], w[3]))  # /32 P5
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h1 = C2f(w[3] + w[3], w[3], 1, shortcut=False)  # P4'
        self.h2 = C2f(w[3] + w[2], w[2], 1, shortcut=False)  # P3 out
        self.dn1 = ConvBnSiLU(w[2], w[2], 3, 2)
        self.h3 = C2f(w[2] + w[3], w[3], 1, shortcut=False)  # P4 out
        self.dn2 = ConvBnSiLU(w[3], w[3], 3, 2)
        self.h4 = C2f(w[3] + w[3], w[3], 1, shortcut=False)  # P5 out
        self.detect = (DecodeDetect if decode else Detect)(nc, (w[2], w[3], w[3]))

    def forward(self, x):
        p3 = self.d2(self.d1(self.stem(x)))
        p4 = self.d3(p3)
        p5 = self.d4(p4)
        t4 = self.h1(torch.cat((self.up(p5), p4), 1))
        o3 = self.h2(torch.cat((self.up(t4), p3), 1))
        o4 = self.h3(torch.cat((self.dn1(o3), t4), 1))
        o5 = self.h4(torch.cat((self.dn2(o4), p5), 1))
        return self.detect([o3, o4, o5])


# ---------------------------------------------------------------- U-Net


def double_conv(c1, c2):
    return nn.Sequential(
        nn.Conv2d(c1, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.Conv2d(c2, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
    )


class UNet(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        w = [8, 16, 24, 32]
        self.e0 = double_conv(3, w[0])
        self.e1 = double_conv(w[0], w[1])
        self.e2 = double_conv(w[1], w[2])
        self.mid = double_conv(w[2], w[3])
        self.pool = nn.MaxPool2d(2)
        self.u2 = nn.ConvTranspose2d(w[3], w[2], 2, 2)
        self.d2 = double_conv(2 * w[2], w[2])
        self.u1 = nn.ConvTranspose2d(w[2], w[1], 2, 2)
        self.d1 = double_conv(2 * w[1], w[1])
        self.u0 = nn.ConvTranspose2d(w[1], w[0], 2, 2)
        self.d0 = double_conv(2 * w[0], w[0])
        self.head = nn.Conv2d(w[0], classes, 1)

    def forward(self, x):
        s0 = self.e0(x)
        s1 = self.e1(self.pool(s0))
        s2 = self.e2(self.pool(s1))
        m = self.mid(self.pool(s2))
        y = self.d2(torch.cat((self.u2(m), s2), 1))
        y = self.d1(torch.cat((self.u1(y), s1), 1))
        y = self.d0(torch.cat((self.u0(y), s0), 1))
        return self.head(y)


# ---------------------------------------------------------------- OCR (DB-style, paddle2onnx-like)


class ConvBnAct(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.Hardswish() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SE(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = torch.relu(self.fc1(self.pool(x)))
        # Paddle's hardsigmoid: slope 0.2, offset 0.5.
        s = torch.clamp(self.fc2(s) * 0.2 + 0.5, 0.0, 1.0)
        return x * s


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis, written out as paddle2onnx does."""

    def __init__(self, c, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, c, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        d = x - mean
        var = d.pow(2).mean(1, keepdim=True)
        return d / torch.sqrt(var + self.eps) * self.weight + self.bias


class MobileBlock(nn.Module):
    def __init__(self, c1, mid, c2, k, s, se):
        super().__init__()
        self.expand = ConvBnAct(c1, mid, 1)
        self.dw = ConvBnAct(mid, mid, k, s, groups=mid)
        self.se = SE(mid) if se else nn.Identity()
        self.project = ConvBnAct(mid, c2, 1, act=False)
        self.res = s == 1 and c1 == c2

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.res else y


class OcrDet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBnAct(3, 16, 3, 2)  # /2
        self.b1 = MobileBlock(16, 32, 16, 3, 2, True)  # /4 c2
        self.b2 = MobileBlock(16, 48, 24, 3, 2, False)  # /8 c3
        self.b3 = MobileBlock(24, 64, 24, 5, 1, True)
        self.b4 = MobileBlock(24, 72, 32, 5, 2, True)  # /16 c4
        self.ln = ChannelLayerNorm(32)
        self.in2 = nn.Conv2d(16, 32, 1, bias=False)
        self.in3 = nn.Conv2d(24, 32, 1, bias=False)
        self.in4 = nn.Conv2d(32, 32, 1, bias=False)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.p2 = nn.Conv2d(32, 8, 3, 1, 1, bias=False)
        self.p3 = nn.Conv2d(32, 8, 3, 1, 1, bias=False)
        self.p4 = nn.Conv2d(32, 8, 3, 1, 1, bias=False)
        self.head = nn.Sequential(
            nn.Conv2d(24, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.ConvTranspose2d(8, 8, 2, 2), nn.BatchNorm2d(8), nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 2, 2), nn.Sigmoid(),
        )

    def forward(self, x):
        c2 = self.b1(self.stem(x))
        c3 = self.b3(self.b2(c2))
        c4 = self.ln(self.b4(c3))
        i4 = self.in4(c4)
        i3 = self.in3(c3) + self.up(i4)
        i2 = self.in2(c2) + self.up(i3)
        f = torch.cat((self.p2(i2), self.up(self.p3(i3)), self.up(self.up(self.p4(i4)))), 1)
        return self.head(f)


# ---------------------------------------------------------------- export


def randomize(model, gen):
    """Random BN statistics and affine terms, nonzero biases: a trained-looking network."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 0.5 + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
            elif isinstance(m, ChannelLayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def export(model, path):
    model.eval()
    example = torch.zeros(1, 3, *SIZES[0])
    kwargs = dict(
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                      "output0": {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    torch.onnx.export(model, (example,), path, **kwargs)


def initializers_to_constants(path):
    """paddle2onnx writes every weight as a Constant node; do the same."""
    m = onnx.load(path)
    consts = [
        onnx.helper.make_node("Constant", [], [t.name], value=t, name=f"const_{i}")
        for i, t in enumerate(m.graph.initializer)
    ]
    nodes = list(m.graph.node)
    del m.graph.initializer[:]
    del m.graph.node[:]
    m.graph.node.extend(consts + nodes)
    onnx.save(m, path)


def write_tensor(path, arr, name):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(arr), name).SerializeToString())


def main():
    setup_threads()
    models = {
        "yolo": Yolo,
        "unet": UNet,
        "ocr": OcrDet,
        "yolo_decode": lambda: Yolo(w=(8, 16, 16, 24), decode=True),
    }
    summary = {}
    for i, (name, cls) in enumerate(models.items()):
        torch.manual_seed(100 + i)
        gen = torch.Generator().manual_seed(200 + i)
        model = cls()
        randomize(model, gen)
        model.eval()
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        export(model, path)
        if name == "ocr":
            initializers_to_constants(path)
        onnx.checker.check_model(onnx.load(path), full_check=True)
        sess = ort_session(path)
        worst = 0.0
        for k, (h, w) in enumerate(SIZES):
            x = torch.rand(1, 3, h, w, generator=gen)
            with torch.no_grad():
                y = model(x).numpy()
            got = sess.run(None, {"images": x.numpy()})[0]
            worst = max(worst, float(np.abs(got - y).max()))
            sd = os.path.join(d, f"test_data_set_{k}")
            os.makedirs(sd, exist_ok=True)
            write_tensor(os.path.join(sd, "input_0.pb"), x.numpy(), "images")
            write_tensor(os.path.join(sd, "output_0.pb"), y, "output0")
        assert worst < 1e-4, (name, worst)
        m = onnx.load(path)
        summary[name] = {
            "ops": sorted({n.op_type for n in m.graph.node}),
            "bytes": os.path.getsize(path),
            "params": int(sum(p.numel() for p in model.parameters())),
            "ort_vs_torch": worst,
        }
    summary["exporter"] = "torch.onnx.export(dynamo=False) torch " + torch.__version__
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
