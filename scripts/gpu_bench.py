#!/usr/bin/env python3
"""The Python half of scripts/gpu-bench.sh (standard library only; PyTorch only for `torch-step`
and the model checks of `self-test`).

Subcommands:
  compare-finetune REF.report.json DEV.report.json [--device NAME]
      Compares a short fine-tuning run on a GPU device with the same run on the CPU (losses,
      validation and test accuracies, kept widths, export verification); prints one JSON object,
      exit 1 when a check fails.
  step-time SHORT.report.json LONG.report.json --steps N --batch B
      Training throughput from two runs that differ only in --max-steps (by N): the difference
      of their training times is N steps without set-up, validation or kernel compilation.
  torch-step --model M --batch B --steps N --warmup W --device D
      PyTorch eager training throughput of the same architecture (host batch -> device,
      forward, cross-entropy, backward, Adam), one JSON object.
  image-folder ROOT --train N --test N --size S
      A synthetic RGB image folder (PNG, 10 classes) for models without a shipped dataset.
  summarize RESULTS.jsonl --json OUT.json --md OUT.md [--meta META.json]
      Medians per (model, batch, engine), ratios to PyTorch, the JSON file and a Markdown table.
  self-test
      Checks the comparison, step-time, summary and image-folder logic on made-up inputs, and
      (where PyTorch is importable) that the PyTorch models have the ONNX models' parameter counts.
"""

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What each benchmarked model is: its ONNX file and its per-sample input shape.
MODELS = {
    "lenet5": ("models/lenet5/model.onnx", (1, 28, 28)),
    "resnet20": ("models/resnet20/model.onnx", (1, 28, 28)),
    "resnet18": ("fixtures/models/resnet18/model.onnx", (3, 64, 64)),
}

# A GPU run of the same fine-tuning may differ from the CPU run by rounding only: f32 kernels
# that reduce in another order. These bounds are loose enough for that and tight enough to
# catch a wrong kernel (a wrong gradient shows up as a loss off by far more than 2%).
TOLERANCES = {
    "loss_rtol": 0.02,
    "penalty_rtol": 0.02,
    "val_accuracy_atol": 0.01,
    "dense_accuracy_atol": 0.002,
    "pruned_accuracy_atol": 0.01,
    "kept_gates_rtol": 0.02,
}


def load(path):
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- comparison
def compare_reports(ref, dev, tol=None):
    """Checks of a device's run report against the CPU's; each check says what, both values,
    the difference, the bound and whether it holds."""
    tol = dict(TOLERANCES, **(tol or {}))
    checks = []

    def check(what, a, b, bound, relative=False):
        diff = abs(a - b)
        if relative:
            diff /= max(abs(a), 1e-12)
        checks.append({"what": what, "cpu": a, "device": b, "diff": diff, "bound": bound,
                       "relative": relative, "ok": diff <= bound})

    hr, hd = ref.get("history", []), dev.get("history", [])
    checks.append({"what": "epochs", "cpu": len(hr), "device": len(hd), "ok": len(hr) == len(hd)})
    for r, d in zip(hr, hd):
        e = r["epoch"]
        check(f"epoch {e} loss", r["loss"], d["loss"], tol["loss_rtol"], relative=True)
        check(f"epoch {e} penalty", r["penalty"], d["penalty"], tol["penalty_rtol"], relative=True)
        check(f"epoch {e} val accuracy", r["accuracy"], d["accuracy"], tol["val_accuracy_atol"])
        kept_r, kept_d = sum(r["open_gates"]), sum(d["open_gates"])
        check(f"epoch {e} kept gates", kept_r, kept_d, tol["kept_gates_rtol"], relative=True)
    check("dense accuracy", ref["dense"]["accuracy"], dev["dense"]["accuracy"],
          tol["dense_accuracy_atol"])
    check("pruned accuracy", ref["pruned"]["accuracy"], dev["pruned"]["accuracy"],
          tol["pruned_accuracy_atol"])
    v = dev.get("verification", {})
    verified = v.get("max_abs_diff", float("inf")) <= v.get("tolerance", 0.0)
    checks.append({"what": "export verified", "cpu": True, "device": verified, "ok": verified})
    return {"ok": all(c["ok"] for c in checks), "checks": checks,
            "widths": {"cpu": ref.get("widths_after"), "device": dev.get("widths_after")}}


