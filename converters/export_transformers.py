"""Tiny vision transformers for 1x28x28 Fashion-MNIST, as PyTorch's two ONNX exporters write them.

Architecture (both styles): patch embedding Conv2d(1, 64, 7, stride 7) -> 16 tokens, a class
token put in front on the token axis (17 tokens), a learned positional embedding added,
pre-norm blocks (LayerNorm -> attention -> residual add, LayerNorm -> MLP with GELU -> residual
add), a final LayerNorm, the class token taken out (x[:, 0]) and a linear classifier.

- `timm` style: one `qkv` Linear(64, 192), reshaped to [b, n, 3, heads, head_dim] and permuted,
  `F.scaled_dot_product_attention` (timm's fused path), heads merged by transpose + reshape, a
  `proj` Linear; the MLP is Linear(64, 128) -> GELU -> Linear(128, 64).
- `torch` style: `nn.TransformerEncoder` of `nn.TransformerEncoderLayer(batch_first=True,
  norm_first=True, activation="gelu")`, the same widths. Both exporters write its reference
  path (in-projection MatMul, unflatten/transpose to heads, SDPA written out): torch.export does
  not take the fused fast path (`aten._transformer_encoder_layer_fwd`, what eager inference under
  no_grad runs), and the TorchScript exporter refuses that op (UnsupportedOperatorError, tried
  with torch 2.15 under no_grad with frozen parameters), so no ONNX file of the fast path exists.

The class token is written as a zero token padded in front (`F.pad`) plus the class token added
at position 0 together with the positional embedding: the same function as timm's
`cat(cls_token.expand(batch, -1, -1), x)` followed by `+ pos_embed`, without the Expand of a
constant to the batch size that the cat form exports (Expand is the token-input work's op).

Each is exported twice (three times for the fixtures: also `model.opset20.onnx`, the dynamo
exporter at opset 20, which writes GELU as one Gelu node): TorchScript exporter (dynamo=False, opset 17) as `model.onnx` and the
dynamo exporter (opset 18) as `model.dynamo.onnx` (also in models/vit), with a symbolic batch dim. Reference sets
`test_data_set_0` (batch 1) and `test_data_set_1` (batch 3) hold PyTorch's outputs; ONNX Runtime
must reproduce them to 1e-4 for both files (checked here).

Usage (from the repository root), with /work/torch-venv/bin/python:
  converters/export_transformers.py fixtures          # fixtures/transformers/{timm,torch}
  converters/export_transformers.py train DATA_DIR [EPOCHS [STYLE]]
      # trained on Fashion-MNIST: models/vit (STYLE timm, the default) or models/vit_torch
      # (STYLE torch, `nn.TransformerEncoder`); both in the cat form of the class token
"""
import inspect
import json
import os
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from common import ort_session, setup_threads  # noqa: E402
from train_fashion import load_split  # noqa: E402

DIM, HEADS, MLP, DEPTH, PATCH, CLASSES = 64, 4, 128, 3, 7, 10
FIXTURE_DEPTH = 2
BATCHES = [1, 3]


