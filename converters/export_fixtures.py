#!/usr/bin/env python3
"""Export small structural test models from torchvision (random weights) to ONNX.

Usage: OMP_WAIT_POLICY=passive python converters/export_fixtures.py [--out fixtures/models]

Each model: num_classes=10, input float32 [batch,3,64,64] (batch dynamic), random weights
(seeded; conv/linear biases that torchvision initialises to 0 get small random values), BatchNorm layers made non-trivial (random gamma/beta, running stats calibrated on
random data and then randomly perturbed, so BN-folding bugs show), eval mode.
Writes fixtures/models/<name>/{model.onnx, test_data_set_0/{input_0,output_0}.pb, card.json}.
input_0.pb = random normal input of batch 2, output_0.pb = PyTorch's output for it.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vgg import VGG, make_layers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 0


class WideResNet(ResNet):
    """torchvision's ResNet (same _make_layer/forward/BasicBlock) with a configurable base width.

    torchvision's ResNet hard-codes 64/128/256/512 channels (width_per_group only affects
    Bottleneck), so this re-runs its constructor logic with base width `width` instead of 64.
    """

    def __init__(self, block, layers, num_classes=10, width=32):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # BasicBlock requires base_width == 64 (it is not a channel count here)
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def resnet18():
    return WideResNet(BasicBlock, [2, 2, 2, 2], num_classes=10, width=32)


def mobilenet_v2():
    return torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)


def squeezenet1_1():
    return torchvision.models.squeezenet1_1(num_classes=10)


def densenet121():
    return torchvision.models.DenseNet(growth_rate=16, block_config=(6, 12, 24, 16),
                                       num_init_features=32, num_classes=10)


# VGG-11 ("A") configuration with every width halved.
CFG_A_HALF = [32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256, "M"]


def vgg_bn():
    m = VGG(make_layers(CFG_A_HALF, batch_norm=True), num_classes=10)
    m.avgpool = nn.AdaptiveAvgPool2d(1)  # input-size independent; exports as GlobalAveragePool
    # VGG-style 3-layer classifier, shrunk: 256 -> 128 -> 128 -> 10
    m.classifier = nn.Sequential(
        nn.Linear(256, 128), nn.ReLU(True), nn.Dropout(),
        nn.Linear(128, 128), nn.ReLU(True), nn.Dropout(),
        nn.Linear(128, 10),
    )
    return m


FIXTURES = {
    "resnet18": (resnet18, "torchvision ResNet (BasicBlock, [2,2,2,2]) = ResNet-18 topology at half width "
                           "(32/64/128/256 channels instead of 64/128/256/512); subclass reusing "
                           "torchvision's _make_layer/forward."),
    "mobilenet_v2": (mobilenet_v2, "torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)."),
    "squeezenet1_1": (squeezenet1_1, "torchvision.models.squeezenet1_1(num_classes=10)."),
    "densenet121": (densenet121, "torchvision.models.DenseNet(growth_rate=16, block_config=(6,12,24,16), "
                                 "num_init_features=32, num_classes=10) (DenseNet-121 topology, reduced growth)."),
    "vgg_bn": (vgg_bn, "torchvision VGG(make_layers(VGG-11 'A' cfg halved, batch_norm=True)), avgpool -> "
                       "AdaptiveAvgPool2d(1), classifier Linear(256,128)-ReLU-Dropout-Linear(128,128)-ReLU-"
                       "Dropout-Linear(128,10)."),
}


@torch.no_grad()
def randomize_zero_biases(model, gen):
    """torchvision initialises many conv/linear biases to exactly 0.  Identical initializers get
    deduplicated by the exporter (one initializer + Identity nodes), and all-zero biases would
    hide bias-handling bugs, so give them small random values."""
    n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None and not m.bias.any():
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
            n += 1
    return n


@torch.no_grad()
def randomize_bn(model, gen):
    """Make every BatchNorm non-trivial while keeping activations at a sane scale."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        c = bn.num_features
        bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
        bn.bias.copy_(torch.randn(c, generator=gen) * 0.2)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average during calibration
    # calibrate running stats on random data (train mode), so activations don't explode/vanish
    model.train()
    for _ in range(4):
        model(torch.randn(8, 3, 64, 64, generator=gen))
    model.eval()
    for bn in bns:
        c = bn.num_features
        bn.running_mean.add_(torch.randn(c, generator=gen) * 0.1 * bn.running_var.sqrt())
        bn.running_var.mul_(torch.empty(c).uniform_(0.7, 1.4, generator=gen))
        bn.momentum = 0.1
        assert (bn.running_var > 0).all()
    return len(bns)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "fixtures", "models"))
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    common.setup_threads(2)
    torch.use_deterministic_algorithms(True)
    summary = {}
    for name, (ctor, desc) in FIXTURES.items():
        if args.only and name not in args.only.split(","):
            continue
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        model = ctor()
        gen = torch.Generator().manual_seed(SEED + 1)
        nbiases = randomize_zero_biases(model, gen)
        nbn = randomize_bn(model, gen)
        model.eval()
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(SEED + 2))
        with torch.no_grad():
            y = model(x).numpy()
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        exporter = common.export_onnx(model, x, path)
        common.write_test_data(d, x.numpy(), y)
        sess = common.ort_session(path)
        diff = float(np.abs(common.ort_run(sess, x.numpy()) - y).max())
        # also check another batch size through the dynamic batch dim
        x3 = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(SEED + 3))
        with torch.no_grad():
            diff3 = float(np.abs(common.ort_run(sess, x3.numpy()) - model(x3).numpy()).max())
        ops, opset = common.onnx_info(path)
        params = common.count_params(model)
        macs = common.count_macs(model, x)
        card = {"name": name, "params": params, "macs": macs, "opset": opset, "ops": ops}
        common.write_card(d, card)
        unknown = sorted(set(ops) - common.ALLOWED_OPS)
        size = os.path.getsize(path)
        print(f"[{name}] params {params} macs {macs} bn {nbn} opset {opset} size {size} ops {ops} "
              f"unknown {unknown} |y|max {np.abs(y).max():.3g} ort maxdiff b2 {diff:.3g} b3 {diff3:.3g}",
              flush=True)
        summary[name] = dict(card, description=desc, bn_layers=nbn, onnx_bytes=size, unknown_ops=unknown,
                             ort_maxdiff=diff, ort_maxdiff_batch3=diff3, out_absmax=float(np.abs(y).max()),
                             exporter=exporter)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
