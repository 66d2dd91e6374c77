#!/usr/bin/env python3
"""Train LeNet-300-100, LeNet-5-Caffe and ResNet-20 on Fashion-MNIST and export them to ONNX.

Usage:
  OMP_WAIT_POLICY=passive python converters/train_fashion.py [DATA_DIR] \
      [--models lenet300,lenet5,resnet20] [--epochs lenet300=8,lenet5=8,resnet20=10] [--out models]

DATA_DIR (default /usr/share/datasets/fashion-mnist) must hold the four standard IDX
gzip files (train-images-idx3-ubyte.gz, ...).  Input preprocessing: pixels / 255.0 as
float32 in [0, 1], shape N x 1 x 28 x 28, no mean/std normalisation.

Per model it writes models/<name>/{model.onnx, test_data_set_0/{input_0,output_0}.pb,
README.md, card.json}.  Training is CPU-only, seeded and deterministic
(torch.use_deterministic_algorithms(True), fixed shuffling generator, 2 threads).
"""
import argparse
import gzip
import json
import os
import random
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 0
BATCH = 128
LR = 1e-3
DEFAULT_EPOCHS = {"lenet300": 8, "lenet5": 8, "resnet20": 10}


# ----------------------------------------------------------------------------- data
def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    assert magic >> 8 == 0x08, hex(magic)
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(root, prefix):
    x = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy((x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28))
    y = torch.from_numpy(y.astype(np.int64))
    return x, y


