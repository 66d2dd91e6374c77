#!/usr/bin/env python3
"""Train a 3-channel ResNet-20 on CIFAR-Fashion and export it to models/resnet20_rgb.

Usage:
  python converters/make_cifar_fashion.py /tmp/cifar-fashion
  OMP_WAIT_POLICY=passive python converters/train_cifar_fashion.py /tmp/cifar-fashion [--epochs 4]

DATA_DIR holds the CIFAR-10-binary-format copy of Fashion-MNIST that make_cifar_fashion.py
writes (data_batch_1..5.bin, test_batch.bin; 3x32x32, colour-tinted, zero-padded).

Preprocessing: pixels / 255 as float32, then per channel `(x - mean[c]) / std[c]` with the
mean and std of the training set (computed here, rounded to 4 decimals). The exported model
records them in its ONNX metadata_props (`compress.mean`, `compress.std`), which `compress eval`
and `compress run` apply when no preprocessing option is given.

Training: the model of train_fashion.py (ResNet20 with 3 input channels), seeded and
deterministic on the CPU with 2 threads; Adam lr 1e-3 with a per-step cosine decay to 0,
batch 128, no augmentation.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from make_cifar_fashion import fnv1a64  # noqa: E402
from train_fashion import BATCH, LR, SEED, ResNet20, evaluate, seed_all, versions  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "resnet20_rgb"
REC = 1 + 3 * 32 * 32


def read_cifar(paths):
    raw = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in paths]).reshape(-1, REC)
    return raw[:, 1:].reshape(-1, 3, 32, 32).copy(), raw[:, 0].astype(np.int64)


def channel_stats(x):
    """Per-channel mean and std of x/255 over the whole set, rounded to 4 decimals."""
    v = x.astype(np.float64) / 255.0
    mean = v.mean(axis=(0, 2, 3))
    std = v.std(axis=(0, 2, 3))
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]


class Prep:
    """uint8 NCHW -> normalised float32, as compress does it: (x/255 - mean) / std in f32."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, u8):
        return (torch.from_numpy(u8).float() / 255.0 - self.mean) / self.std


def train(epochs, xtr, ytr, xte, yte, prep, log):
    seed_all(SEED)
    model = ResNet20(in_ch=3)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    n = len(xtr)
    steps = epochs * ((n + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(SEED)
    t_total = time.time()
    for ep in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen).numpy()
        tot_loss = 0.0
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(prep(xtr[idx])), torch.from_numpy(ytr[idx]))
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss) * len(idx)
            if (i // BATCH) % 50 == 0:
                print(f"  step {i // BATCH} loss {float(loss):.4f} {time.time() - t0:.0f}s", flush=True)
        dt = time.time() - t0
        c = evaluate(model, prep(xte), torch.from_numpy(yte))
        print(f"[{NAME}] epoch {ep + 1}/{epochs} loss {tot_loss / n:.4f} test acc {c / len(xte):.4f} "
              f"({c}/{len(xte)}) {dt:.1f}s", flush=True)
        log.append({"epoch": ep + 1, "loss": tot_loss / n, "correct": c, "seconds": round(dt, 1)})
    return model.eval(), time.time() - t_total


def set_metadata(path, mean, std):
    m = onnx.load(path)
    for key, vals in (("compress.mean", mean), ("compress.std", std)):
        entry = m.metadata_props.add()
        entry.key, entry.value = key, ",".join(repr(v) for v in vals)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)


