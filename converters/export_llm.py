"""Writes fixtures/transformers/llm_ts/, llm_dynamo/ and mqa_ts/, mqa_dynamo/: a tiny decoder-style
(LLaMA-like) classifier with random weights (fixed seed) and one token input, as the two PyTorch
exporters write it.

The model (written out as LLaMA does, not with torch.nn.RMSNorm or scaled_dot_product_attention):
- input `input_ids` [batch, seq] int64; token embedding (vocab 1000, hidden 32);
- 2 decoder blocks, pre-norm:
  - RMSNorm `x * rsqrt(mean(x^2) + eps) * w` (Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul once
    exported);
  - grouped-query attention: q 32 -> 8 heads of 4, k and v 32 -> N_KV heads of 4 (no biases),
    rotary position embeddings from cos/sin tables [64, 4] sliced to the sequence length,
    rotate-half by Slice/Neg/Concat, k and v repeated to the q heads as LLaMA's `repeat_kv`
    (Unsqueeze, Expand, Reshape: kv head j serves q heads j*G .. j*G+G-1), scores scaled by
    1/sqrt(4) plus a causal additive mask (the table's most negative float above the
    diagonal), softmax, AV, heads merged, o projection, residual;
  - RMSNorm, SwiGLU MLP `down(silu(gate(x)) * up(x))` (32 -> 64 -> 32, no biases), residual;
- a final RMSNorm and a 4-class classifier on the last token -> `logits` [batch, 4].

`llm_*`: 4 kv heads (G = 2 q heads each). `mqa_*`: 1 kv head (multi-query attention, G = 8).
`*_ts`: TorchScript exporter (dynamo=False), opset 17. `*_dynamo`: dynamo exporter, opset 18.
Batch and sequence length are symbolic. Each directory gets `model.onnx` and two reference
sets: `test_data_set_0` (2 x 8 tokens) and `test_data_set_1` (3 x 13 tokens) with PyTorch's
logits; ONNX Runtime must reproduce them to 1e-4.

Usage (from the repository root): /work/torch-venv/bin/python converters/export_llm.py
"""
import inspect
import json
import math
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from common import ort_session, setup_threads  # noqa: E402

VOCAB = 1000
HIDDEN = 32
HEADS = 8
HEAD_DIM = HIDDEN // HEADS
FFN = 64
LAYERS = 2
MAX_POS = 64
CLASSES = 4
EPS = 1e-6
OUT = os.path.join("fixtures", "transformers")
# (batch, sequence length) of the two reference sets.
SETS = [(2, 8), (3, 13)]


class RMSNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(HIDDEN))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, groups):
    """[b, kv, n, d] -> [b, kv*groups, n, d], kv head j repeated for q heads j*groups.. (LLaMA)."""
    b, kv, n, d = x.shape
    if groups == 1:
        return x
    x = x[:, :, None, :, :].expand(b, kv, groups, n, d)
    return x.reshape(b, kv * groups, n, d)


class Attention(nn.Module):
    def __init__(self, kv_heads):
        super().__init__()
        self.kv_heads = kv_heads
        self.q = nn.Linear(HIDDEN, HEADS * HEAD_DIM, bias=False)
        self.k = nn.Linear(HIDDEN, kv_heads * HEAD_DIM, bias=False)
        self.v = nn.Linear(HIDDEN, kv_heads * HEAD_DIM, bias=False)
        self.o = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)

    def forward(self, x, cos, sin, mask):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k(x).view(b, n, self.kv_heads, HEAD_DIM).transpose(1, 2)
        v = self.v(x).view(b, n, self.kv_heads, HEAD_DIM).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = HEADS // self.kv_heads
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(HEAD_DIM)
        probs = torch.softmax(scores + mask, dim=-1)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, n, HEADS * HEAD_DIM)
        return self.o(ctx)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(HIDDEN, FFN, bias=False)
        self.up = nn.Linear(HIDDEN, FFN, bias=False)
        self.down = nn.Linear(FFN, HIDDEN, bias=False)

    def forward(self, x):
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, kv_heads):
        super().__init__()
        self.attn_norm = RMSNorm()
        self.attn = Attention(kv_heads)
        self.mlp_norm = RMSNorm()
        self.mlp = Mlp()

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


class TinyLlm(nn.Module):
    def __init__(self, kv_heads):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.blocks = nn.ModuleList(Block(kv_heads) for _ in range(LAYERS))
        self.norm = RMSNorm()
        self.classifier = nn.Linear(HIDDEN, CLASSES)
        inv = 1.0 / (10000.0 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
        angles = torch.outer(torch.arange(MAX_POS).float(), inv)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        above = torch.triu(torch.ones(MAX_POS, MAX_POS, dtype=torch.bool), diagonal=1)
        causal = torch.zeros(MAX_POS, MAX_POS).masked_fill(above, torch.finfo(torch.float32).min)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, input_ids):
        n = input_ids.shape[1]
        x = self.embed(input_ids)
        cos, sin, mask = self.cos[:n], self.sin[:n], self.causal[:n, :n]
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        return self.classifier(self.norm(x)[:, -1])


def randomize(model, gen):
    """Non-trivial RMSNorm weights (the default is 1)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RMSNorm):
                m.weight.copy_(torch.rand(HIDDEN, generator=gen) * 0.8 + 0.6)


def export_torchscript(model, example, path):
    kwargs = dict(
        input_names=["input_ids"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
        opset_version=17,
        do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    torch.onnx.export(model, example, path, **kwargs)


def export_dynamo(model, example, path):
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("sequence", min=2, max=MAX_POS)
    torch.onnx.export(model, example, path, dynamo=True, external_data=False,
                      opset_version=18, input_names=["input_ids"], output_names=["logits"],
                      dynamic_shapes={"input_ids": {0: batch, 1: seq}})


def write_tensor(path, arr, name):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(arr), name).SerializeToString())


def main():
    setup_threads()
    summary = {}
    for prefix, kv_heads in (("llm", 4), ("mqa", 1)):
        torch.manual_seed(14 + kv_heads)
        gen = torch.Generator().manual_seed(1400 + kv_heads)
        model = TinyLlm(kv_heads)
        randomize(model, gen)
        model.eval()
        sets = [(torch.randint(0, VOCAB, (b, s), generator=gen),) for b, s in SETS]
        with torch.no_grad():
            refs = [model(*x).numpy() for x in sets]
        for suffix, export in (("ts", export_torchscript), ("dynamo", export_dynamo)):
            name = f"{prefix}_{suffix}"
            d = os.path.join(OUT, name)
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "model.onnx")
            export(model, sets[0], path)
            onnx.checker.check_model(onnx.load(path), full_check=True)
            sess = ort_session(path)
            worst = 0.0
            for k, (x, y) in enumerate(zip(sets, refs)):
                got = sess.run(None, {"input_ids": x[0].numpy()})[0]
                worst = max(worst, float(np.abs(got - y).max()))
                sd = os.path.join(d, f"test_data_set_{k}")
                os.makedirs(sd, exist_ok=True)
                write_tensor(os.path.join(sd, "input_0.pb"), x[0].numpy(), "input_ids")
                write_tensor(os.path.join(sd, "output_0.pb"), y, "logits")
            assert worst < 1e-4, (name, worst)
            m = onnx.load(path)
            summary[name] = {
                "ops": sorted({n.op_type for n in m.graph.node}),
                "opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                "bytes": os.path.getsize(path),
                "ort_vs_torch": worst,
            }
        summary[f"{prefix}_params"] = int(sum(p.numel() for p in model.parameters()))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
