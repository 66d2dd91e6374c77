#!/usr/bin/env python3
"""Export tiny hand-built PyTorch models, one per channel-dependency pattern, to ONNX.

Usage: OMP_WAIT_POLICY=passive /work/venv/bin/python converters/export_patterns.py [--out fixtures/patterns]

Each pattern: random weights (torch.manual_seed(0) before building), eval mode, BatchNorm
layers made non-trivial (random gamma/beta/running_mean, positive random running_var).
Exported with the TorchScript exporter (dynamo=False), opset 17, constant folding on,
dynamic batch dim on every input/output, and training=PRESERVE so that the exporter's
eval-mode peephole pass does not fuse Conv+BN (BatchNormalization nodes stay in the graph,
as in converters/export_fixtures.py).

Writes <out>/<name>/model.onnx and <out>/<name>/test_data_set_0/{input_K,output_K}.pb
(batch-2 random normal inputs; PyTorch's outputs).  Every exported model is checked with
onnx.checker, its op types are checked against ALLOWED_OPS (the script fails loudly
otherwise) and it is run with onnxruntime and compared with PyTorch (max abs diff < 1e-4).

Workaround: for concat_cascade the exporter flattens the nested torch.cat calls into a single
Concat(a, b, c, a); restore_concat_cascade() splits it back into three cascaded Concat nodes
(the rewritten graph is what gets verified against PyTorch).
"""
import argparse
import collections
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from onnx import numpy_helper  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 0
OPSET = 17
TOL = 1e-4

ALLOWED_OPS = {
    "Conv", "BatchNormalization", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu",
    "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softmax",
    "LogSoftmax", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten",
    "Reshape", "Transpose", "Concat", "Pad", "Dropout", "Identity",
    # shape helpers
    "Constant", "Shape", "Gather", "Unsqueeze",
}


# ----------------------------------------------------------------------------- helpers

def cbr(cin, cout, k=3, stride=1, pad=None, groups=1, bias=False):
    """Conv-BN-ReLU."""
    if pad is None:
        pad = k // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=bias),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