def step_time(short, long, steps, batch):
    """Seconds per step and images per second from two reports `steps` steps apart."""
    if steps <= 0:
        raise ValueError(f"steps {steps}: expected a positive count")
    t_short, t_long = short["timings"]["train_s"], long["timings"]["train_s"]
    if t_long <= t_short:
        raise ValueError(f"the longer run trained in {t_long:.3f} s, not more than the shorter "
                         f"run's {t_short:.3f} s: too few steps to time")
    step_s = (t_long - t_short) / steps
    return {"step_ms": step_s * 1e3, "images_per_s": batch / step_s,
            "train_s": [t_short, t_long]}


# ----------------------------------------------------------------------------- summary
ENGINES = ["compress-cuda", "compress-wgpu", "compress-cpu", "torch"]


def summarize(rows):
    """Median images/s per (model, batch, engine) and each compress engine's ratio to PyTorch
    eager measured in the same run."""
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["batch"], r["engine"]), []).append(r["images_per_s"])
    out = []
    for (model, batch, engine), values in sorted(groups.items()):
        torch_runs = groups.get((model, batch, "torch"))
        median = statistics.median(values)
        out.append({
            "model": model, "batch": batch, "engine": engine, "runs": len(values),
            "images_per_s": median, "images_per_s_runs": values,
            "vs_torch": median / statistics.median(torch_runs) if torch_runs else None,
        })
    return out


