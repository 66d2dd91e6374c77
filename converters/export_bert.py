"""Writes fixtures/transformers/bert_ts/ and fixtures/transformers/bert_dynamo/: a tiny
BERT-style encoder with random weights (fixed seed) and token inputs, as the two PyTorch
exporters write it, plus fixtures/transformers/bert_tokens.jsonl (labelled token data).

The encoder (written out as BERT does, not nn.TransformerEncoder):
- inputs `input_ids` [batch, seq] int64, `attention_mask` [batch, seq] int64 (1 = token,
  0 = padding), `token_type_ids` [batch, seq] int64;
- word (vocab 1000), position (Range over the sequence length) and token-type embeddings,
  summed, then LayerNorm;
- the additive mask built in the graph as BERT does: `(1 - mask) * finfo(float32).min`
  (Unsqueeze/Cast/Sub/Mul), added to the attention scores;
- 2 blocks: multi-head self-attention (4 heads of 8, q/k/v Linear, head split by
  Reshape/Transpose, softmax over keys, output projection, residual + LayerNorm) and an MLP
  (Linear 32->64, GELU (erf), Linear 64->32, residual + LayerNorm);
- pooler on the first token (Linear + Tanh) and a 4-class classifier -> `logits` [batch, 4].

`bert_ts`: TorchScript exporter (dynamo=False), opset 17. `bert_dynamo`: dynamo exporter,
opset 18. `bert_bool_dynamo`: the same weights with a bool `attention_mask`, the additive mask
made by `torch.where` (a Where on the bool input), dynamo exporter. Batch and sequence length
are symbolic in all three. Each directory gets `model.onnx` and
two reference sets: `test_data_set_0` (2 x 8 tokens) and `test_data_set_1` (3 x 13 tokens),
each with the three inputs (padding in the mask) and PyTorch's logits (the same for all
three); ONNX Runtime must reproduce them to 1e-4.

`bert_tokens.jsonl`: 64 lines of random token ids (lengths 5 to 16, so a batch pads), with
`attention_mask` on some lines, `token_type_ids` on some, and as `label` the model's own argmax
on the unpadded sequence, so `compress eval` on it has a known accuracy of 100% for the
unpruned model.

Usage (from the repository root): /work/torch-venv/bin/python converters/export_bert.py
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
HEADS = 4
FFN = 64
LAYERS = 2
MAX_POS = 64
CLASSES = 4
OUT = os.path.join("fixtures", "transformers")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
# (batch, sequence length) of the two reference sets.
SETS = [(2, 8), (3, 13)]


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(HIDDEN, HIDDEN)
        self.k = nn.Linear(HIDDEN, HIDDEN)
        self.v = nn.Linear(HIDDEN, HIDDEN)
        self.o = nn.Linear(HIDDEN, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.head_dim = HIDDEN // HEADS

    def heads(self, x):
        b, s, _ = x.shape
        return x.view(b, s, HEADS, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, additive_mask):
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores + additive_mask, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3)
        b, s = ctx.shape[0], ctx.shape[1]
        ctx = ctx.reshape(b, s, HIDDEN)
        return self.norm(x + self.o(ctx))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = SelfAttention()
        self.up = nn.Linear(HIDDEN, FFN)
        self.down = nn.Linear(FFN, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=1e-12)

    def forward(self, x, additive_mask):
        x = self.attn(x, additive_mask)
        return self.norm(x + self.down(nn.functional.gelu(self.up(x))))


class TinyBert(nn.Module):
    def __init__(self):
        super().__init__()
        # A bool attention mask (True = token) is turned into the additive mask by Where.
        self.bool_mask = False
        self.word = nn.Embedding(VOCAB, HIDDEN)
        self.position = nn.Embedding(MAX_POS, HIDDEN)
        self.token_type = nn.Embedding(2, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.pooler = nn.Linear(HIDDEN, HIDDEN)
        self.classifier = nn.Linear(HIDDEN, CLASSES)

    def forward(self, input_ids, attention_mask, token_type_ids):
        seq = input_ids.shape[1]
        positions = torch.arange(seq, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        x = self.norm(x)
        # [b, 1, 1, s]: 0 where attended, the most negative float where padded (as BERT).
        if self.bool_mask:
            additive = torch.where(attention_mask[:, None, None, :], 0.0, torch.finfo(x.dtype).min)
        else:
            mask = attention_mask[:, None, None, :].to(x.dtype)
            additive = (1.0 - mask) * torch.finfo(x.dtype).min
        for block in self.blocks:
            x = block(x, additive)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return self.classifier(pooled)


def randomize(model, gen):
    """Non-trivial LayerNorm affine parameters (the defaults are 1 and 0)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(HIDDEN, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(HIDDEN, generator=gen) * 0.1)