def head(cin, ncls=10):
    """GlobalAveragePool -> Flatten -> Linear."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, ncls))


# ----------------------------------------------------------------------------- patterns

class ConvBnReluChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            cbr(3, 16), cbr(16, 24), nn.Conv2d(24, 8, 1), head(8, 10))

    def forward(self, x):
        return self.f(x)


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(3, 12, 3), nn.ReLU(), nn.MaxPool2d(2),  # 16 -> 14 -> 7
            nn.Flatten(), nn.Linear(12 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.f(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))
        else:
            self.down = None

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class ResidualIdentity(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.b1 = BasicBlock(16, 16)
        self.b2 = BasicBlock(16, 16)
        self.head = head(16, 10)

    def forward(self, x):
        return self.head(self.b2(self.b1(self.stem(x))))


class ResidualProjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.b1 = BasicBlock(16, 16)
        self.b2 = BasicBlock(16, 32, stride=2)
        self.head = head(32, 10)

    def forward(self, x):
        return self.head(self.b2(self.b1(self.stem(x))))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU())
        self.a = nn.Conv2d(8, 6, 3, 1, 1)
        self.b = nn.Conv2d(8, 10, 1)
        self.post = nn.Sequential(nn.Conv2d(16, 12, 3, 1, 1), nn.ReLU())
        self.head = head(12, 10)

    def forward(self, x):
        s = self.shared(x)
        z = torch.cat([self.a(s), self.b(s)], 1)
        return self.head(self.post(z))


class ConcatSameTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1)
        self.relu = nn.ReLU()
        self.post = nn.Conv2d(16, 12, 3, 1, 1)
        self.head = head(12, 10)

    def forward(self, x):
        y = self.conv(x)
        z = self.relu(torch.cat([y, y], 1))
        return self.head(self.post(z))


class ConcatCascade(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, 1, 1)
        self.b = nn.Conv2d(3, 6, 3, 1, 1)
        self.c = nn.Conv2d(3, 5, 1)
        self.post = nn.Sequential(nn.Conv2d(19, 8, 3, 1, 1), nn.ReLU())
        self.head = head(8, 10)

    def forward(self, x):
        a, b, c = self.a(x), self.b(x), self.c(x)
        ab = torch.cat([a, b], 1)
        abc = torch.cat([ab, c], 1)
        z = torch.cat([abc, a], 1)
        return self.head(self.post(z))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            cbr(3, 16),
            cbr(16, 16, 3, groups=16),  # depthwise
            cbr(16, 24, 1),  # pointwise
            head(24, 10))

    def forward(self, x):
        return self.f(x)


class GroupedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 1, 1, groups=4), nn.ReLU(),
            nn.Conv2d(32, 8, 1), head(8, 10))

    def forward(self, x):
        return self.f(x)


class SingleChannelConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(8, 1, 3, 1, 1), nn.ReLU(),  # ONE output channel
            nn.Conv2d(1, 4, 3, 1, 1),  # ONE input channel, groups=1: NOT depthwise
            head(4, 10))

    def forward(self, x):
        return self.f(x)


class SqueezeExcitation(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1),
            nn.Sigmoid())
        self.post = nn.Sequential(nn.Conv2d(16, 8, 3, 1, 1), nn.ReLU())
        self.head = head(8, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x * self.se(x)
        return self.head(self.post(x))


class MultiIO(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, 1, 1)
        self.conv_b = nn.Conv2d(3, 8, 3, 1, 1)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(8, 12, 3, 1, 1)
        self.head1 = head(12, 10)
        self.head2 = head(8, 5)

    def forward(self, input_a, input_b):
        s = self.relu(self.conv_a(input_a) + self.conv_b(input_b))
        return self.head1(self.conv(s)), self.head2(s)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            nn.Flatten(), nn.Linear(1 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, x):
        return self.f(x)


def restore_concat_cascade(m):
    """The TorchScript exporter flattens cat([cat([cat([a, b]), c]), a]) into ONE
    Concat(a, b, c, a).  Split it back into the cascade the PyTorch model has:
    ab = Concat(a, b); abc = Concat(ab, c); out = Concat(abc, a)."""
    g = m.graph
    idx = [i for i, n in enumerate(g.node) if n.op_type == "Concat"]
    if len(idx) != 1:
        return m  # exporter kept the cascade (or changed): nothing to do
    i = idx[0]
    n = g.node[i]
    ins = list(n.input)
    if len(ins) != 4 or ins[0] != ins[3]:
        raise SystemExit(f"ERROR: concat_cascade: unexpected flattened Concat inputs {ins}")
    axis = onnx.helper.get_attribute_value(n.attribute[0])
    a, b, c = ins[:3]
    new = [
        onnx.helper.make_node("Concat", [a, b], ["/Concat_ab_output_0"], name="/Concat_ab",
                              axis=axis),
        onnx.helper.make_node("Concat", ["/Concat_ab_output_0", c], ["/Concat_abc_output_0"],
                              name="/Concat_abc", axis=axis),
        onnx.helper.make_node("Concat", ["/Concat_abc_output_0", a], list(n.output),
                              name=n.name or "/Concat", axis=axis),
    ]
    del g.node[i]
    for k, nn_ in enumerate(new):
        g.node.insert(i + k, nn_)
    return m


# name -> (constructor, input names + shapes (without batch), output names[, ONNX fix-up])
IMG = (3, 16, 16)
PATTERNS = collections.OrderedDict([
    ("conv_bn_relu_chain", (ConvBnReluChain, [("input", IMG)], ["logits"])),
    ("flatten_linear", (FlattenLinear, [("input", IMG)], ["logits"])),
    ("residual_identity", (ResidualIdentity, [("input", IMG)], ["logits"])),
    ("residual_projection", (ResidualProjection, [("input", IMG)], ["logits"])),
    ("concat", (Concat, [("input", IMG)], ["logits"])),
    ("concat_same_twice", (ConcatSameTwice, [("input", IMG)], ["logits"])),
    ("concat_cascade", (ConcatCascade, [("input", IMG)], ["logits"], restore_concat_cascade)),
    ("depthwise", (Depthwise, [("input", IMG)], ["logits"])),
    ("grouped_conv", (GroupedConv, [("input", IMG)], ["logits"])),
    ("single_channel_conv", (SingleChannelConv, [("input", IMG)], ["logits"])),
    ("squeeze_excitation", (SqueezeExcitation, [("input", IMG)], ["logits"])),
    ("multi_io", (MultiIO, [("input_a", IMG), ("input_b", IMG)], ["out1", "out2"])),
    ("mlp", (Mlp, [("input", (1, 8, 8))], ["logits"])),
])


# ----------------------------------------------------------------------------- export

def randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.3 * torch.randn(n))
                m.bias.copy_(0.2 * torch.randn(n))
                m.running_mean.copy_(0.3 * torch.randn(n))
                m.running_var.copy_(0.5 + torch.rand(n))  # in [0.5, 1.5)


def export_one(name, ctor, inputs, outputs, out_root, fixup=None):
    torch.manual_seed(SEED)
    model = ctor()
    randomize_bn(model)
    model.eval()

    d = os.path.join(out_root, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    path = os.path.join(d, "model.onnx")

    xs = tuple(torch.randn((2,) + tuple(shape)) for _, shape in inputs)
    with torch.no_grad():
        ys = model(*xs)
    if isinstance(ys, torch.Tensor):
        ys = (ys,)
    assert len(ys) == len(outputs), name

    in_names = [n for n, _ in inputs]
    dyn = {n: {0: "batch"} for n in in_names + outputs}
    torch.onnx.export(
        model, xs, path, dynamo=False, opset_version=OPSET, do_constant_folding=True,
        input_names=in_names, output_names=outputs, dynamic_axes=dyn,
        training=torch.onnx.TrainingMode.PRESERVE)

    m = onnx.load(path)
    if fixup is not None:
        m = fixup(m)
        onnx.save(m, path)
    onnx.checker.check_model(m, full_check=True)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    bad = sorted(set(ops) - ALLOWED_OPS)
    if bad:
        raise SystemExit(f"ERROR: {name}: unsupported op types {bad} in {path}")
    got_in = [i.name for i in m.graph.input]
    got_out = [o.name for o in m.graph.output]
    if got_in != in_names or got_out != outputs:
        raise SystemExit(f"ERROR: {name}: graph io {got_in}->{got_out}, expected "
                         f"{in_names}->{outputs}")

    for k, (n, x) in enumerate(zip(in_names, xs)):
        with open(os.path.join(d, "test_data_set_0", f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(x.numpy(), n).SerializeToString())
    for k, (n, y) in enumerate(zip(outputs, ys)):
        with open(os.path.join(d, "test_data_set_0", f"output_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(y.numpy(), n).SerializeToString())

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    res = sess.run(outputs, {n: x.numpy() for n, x in zip(in_names, xs)})
    diff = max(float(np.abs(r - y.numpy()).max()) for r, y in zip(res, ys))
    if not diff < TOL:
        raise SystemExit(f"ERROR: {name}: onnxruntime vs PyTorch max abs diff {diff:.3g}")

    nparams = sum(p.numel() for p in model.parameters())
    size = os.path.getsize(path)
    op_str = ", ".join(f"{k}x{v}" for k, v in sorted(ops.items()))
    print(f"{name:22s} params={nparams:6d} onnx={size:7d}B diff={diff:.1e}  ops: {op_str}")
    return ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "fixtures", "patterns"))
    ap.add_argument("--only", nargs="*", help="export only these patterns")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    for name, (ctor, inputs, outputs, *fixup) in PATTERNS.items():
        if args.only and name not in args.only:
            continue
        export_one(name, ctor, inputs, outputs, args.out, *fixup)
    print("all patterns exported and verified")


if __name__ == "__main__":
    sys.exit(main())