# ----------------------------------------------------------------------------- models
class LeNet300(nn.Module):
    """LeNet-300-100 MLP."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x):
        x = self.flatten(x)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5-Caffe: 20-50-800-500 (430,500 weights without biases)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            # projection shortcut (option B): 1x1 conv + BN
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + sc)


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (3x3 BasicBlocks, widths 16/32/64), 1 input channel."""

    def __init__(self, in_ch=1, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for width, stride in [(16, 1), (32, 2), (64, 2)]:
            blocks = []
            for i in range(3):
                blocks.append(BasicBlock(cin, width, stride if i == 0 else 1))
                cin = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


MODELS = {"lenet300": LeNet300, "lenet5": LeNet5, "resnet20": ResNet20}
DESCRIPTIONS = {
    "lenet300": "LeNet-300-100 MLP: Flatten -> Linear(784,300) -> ReLU -> Linear(300,100) -> ReLU -> Linear(100,10).",
    "lenet5": "LeNet-5-Caffe: Conv(1,20,5) -> ReLU -> MaxPool2 -> Conv(20,50,5) -> ReLU -> MaxPool2 -> "
              "Flatten -> Linear(800,500) -> ReLU -> Linear(500,10) (430,500 weights without biases).",
    "resnet20": "CIFAR-style ResNet-20 adapted to 1x28x28 input: conv3x3(1,16)-BN-ReLU stem, 3 stages x 3 "
                "BasicBlocks (conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU) with widths 16/32/64, stride 2 at "
                "the first block of stages 2 and 3 with 1x1 conv+BN projection shortcuts (identity shortcuts "
                "elsewhere), global average pool, Linear(64,10). Feature maps 28x28 -> 14x14 -> 7x7. "
                "Convs have no bias.",
}


# ----------------------------------------------------------------------------- train / eval
def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model, x, y, bs=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += int((model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum())
    return correct


def train(name, epochs, xtr, ytr, xte, yte, log):
    seed_all(SEED)
    model = MODELS[name]()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    n = len(xtr)
    t_total = time.time()
    for ep in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        tot_loss = 0.0
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            tot_loss += float(loss) * len(idx)
        dt = time.time() - t0
        c = evaluate(model, xte, yte)
        msg = f"[{name}] epoch {ep + 1}/{epochs} loss {tot_loss / n:.4f} test acc {c / len(xte):.4f} ({c}/{len(xte)}) {dt:.1f}s"
        print(msg, flush=True)
        log.append({"epoch": ep + 1, "loss": tot_loss / n, "correct": c, "seconds": round(dt, 1)})
    return model.eval(), time.time() - t_total


# ----------------------------------------------------------------------------- card
CARD_MD = """# {name} (Fashion-MNIST)

{desc}

## How it was made

- Script: `converters/train_fashion.py` (this repository), command:
  `OMP_WAIT_POLICY=passive python converters/train_fashion.py {data_arg} --models {name} --epochs {name}={epochs}`
  (the default invocation trains all three models with the same per-model settings).
- Versions: torch {torch}, torchvision {torchvision}, onnx {onnx}, onnxruntime {ort}, numpy {numpy}, Python {python}.
- CPU only, `torch.set_num_threads(2)`, `torch.use_deterministic_algorithms(True)`.
- Seed {seed} (`random`, `numpy`, `torch.manual_seed` before model construction; shuffling with a
  `torch.Generator` seeded {seed}). Default PyTorch initialisation{init_note}.
- Optimiser: Adam, lr {lr}, default betas (0.9, 0.999), no weight decay, no LR schedule; batch size {batch};
  {epochs} epochs over the full 60,000-image training set (reshuffled each epoch, last batch partial);
  loss: cross-entropy. No data augmentation.
- Training wall time: {train_s:.0f} s on a 2-core shared CPU.
- Exported in eval mode with {exporter}, opset {opset}, `do_constant_folding=True`,
  `training=TrainingMode.PRESERVE` (model in eval mode, so BatchNormalization nodes are inference-mode
  nodes and are *not* fused into the convolutions by the exporter), one dynamic batch dimension `batch`.
  Input `input` float32 [batch,1,28,28]; output `logits` float32 [batch,10] (raw logits, no softmax).

## Dataset and preprocessing

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), Debian package `dataset-fashion-mnist`,
`/usr/share/datasets/fashion-mnist/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz`.
Classes 0-9: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
Preprocessing: `pixels / 255.0` as float32 in [0, 1], layout N x 1 x 28 x 28 (NCHW).
**No mean/std normalisation.**

## Results

- Test accuracy (full 10,000-image Fashion-MNIST test set, computed by PyTorch in eval mode):
  **{acc:.4f}** ({correct}/10000 correct).
- Same test set through onnxruntime {ort} (CPUExecutionProvider) on `model.onnx`: {ort_correct}/10000 correct;
  max |onnxruntime - PyTorch| logit difference over the 10,000 test images: {ort_diff_all:.3g}.
- Per-epoch test accuracy: {epoch_log}

## Size

- Parameters: **{params:,}** = `sum(p.numel() for p in model.parameters())`, i.e. all weights and biases{bn_note}.
- MACs at batch 1: **{macs:,}**. Counted: convolutions as Cout*Hout*Wout*(Cin/groups)*kh*kw and linear
  layers as in*out. Nothing else is counted (no bias adds, BN, ReLU, pooling, residual adds).
- `model.onnx`: {onnx_bytes:,} bytes.

## ONNX graph

Opset {opset}. Op types used (from `onnx.load(...).graph.node`): {ops_list}.

## Test data

`test_data_set_0/input_0.pb`: TensorProto (name `input`) float32 [8,1,28,28] = the first 8 images of the
Fashion-MNIST test set (labels {labels8}), preprocessed as above. `test_data_set_0/output_0.pb`: TensorProto
(name `logits`) float32 [8,10] = PyTorch's output for them. Serialised with
`onnx.numpy_helper.from_array(...).SerializeToString()` (same layout as Debian's libonnx-testdata).
max |onnxruntime - PyTorch| on this batch: {ort_diff8:.3g}.
"""


def versions():
    import onnx
    import onnxruntime
    import platform
    import torchvision
    return dict(torch=torch.__version__, torchvision=torchvision.__version__, onnx=onnx.__version__,
                ort=onnxruntime.__version__, numpy=np.__version__, python=platform.python_version())


def export_and_card(name, model, epochs, train_s, log, xte, yte, data_arg, outroot):
    d = os.path.join(outroot, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    x8 = xte[:8].contiguous()
    exporter = common.export_onnx(model, x8, path)
    with torch.no_grad():
        y8 = model(x8).numpy()
    common.write_test_data(d, x8.numpy(), y8)

    correct = evaluate(model, xte, yte)
    sess = common.ort_session(path)
    diff8 = float(np.abs(common.ort_run(sess, x8.numpy()) - y8).max())
    ort_correct, diff_all = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(xte), 1000):
            xb = xte[i:i + 1000].numpy()
            o = common.ort_run(sess, xb)
            diff_all = max(diff_all, float(np.abs(o - model(xte[i:i + 1000]).numpy()).max()))
            ort_correct += int((o.argmax(1) == yte[i:i + 1000].numpy()).sum())

    ops, opset = common.onnx_info(path)
    params = common.count_params(model)
    macs = common.count_macs(model, x8)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    card = {"name": name, "accuracy": round(correct / len(xte), 4), "correct": correct,
            "test_samples": len(xte), "params": params, "macs": macs, "opset": opset, "ops": ops}
    common.write_card(d, card)
    v = versions()
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write(CARD_MD.format(
            name=name, desc=DESCRIPTIONS[name], data_arg=data_arg, epochs=epochs, seed=SEED, lr=LR,
            batch=BATCH, train_s=train_s, exporter=exporter, opset=opset, acc=correct / len(xte),
            correct=correct, ort_correct=ort_correct, ort_diff_all=diff_all, ort_diff8=diff8,
            epoch_log=", ".join(f"{e['epoch']}: {e['correct'] / len(xte):.4f}" for e in log),
            params=params, macs=macs, onnx_bytes=os.path.getsize(path),
            ops_list=", ".join(f"`{o}`" for o in ops), labels8=yte[:8].tolist(),
            init_note=(" (except Kaiming-normal fan_out for convs)" if name == "resnet20" else ""),
            bn_note=(" and BatchNorm affine weight/bias; BN running_mean/running_var are buffers and are "
                     "not counted" if has_bn else " (no BatchNorm in this model)"),
            **v))
    unknown = sorted(set(ops) - common.ALLOWED_OPS)
    print(f"[{name}] acc {correct / len(xte):.4f} ({correct}/{len(xte)}) ort {ort_correct}/{len(xte)} "
          f"params {params} macs {macs} opset {opset} ops {ops} "
          f"maxdiff8 {diff8:.3g} maxdiff_all {diff_all:.3g} unknown_ops {unknown}", flush=True)
    return dict(card, ort_correct=ort_correct, ort_maxdiff8=diff8, ort_maxdiff_all=diff_all,
                train_seconds=round(train_s, 1), epochs=epochs, exporter=exporter, epoch_log=log)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--models", default="lenet300,lenet5,resnet20")
    ap.add_argument("--epochs", default="", help="e.g. lenet300=8,resnet20=3 (overrides defaults)")
    ap.add_argument("--out", default=os.path.join(REPO, "models"))
    args = ap.parse_args()

    common.setup_threads(2)
    torch.use_deterministic_algorithms(True)
    epochs = dict(DEFAULT_EPOCHS)
    for kv in filter(None, args.epochs.split(",")):
        k, v = kv.split("=")
        epochs[k] = int(v)

    xtr, ytr = load_split(args.data, "train")
    xte, yte = load_split(args.data, "t10k")
    print(f"train {tuple(xtr.shape)} test {tuple(xte.shape)}", flush=True)
    data_arg = "" if args.data == "/usr/share/datasets/fashion-mnist" else args.data
    summary = {}
    for name in args.models.split(","):
        log = []
        model, train_s = train(name, epochs[name], xtr, ytr, xte, yte, log)
        summary[name] = export_and_card(name, model, epochs[name], train_s, log, xte, yte,
                                        data_arg or "/usr/share/datasets/fashion-mnist", args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