def export(model, xte, yte, prep, mean, std, outroot):
    d = os.path.join(outroot, NAME)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    x_all = prep(xte)
    x8 = x_all[:8].contiguous()
    exporter = common.export_onnx(model, x8, path)
    set_metadata(path, mean, std)
    with torch.no_grad():
        y8 = model(x8).numpy()
    common.write_test_data(d, x8.numpy(), y8)
    correct = evaluate(model, x_all, torch.from_numpy(yte))
    sess = common.ort_session(path)
    diff8 = float(np.abs(common.ort_run(sess, x8.numpy()) - y8).max())
    ort_correct, diff_all = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x_all), 1000):
            xb = x_all[i:i + 1000]
            o = common.ort_run(sess, xb.numpy())
            diff_all = max(diff_all, float(np.abs(o - model(xb).numpy()).max()))
            ort_correct += int((o.argmax(1) == yte[i:i + 1000]).sum())
    ops, opset = common.onnx_info(path)
    return dict(name=NAME, exporter=exporter, correct=correct, ort_correct=ort_correct,
                ort_maxdiff8=diff8, ort_maxdiff_all=diff_all, ops=ops, opset=opset,
                params=common.count_params(model), macs=common.count_macs(model, x8),
                onnx_bytes=os.path.getsize(path), labels8=yte[:8].tolist())


def write_card(summary, data_dir, outroot, compress_bin=None):
    """card.json: the accuracy `compress eval` measures (PyTorch's when no binary is given),
    sizes, preprocessing and the hashes of the test data it was measured on."""
    d = os.path.join(outroot, NAME)
    with open(os.path.join(data_dir, "test_batch.bin"), "rb") as f:
        test_bytes = f.read()
    n = len(test_bytes) // REC
    card = {"name": NAME, "accuracy": round(summary["correct"] / n, 4), "correct": summary["correct"],
            "test_samples": n, "pytorch_accuracy": round(summary["correct"] / n, 4),
            "params": summary["params"], "macs": summary["macs"], "opset": summary["opset"],
            "ops": summary["ops"],
            "preprocessing": {"mean": summary["mean"], "std": summary["std"]},
            "data": {"converter": "converters/make_cifar_fashion.py",
                     "test_batch_sha256": hashlib.sha256(test_bytes).hexdigest(),
                     "test_batch_fnv1a64": f"{fnv1a64(test_bytes):016x}"}}
    if compress_bin:
        out = subprocess.run([compress_bin, "eval", os.path.join(d, "model.onnx"), "--data", data_dir,
                              "--json"], check=True, capture_output=True, text=True).stdout
        acc = json.loads(out)
        card.update(accuracy=round(acc["accuracy"], 4), correct=acc["correct"])
        card["measured_by"] = "compress eval (no options: preprocessing from the model's metadata)"
    common.write_card(d, card)
    print(json.dumps(card, indent=1), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(REPO, "models"))
    ap.add_argument("--compress", help="compress binary: the card's accuracy is what its eval measures")
    ap.add_argument("--card-only", action="store_true",
                    help="write card.json from an earlier run's training.json (no training)")
    args = ap.parse_args()
    if args.card_only:
        with open(os.path.join(args.out, NAME, "training.json")) as f:
            write_card(json.load(f), args.data, args.out, args.compress)
        return
    common.setup_threads(2)
    torch.use_deterministic_algorithms(True)

    xtr, ytr = read_cifar([os.path.join(args.data, f"data_batch_{k}.bin") for k in range(1, 6)])
    xte, yte = read_cifar([os.path.join(args.data, "test_batch.bin")])
    mean, std = channel_stats(xtr)
    print(f"train {xtr.shape} test {xte.shape} mean {mean} std {std}", flush=True)
    prep = Prep(mean, std)
    log = []
    model, train_s = train(args.epochs, xtr, ytr, xte, yte, prep, log)
    summary = export(model, xte, yte, prep, mean, std, args.out)
    summary.update(mean=mean, std=std, epochs=args.epochs, train_seconds=round(train_s, 1),
                   epoch_log=log, versions=versions())
    print(json.dumps(summary, indent=1), flush=True)
    with open(os.path.join(args.out, NAME, "training.json"), "w") as f:
        json.dump(summary, f, indent=1)
    write_card(summary, args.data, args.out, args.compress)


if __name__ == "__main__":
    main()