def markdown(summary, meta):
    engines = [e for e in ENGINES if any(s["engine"] == e for s in summary)]
    by = {(s["model"], s["batch"], s["engine"]): s for s in summary}
    keys = sorted({(s["model"], s["batch"]) for s in summary},
                  key=lambda k: (list(MODELS).index(k[0]) if k[0] in MODELS else 99, k[1]))
    head = ["model", "batch"] + [f"{e} img/s" for e in engines]
    ratios = [e for e in engines if e != "torch" and "torch" in engines]
    head += [f"{e} / torch" for e in ratios]
    lines = []
    if meta:
        lines.append(", ".join(f"{k}: {v}" for k, v in meta.items()))
        lines.append("")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, batch in keys:
        cells = [model, str(batch)]
        for e in engines:
            s = by.get((model, batch, e))
            cells.append(f"{s['images_per_s']:.0f}" if s else "-")
        for e in ratios:
            s = by.get((model, batch, e))
            cells.append(f"{s['vs_torch']:.2f}x" if s and s["vs_torch"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- image folder
def png(width, height, rgb_rows):
    """A minimal RGB PNG (8 bits per channel, no filtering)."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = b"".join(b"\x00" + row for row in rgb_rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def image_folder(root, n_train, n_test, size, classes=10):
    """root/{train,test}/class<k>/NNNNN.png: smooth patterns that differ by class and index
    (content does not matter for timing; the reader and the resize are exercised)."""
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            k = i % classes
            d = os.path.join(root, split, f"class{k}")
            os.makedirs(d, exist_ok=True)
            rows = [bytes(((x * (k + 1) + y * 3 + c * 80 + i) % 256)
                          for x in range(size) for c in range(3)) for y in range(size)]
            with open(os.path.join(d, f"{i:05d}.png"), "wb") as f:
                f.write(png(size, size, rows))


# ----------------------------------------------------------------------------- PyTorch
def torch_models():
    """The benchmarked architectures in PyTorch, written from the model cards (READMEs of
    models/ and fixtures/models/): same layers, same widths, same parameter counts."""
    import torch.nn as nn
    import torch.nn.functional as F

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + (x if self.short is None else self.short(x)))

    def stages(cin, plan):
        layers = []
        for width, blocks, stride in plan:
            for i in range(blocks):
                layers.append(Block(cin, width, stride if i == 0 else 1))
                cin = width
        return nn.Sequential(*layers)

    class ResNet20(nn.Module):
        """3x3 stem (16), 3 stages x 3 blocks (16/32/64), global pool, Linear(64, 10)."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                      nn.ReLU())
            self.body = stages(16, [(16, 3, 1), (32, 3, 2), (64, 3, 2)])
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(self.body(self.stem(x)).mean((2, 3)))

    class ResNet18Half(nn.Module):
        """ResNet-18 topology at half width: 7x7/2 stem (32), max pool 3/2, 4 stages x 2 blocks
        (32/64/128/256), global pool, Linear(256, 10)."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, 2, 3, bias=False), nn.BatchNorm2d(32),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            self.body = stages(32, [(32, 2, 1), (64, 2, 2), (128, 2, 2), (256, 2, 2)])
            self.fc = nn.Linear(256, 10)

        def forward(self, x):
            return self.fc(self.body(self.stem(x)).mean((2, 3)))

    return {"lenet5": LeNet5, "resnet20": ResNet20, "resnet18": ResNet18Half}


def torch_step(model_name, batch, steps, warmup, device):
    import torch
    torch.manual_seed(0)
    dev = torch.device(device)
    model = torch_models()[model_name]().to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    shape = MODELS[model_name][1]
    # A host-side pool of batches, copied to the device each step as compress copies its batches.
    pool = torch.rand((4, batch) + shape)
    labels = torch.randint(0, 10, (4, batch))
    loss_fn = torch.nn.CrossEntropyLoss()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(i):
        x, y = pool[i % 4].to(dev, non_blocking=False), labels[i % 4].to(dev)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for i in range(warmup):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    sync()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise SystemExit(f"torch-step: {model_name} loss became {loss.item()}")
    return {"engine": "torch", "model": model_name, "batch": batch, "steps": steps,
            "step_ms": elapsed / steps * 1e3, "images_per_s": batch * steps / elapsed,
            "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}


# ----------------------------------------------------------------------------- self-test
def fake_report(loss, acc, kept, train_s=1.0, verified=True):
    return {"history": [{"epoch": 1, "loss": loss, "penalty": 0.9, "accuracy": acc,
                         "open_gates": kept}],
            "dense": {"accuracy": 0.9075}, "pruned": {"accuracy": acc},
            "verification": {"max_abs_diff": 0.0 if verified else 1.0, "tolerance": 1e-4},
            "timings": {"train_s": train_s}, "widths_after": "20-50-500"}


def self_test():
    ref = fake_report(0.2125, 0.922, [20, 50, 500])
    same = compare_reports(ref, fake_report(0.2127, 0.921, [20, 50, 500]))
    assert same["ok"], same
    for bad, what in [(fake_report(0.25, 0.922, [20, 50, 500]), "epoch 1 loss"),
                      (fake_report(0.2125, 0.85, [20, 50, 500]), "pruned accuracy"),
                      (fake_report(0.2125, 0.922, [10, 30, 400]), "epoch 1 kept gates"),
                      (fake_report(0.2125, 0.922, [20, 50, 500], verified=False),
                       "export verified")]:
        r = compare_reports(ref, bad)
        failed = [c["what"] for c in r["checks"] if not c["ok"]]
        assert not r["ok"] and what in failed, (what, failed)

    t = step_time(fake_report(0, 0, [], train_s=2.0), fake_report(0, 0, [], train_s=4.0), 20, 128)
    assert abs(t["step_ms"] - 100.0) < 1e-9 and abs(t["images_per_s"] - 1280.0) < 1e-9, t
    for args in [(fake_report(0, 0, [], 2.0), fake_report(0, 0, [], 2.0), 20, 128),
                 (fake_report(0, 0, [], 2.0), fake_report(0, 0, [], 3.0), 0, 128)]:
        try:
            step_time(*args)
            raise AssertionError(f"step_time accepted {args}")
        except ValueError:
            pass

    rows = [{"model": "resnet20", "batch": 128, "engine": e, "images_per_s": v}
            for e, v in [("torch", 1000.0), ("torch", 1200.0), ("torch", 1100.0),
                         ("compress-cuda", 550.0), ("compress-cuda", 500.0),
                         ("compress-cuda", 600.0), ("compress-wgpu", 300.0)]]
    s = {x["engine"]: x for x in summarize(rows)}
    assert s["torch"]["images_per_s"] == 1100.0 and s["compress-cuda"]["vs_torch"] == 0.5, s
    assert tags(["model=lenet5", "batch=128"]) == {"model": "lenet5", "batch": 128}
    md = markdown(summarize(rows), {"gpu": "test"})
    assert "| resnet20 | 128 | 550 | 300 | 1100 | 0.50x | 0.27x |" in md, md

    with tempfile.TemporaryDirectory() as d:
        image_folder(d, 12, 3, 8)
        files = sorted(os.listdir(os.path.join(d, "train", "class1")))
        assert files == ["00001.png", "00011.png"], files
        with open(os.path.join(d, "train", "class1", files[0]), "rb") as f:
            data = f.read()
        assert data.startswith(b"\x89PNG") and struct.unpack(">II", data[16:24]) == (8, 8)

    try:
        import torch  # noqa: F401
    except ImportError:
        print("self-test: PyTorch not importable here; model checks skipped")
    else:
        for name, (onnx, shape) in MODELS.items():
            card = load(os.path.join(REPO, os.path.dirname(onnx), "card.json"))
            model = torch_models()[name]()
            params = sum(p.numel() for p in model.parameters())
            assert params == card["params"], (name, params, card["params"])
            out = model(torch.rand((2,) + shape))
            assert tuple(out.shape) == (2, 10), (name, out.shape)
        r = torch_step("lenet5", 8, 2, 1, "cpu")
        assert r["images_per_s"] > 0, r
        print("self-test: PyTorch models match the cards' parameter counts")
    print("self-test: ok")


# ----------------------------------------------------------------------------- main
def tags(pairs):
    """KEY=VALUE strings as a dict; integers stay integers (batch, round)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--tag {pair}: expected KEY=VALUE")
        out[key] = int(value) if value.isdigit() else value
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare-finetune")
    c.add_argument("ref")
    c.add_argument("dev")
    c.add_argument("--device", default="device")
    c = sub.add_parser("step-time")
    c.add_argument("short")
    c.add_argument("long")
    c.add_argument("--steps", type=int, required=True)
    c.add_argument("--batch", type=int, required=True)
    c.add_argument("--tag", action="append", default=[], help="KEY=VALUE added to the row")
    c = sub.add_parser("torch-step")
    c.add_argument("--model", choices=sorted(MODELS), required=True)
    c.add_argument("--batch", type=int, required=True)
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--warmup", type=int, default=5)
    c.add_argument("--device", default="cuda")
    c.add_argument("--tag", action="append", default=[], help="KEY=VALUE added to the row")
    c = sub.add_parser("image-folder")
    c.add_argument("root")
    c.add_argument("--train", type=int, required=True)
    c.add_argument("--test", type=int, required=True)
    c.add_argument("--size", type=int, default=32)
    c = sub.add_parser("summarize")
    c.add_argument("results")
    c.add_argument("--json", required=True)
    c.add_argument("--md", required=True)
    c.add_argument("--meta")
    sub.add_parser("self-test")
    a = p.parse_args()

    if a.cmd == "compare-finetune":
        r = compare_reports(load(a.ref), load(a.dev))
        r.update(kind="finetune", device=a.device)
        print(json.dumps(r))
        sys.exit(0 if r["ok"] else 1)
    elif a.cmd == "step-time":
        row = step_time(load(a.short), load(a.long), a.steps, a.batch)
        print(json.dumps(dict(tags(a.tag), kind="throughput", batch=a.batch, **row)))
    elif a.cmd == "torch-step":
        row = torch_step(a.model, a.batch, a.steps, a.warmup, a.device)
        print(json.dumps(dict(tags(a.tag), kind="throughput", **row)))
    elif a.cmd == "image-folder":
        image_folder(a.root, a.train, a.test, a.size)
    elif a.cmd == "summarize":
        with open(a.results) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        meta = load(a.meta) if a.meta else {}
        summary = summarize([r for r in rows if r.get("kind") == "throughput"])
        doc = dict(meta, finetune=[r for r in rows if r.get("kind") == "finetune"],
                   throughput=[r for r in rows if r.get("kind") == "throughput"], summary=summary)
        write_atomic(a.json, json.dumps(doc, indent=2) + "\n")
        write_atomic(a.md, markdown(summary, meta.get("context", {})))
        print(f"wrote {a.json} and {a.md}")
    elif a.cmd == "self-test":
        self_test()


if __name__ == "__main__":
    main()