class Attention(nn.Module):
    """timm's Attention (fused path): one qkv Linear, heads split by reshape/permute."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """`cls="cat"`: timm's own class-token form, `cat(cls_token.expand(b, -1, -1), x) +
    pos_embed` (models/vit); `"pad"`: the same function without the Expand (the fixtures)."""

    def __init__(self, style="timm", depth=DEPTH, cls="pad"):
        super().__init__()
        self.cls = cls
        tokens = (28 // PATCH) ** 2
        self.patch_embed = nn.Conv2d(1, DIM, PATCH, PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, DIM) * 0.02)
        if style == "timm":
            self.blocks = nn.Sequential(*[Block(DIM, HEADS, MLP) for _ in range(depth)])
        else:
            layer = nn.TransformerEncoderLayer(
                DIM, HEADS, MLP, dropout=0.0, activation="gelu", batch_first=True,
                norm_first=True, layer_norm_eps=1e-6)
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.cls == "cat":
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        else:
            cls_at_0 = F.pad(self.cls_token, (0, 0, 0, self.pos_embed.shape[1] - 1))
            x = F.pad(x, (0, 0, 1, 0)) + (self.pos_embed + cls_at_0)
        x = self.blocks(x)
        return self.head(self.norm(x)[:, 0])


# ---------------------------------------------------------------- export


def export_torchscript(model, path, channels=1):
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    torch.onnx.export(model, (torch.zeros(2, channels, 28, 28),), path, **kwargs)


def export_dynamo(model, path, channels=1):
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(
        model, (torch.zeros(2, channels, 28, 28),), dynamo=True, opset_version=18,
        input_names=["input"], output_names=["logits"],
        dynamic_shapes={"x": {0: batch}}, external_data=False)
    prog.save(path, external_data=False)


def write_tensor(path, arr, name):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(arr), name).SerializeToString())


def export_all(model, d, gen, stem="model", channels=1):
    """Both exports plus the reference sets; returns a summary per file."""
    model.eval()
    os.makedirs(d, exist_ok=True)
    files = {f"{stem}.onnx": export_torchscript, f"{stem}.dynamo.onnx": export_dynamo}
    refs = []
    for k, b in enumerate(BATCHES):
        x = torch.rand(b, channels, 28, 28, generator=gen)
        with torch.no_grad():
            y = model(x).numpy()
        sd = os.path.join(d, f"test_data_set_{k}")
        os.makedirs(sd, exist_ok=True)
        write_tensor(os.path.join(sd, "input_0.pb"), x.numpy(), "input")
        write_tensor(os.path.join(sd, "output_0.pb"), y, "logits")
        refs.append((x.numpy(), y))
    summary = {}
    for name, fn in files.items():
        path = os.path.join(d, name)
        fn(model, path, channels)
        onnx.checker.check_model(onnx.load(path), full_check=True)
        sess = ort_session(path)
        worst = max(float(np.abs(sess.run(None, {"input": x})[0] - y).max()) for x, y in refs)
        assert worst < 1e-4, (path, worst)
        m = onnx.load(path)
        summary[name] = {
            "ops": sorted({n.op_type for n in m.graph.node}),
            "opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
            "bytes": os.path.getsize(path),
            "ort_vs_torch": worst,
        }
    return summary


def export_opset20(model, d):
    """The dynamo exporter at opset 20 writes GELU as one Gelu node (`model.opset20.onnx`);
    checked against the reference sets written by `export_all`."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    path = os.path.join(d, "model.opset20.onnx")
    prog = torch.onnx.export(
        model, (torch.zeros(2, 1, 28, 28),), dynamo=True, opset_version=20,
        input_names=["input"], output_names=["logits"], dynamic_shapes={"x": {0: batch}},
        external_data=False)
    prog.save(path, external_data=False)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = ort_session(path)
    worst = 0.0
    for k in range(len(BATCHES)):
        sd = os.path.join(d, f"test_data_set_{k}")
        x = numpy_helper.to_array(onnx.load_tensor(os.path.join(sd, "input_0.pb")))
        y = numpy_helper.to_array(onnx.load_tensor(os.path.join(sd, "output_0.pb")))
        worst = max(worst, float(np.abs(sess.run(None, {"input": x})[0] - y).max()))
    assert worst < 1e-4, (path, worst)
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    assert "Gelu" in ops, ops
    return {"model.opset20.onnx": {"ops": ops, "opset": 20, "bytes": os.path.getsize(path),
                                   "ort_vs_torch": worst}}


def fixtures():
    out = os.path.join("fixtures", "transformers")
    summary = {}
    for i, style in enumerate(["timm", "torch"]):
        torch.manual_seed(300 + i)
        gen = torch.Generator().manual_seed(400 + i)
        model = ViT(style, FIXTURE_DEPTH)
        with torch.no_grad():  # trained-looking: LayerNorm affine terms away from 1 / 0
            # nn.TransformerEncoder deep-copies one layer, and the dynamo exporter then writes
            # the identical tensors once, shared by every layer; a trained model has distinct ones.
            for p in model.blocks.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
            for m in model.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.8 + 0.6)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        summary[style] = export_all(model, os.path.join(out, style), gen)
        summary[style].update(export_opset20(model, os.path.join(out, style)))
        summary[style]["params"] = int(sum(p.numel() for p in model.parameters()))
    print(json.dumps(summary, indent=1))


def evaluate(model, x, y, bs=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            correct += int((model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum())
    return correct


def train(data, epochs=6, style="timm"):
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    xtr, ytr = load_split(data, "train")
    xte, yte = load_split(data, "t10k")
    model = ViT(style, DEPTH, cls="cat")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * ((len(xtr) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(0)
    log, t0 = [], time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte, yte) / len(xte)
        log.append(round(acc, 4))
        print(f"epoch {ep + 1}: test accuracy {acc:.4f} ({time.time() - t0:.0f} s)", flush=True)
    finish(model, xte, yte, epochs, time.time() - t0, log, style)


def vit_macs(tokens=(28 // PATCH) ** 2 + 1):
    """MACs at batch 1 as compress counts them: the patch Conv, every Linear per token, and
    attention's QK^T and AV (heads x tokens^2 x head_dim each)."""
    linear = tokens * (DIM * 3 * DIM + DIM * DIM + 2 * DIM * MLP)
    attention = 2 * HEADS * tokens * tokens * (DIM // HEADS)
    patches = (28 // PATCH) ** 2 * DIM * PATCH * PATCH
    return patches + DEPTH * (linear + attention) + DIM * CLASSES


MODEL_NAMES = {"timm": "vit", "torch": "vit_torch"}
ATTENTION_TEXT = {"timm": "timm-style attention",
                  "torch": "nn.TransformerEncoder (norm_first, GELU) attention"}


def finish(model, xte, yte, epochs, train_s, log, style, **extra):
    """Exports the trained model to models/vit or models/vit_torch (model.onnx,
    model.dynamo.onnx), checks both in ONNX Runtime on the test set and writes the card."""
    name = MODEL_NAMES[style]
    d = os.path.join("models", name)
    summary = export_all(model, d, torch.Generator().manual_seed(1))
    correct = evaluate(model, xte, yte)
    ort_correct, worst = {}, {}
    for name in summary:
        sess = ort_session(os.path.join(d, name))
        c, w = 0, 0.0
        with torch.no_grad():
            for i in range(0, len(xte), 1000):
                xb = xte[i:i + 1000]
                got = sess.run(None, {"input": xb.numpy()})[0]
                w = max(w, float(np.abs(got - model(xb).numpy()).max()))
                c += int((got.argmax(1) == yte[i:i + 1000].numpy()).sum())
        ort_correct[name], worst[name] = c, w
    card = {
        "name": name,
        "architecture": f"ViT: patch {PATCH}, dim {DIM}, {HEADS} heads, MLP {MLP}, depth {DEPTH}, "
                        f"class token, learned positional embedding, {ATTENTION_TEXT[style]}",
        "params": int(sum(p.numel() for p in model.parameters())),
        "macs": vit_macs(),
        "epochs": epochs,
        "train_seconds": round(train_s),
        "per_epoch_test_accuracy": log,
        "test_accuracy_pytorch": correct / len(xte),
        "test_correct_onnxruntime": ort_correct,
        "max_abs_logit_diff_onnxruntime": worst,
        "exports": summary,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        **extra,
    }
    with open(os.path.join(d, "card.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(json.dumps(card, indent=1))


def main():
    setup_threads()
    if sys.argv[1:2] == ["fixtures"]:
        fixtures()
    elif sys.argv[1:2] == ["train"]:
        epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 6
        train(sys.argv[2], epochs, sys.argv[4] if len(sys.argv) > 4 else "timm")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
