#!/usr/bin/env python3
"""PyTorch side of `cargo bench --bench train_speed`: eager training throughput of the same
dense architectures the bench trains (converters/train_fashion.py's LeNet-5-Caffe and
ResNet-20), and of an L0-HC gated LeNet-5 written out after Louizos et al.'s reference
model (hard-concrete gates on conv output channels and fc inputs).

One call times one model: batch 128, Adam, random inputs preloaded in memory, `--threads`
intra-op threads (run it with OMP_WAIT_POLICY=passive). Prints one JSON line:
{"model", "step_ms", "images_per_s"}. Step time = median over `--repeats` timings of
`--steps` steps, after `--warmup` steps.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "converters"))
from train_fashion import LeNet5, ResNet20  # noqa: E402

# Hard-concrete stretch interval and temperature (Louizos et al. 2018).
GAMMA, ZETA, BETA = -0.1, 1.1, 2.0 / 3.0


def hard_concrete(log_alpha):
    """One gate sample per unit, shared by the batch, as in the reference L0 layers."""
    u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def expected_open(log_alpha):
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


class L0Conv(nn.Conv2d):
    def __init__(self, cin, cout, k):
        super().__init__(cin, cout, k)
        self.log_alpha = nn.Parameter(torch.full((cout,), 3.0))

    def forward(self, x):
        z = hard_concrete(self.log_alpha)
        return F.conv2d(x, self.weight * z.view(-1, 1, 1, 1), self.bias * z)

    def penalty(self):
        return (expected_open(self.log_alpha) * self.weight[0].numel()).sum()


class L0Dense(nn.Linear):
    def __init__(self, cin, cout):
        super().__init__(cin, cout)
        self.log_alpha = nn.Parameter(torch.full((cin,), 3.0))

    def forward(self, x):
        return F.linear(x * hard_concrete(self.log_alpha), self.weight, self.bias)

    def penalty(self):
        return (expected_open(self.log_alpha) * self.weight.shape[0]).sum()


class L0LeNet5(nn.Module):
    """LeNet-5-Caffe with L0 gates on every layer, as the reference L0-HC code defines it."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = L0Conv(1, 20, 5), L0Conv(20, 50, 5)
        self.fc1, self.fc2 = L0Dense(800, 500), L0Dense(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

    def penalty(self):
        return sum(m.penalty() for m in (self.conv1, self.conv2, self.fc1, self.fc2))


MODELS = {"lenet5": LeNet5, "resnet20": ResNet20, "lenet5-l0hc": L0LeNet5}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=sorted(MODELS), required=True)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = MODELS[a.model]()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(a.batch, 1, 28, 28)
    y = torch.randint(0, 10, (a.batch,))
    n_train = 60000

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if hasattr(model, "penalty"):
            loss = loss + model.penalty() / n_train
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.repeats):
        start = time.perf_counter()
        for _ in range(a.steps):
            step()
        times.append((time.perf_counter() - start) / a.steps)
    step_s = statistics.median(times)
    print(json.dumps({"model": a.model, "step_ms": step_s * 1e3, "images_per_s": a.batch / step_s,
                      "step_ms_runs": [t * 1e3 for t in times], "torch": torch.__version__}))


if __name__ == "__main__":
    main()
