"""ViTs whose class token is expanded to the batch size, as real ViT code writes it.

- `tv_vit`: torchvision's own `torchvision.models.VisionTransformer` (image 28, patch 7, 3 layers,
  hidden 64, 4 heads, MLP 128, 10 classes; random weights, seeded). Its forward writes
  `self.class_token.expand(n, -1, -1)` with `n = x.shape[0]`, then `torch.cat` on the token axis,
  and its encoder blocks use `nn.MultiheadAttention`.
- `timm_cls`: the timm-style ViT of `export_transformers.py` (qkv Linear attention) with timm's
  own class-token form `torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1) + pos_embed`
  (timm is not installed; this is the pattern of timm's `VisionTransformer._pos_embed`).

Each is exported by the TorchScript exporter (opset 17, `model.onnx`) and the dynamo exporter
(opset 18, `model.dynamo.onnx`) with a symbolic batch dim, into fixtures/transformers/<name>/,
with reference sets `test_data_set_0` (batch 1) and `test_data_set_1` (batch 3) holding
PyTorch's outputs; ONNX Runtime must reproduce them to 1e-4 (checked here).

`reexport OLD.onnx DATA_DIR` rebuilds the trained models/vit ViT from the weights of its first
export (TorchScript file, written with the padded class-token form) and writes it again in
timm's cat form as models/vit/model.onnx and model.dynamo.onnx (`export_transformers.finish`),
checking that the function is unchanged: same test-set predictions, logits within 1e-5.

Usage (from the repository root), with /work/torch-venv/bin/python:
  converters/export_clstoken.py                       # the fixtures
  converters/export_clstoken.py reexport models/vit/vit.onnx /usr/share/datasets/fashion-mnist
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import VisionTransformer

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
import onnx
from onnx import numpy_helper

from common import ort_session, setup_threads  # noqa: E402
from export_transformers import DEPTH, FIXTURE_DEPTH, ViT, evaluate, export_all, finish  # noqa: E402
from train_fashion import load_split  # noqa: E402


def perturb(model, gen):
    """Trained-looking weights: LayerNorm affine terms away from 1 / 0, a visible class token
    and positional embedding, and no all-zero matrix (torchvision initialises the class token
    and the classifier's weight to zeros, which would make the logits independent of the input)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        for name, p in model.named_parameters():
            if "class_token" in name or "cls_token" in name or "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif p.dim() >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith("bias") and "ln" not in name and "norm" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def tv_vit():
    torch.manual_seed(500)
    model = VisionTransformer(
        image_size=28, patch_size=7, num_layers=3, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10)
    perturb(model, torch.Generator().manual_seed(501))
    return model


def timm_cls():
    torch.manual_seed(510)
    model = ViT("timm", FIXTURE_DEPTH, cls="cat")
    perturb(model, torch.Generator().manual_seed(511))
    return model


def trained_weights(path):
    """The state dict of a ViT export: named initializers as they are, and each MatMul's
    weight (written as `onnx::MatMul_N`, [in, out]) named after the bias its output is added to."""
    g = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    state = {k: v for k, v in inits.items() if not k.startswith("onnx::")}
    for mm in (n for n in g.node if n.op_type == "MatMul" and n.input[1] in inits):
        add = next(n for n in g.node if n.op_type == "Add" and mm.output[0] in n.input)
        bias = next(i for i in add.input if i in state)
        state[bias[:-len("bias")] + "weight"] = inits[mm.input[1]].T.copy()
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def reexport(old, data):
    card_path = os.path.join("models", "vit", "card.json")
    with open(card_path) as f:
        card = json.load(f)
    model = ViT("timm", DEPTH, cls="cat")
    model.load_state_dict(trained_weights(old), strict=True)
    model.eval()
    xte, yte = load_split(data, "t10k")
    sess = ort_session(old)
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(xte), 1000):
            xb = xte[i:i + 1000]
            before = sess.run(None, {"input": xb.numpy()})[0]
            worst = max(worst, float(np.abs(model(xb).numpy() - before).max()))
    correct = evaluate(model, xte, yte)
    print(f"rebuilt: {correct} correct, logits vs {old} within {worst:.2e}")
    assert correct == round(card["test_accuracy_pytorch"] * len(xte)), correct
    assert worst < 1e-5, worst
    finish(model, xte, yte, card["epochs"], card["train_seconds"],
           card["per_epoch_test_accuracy"],
           reexported=f"weights of the first export ({os.path.basename(old)}, class token padded "
                      "in front and added with the positional embedding) written again in "
                      f"timm's cat form; logits within {worst:.1e} of it on the test set")


def expand_twice_the_batch(path):
    """A hand-made graph whose Expand target is twice the batch size: compress refuses it."""
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [
        h.make_node("Shape", ["x"], ["s"], start=0, end=1),
        h.make_node("Mul", ["s", "two"], ["s2"]),
        h.make_node("Concat", ["s2", "ones"], ["t"], axis=0),
        h.make_node("Expand", ["c", "t"], ["e"]),
        h.make_node("Add", ["e", "x"], ["y"]),
    ]
    consts = [numpy_helper.from_array(np.array([2], np.int64), "two"),
              numpy_helper.from_array(np.array([1, 1], np.int64), "ones"),
              numpy_helper.from_array(np.ones((1, 1, 4), np.float32), "c")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", tp.FLOAT, ["batch", 1, 4])],
                     [h.make_tensor_value_info("y", tp.FLOAT, None)], consts)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)


def main():
    setup_threads()
    if sys.argv[1:2] == ["reexport"]:
        reexport(sys.argv[2], sys.argv[3])
        return
    out = os.path.join("fixtures", "transformers")
    summary = {}
    for name, make, channels in [("tv_vit", tv_vit, 3), ("timm_cls", timm_cls, 1)]:
        model = make().eval()
        gen = torch.Generator().manual_seed(520)
        summary[name] = export_all(model, os.path.join(out, name), gen, channels=channels)
        summary[name]["params"] = int(sum(p.numel() for p in model.parameters()))
    expand_twice_the_batch(os.path.join(out, "expand_twice_the_batch.onnx"))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