def example_inputs(gen, batch, seq):
    ids = torch.randint(1, VOCAB, (batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    types = torch.zeros(batch, seq, dtype=torch.long)
    for b in range(batch):
        # Row b has b padded tokens at the end and its second half as segment 1.
        if b:
            mask[b, seq - b:] = 0
            ids[b, seq - b:] = 0
        types[b, seq // 2:] = 1
    return ids, mask, types


def export_torchscript(model, example, path):
    kwargs = dict(
        input_names=INPUTS,
        output_names=["logits"],
        dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in INPUTS},
                      "logits": {0: "batch"}},
        opset_version=17,
        do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    torch.onnx.export(model, example, path, **kwargs)


def export_dynamo(model, example, path):
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("sequence", min=2, max=MAX_POS)
    shapes = {n: {0: batch, 1: seq} for n in INPUTS}
    torch.onnx.export(model, example, path, dynamo=True, external_data=False,
                      opset_version=18, input_names=INPUTS, output_names=["logits"],
                      dynamic_shapes=shapes)


def write_tensor(path, arr, name):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(arr), name).SerializeToString())


def write_jsonl(model, gen, path, lines=64):
    rows = []
    with torch.no_grad():
        for i in range(lines):
            n = int(torch.randint(5, 17, (1,), generator=gen))
            ids = torch.randint(1, VOCAB, (1, n), generator=gen)
            types = torch.zeros(1, n, dtype=torch.long)
            if i % 3 == 0:
                types[0, n // 2:] = 1
            label = int(model(ids, torch.ones(1, n, dtype=torch.long), types).argmax())
            row = {"input_ids": ids[0].tolist()}
            if i % 2 == 0:
                row["attention_mask"] = [1] * n
            if i % 3 == 0:
                row["token_type_ids"] = types[0].tolist()
            row["label"] = label
            rows.append(row)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    return [r["label"] for r in rows]


def main():
    setup_threads()
    torch.manual_seed(14)
    gen = torch.Generator().manual_seed(1400)
    model = TinyBert()
    randomize(model, gen)
    model.eval()
    sets = [example_inputs(gen, b, s) for b, s in SETS]
    with torch.no_grad():
        refs = [model(*x).numpy() for x in sets]
    summary = {}
    variants = (("bert_ts", export_torchscript, False), ("bert_dynamo", export_dynamo, False),
                ("bert_bool_dynamo", export_dynamo, True))
    for name, export, bool_mask in variants:
        model.bool_mask = bool_mask
        if bool_mask:
            sets = [(ids, mask.bool(), types) for ids, mask, types in sets]
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        export(model, sets[0], path)
        onnx.checker.check_model(onnx.load(path), full_check=True)
        sess = ort_session(path)
        worst = 0.0
        for k, (x, y) in enumerate(zip(sets, refs)):
            feeds = {n: t.numpy() for n, t in zip(INPUTS, x)}
            got = sess.run(None, feeds)[0]
            worst = max(worst, float(np.abs(got - y).max()))
            sd = os.path.join(d, f"test_data_set_{k}")
            os.makedirs(sd, exist_ok=True)
            for j, n in enumerate(INPUTS):
                write_tensor(os.path.join(sd, f"input_{j}.pb"), feeds[n], n)
            write_tensor(os.path.join(sd, "output_0.pb"), y, "logits")
        assert worst < 1e-4, (name, worst)
        m = onnx.load(path)
        summary[name] = {
            "ops": sorted({n.op_type for n in m.graph.node}),
            "opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
            "bytes": os.path.getsize(path),
            "ort_vs_torch": worst,
        }
    model.bool_mask = False
    labels = write_jsonl(model, gen, os.path.join(OUT, "bert_tokens.jsonl"))
    summary["jsonl_label_counts"] = [labels.count(c) for c in range(CLASSES)]
    summary["params"] = int(sum(p.numel() for p in model.parameters()))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
