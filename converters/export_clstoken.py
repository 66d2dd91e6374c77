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

Usage (from the repository root): /work/torch-venv/bin/python converters/export_clstoken.py
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import VisionTransformer

sys.path.insert(0, os.path.dirname(__file__))
from common import setup_threads  # noqa: E402
from export_transformers import FIXTURE_DEPTH, ViT, export_all  # noqa: E402


class TimmClsViT(ViT):
    """timm's `_pos_embed`: the class token expanded to the batch, concatenated, then pos."""

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        x = self.blocks(x)
        return self.head(self.norm(x)[:, 0])


def perturb(model, gen):
    """Trained-looking weights: LayerNorm affine terms away from 1 / 0, a visible class token
    and positional embedding (torchvision initialises the class token to zeros)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        for name, p in model.named_parameters():
            if "class_token" in name or "cls_token" in name or "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
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
    model = TimmClsViT("timm", FIXTURE_DEPTH)
    perturb(model, torch.Generator().manual_seed(511))
    return model


def main():
    setup_threads()
    out = os.path.join("fixtures", "transformers")
    summary = {}
    for name, make, channels in [("tv_vit", tv_vit, 3), ("timm_cls", timm_cls, 1)]:
        model = make().eval()
        gen = torch.Generator().manual_seed(520)
        summary[name] = export_all(model, os.path.join(out, name), gen, channels=channels)
        summary[name]["params"] = int(sum(p.numel() for p in model.parameters()))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
