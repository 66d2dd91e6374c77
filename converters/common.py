"""Shared helpers for the converter scripts (ONNX export, verification, model cards)."""
import inspect
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

OPSET = 17

# Ops the Rust side is expected to understand (shape helpers included).
ALLOWED_OPS = {
    "Conv", "BatchNormalization", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu",
    "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softmax",
    "LogSoftmax", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten",
    "Reshape", "Transpose", "Concat", "Pad", "Dropout", "Identity",
    "Constant", "Shape", "Gather", "Unsqueeze", "Cast",
}


def setup_threads(n=2):
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    torch.set_num_threads(n)


def count_params(model):
    """All parameters incl. biases and BN affine weights (BN running stats are buffers)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model, example):
    """MACs at batch 1: Conv = Cout*Hout*Wout*Cin/groups*kh*kw, Linear = in*out. Nothing else."""
    macs = [0]

    def conv_hook(m, inp, out):
        _, cout, hout, wout = out.shape
        kh, kw = m.kernel_size
        macs[0] += cout * hout * wout * (m.in_channels // m.groups) * kh * kw

    def lin_hook(m, inp, out):
        macs[0] += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        model(example[:1])
    for h in hooks:
        h.remove()
    return int(macs[0])


def export_onnx(model, example, path, opset=OPSET):
    """Export with the TorchScript-based exporter (dynamo=False), dynamic batch dim.

    training=PRESERVE: the model is in eval mode, so BatchNormalization is exported as an
    inference BN node (training_mode=0) and Dropout disappears; but the exporter's
    eval-mode peephole pass that would fuse Conv+BN is skipped, so BN nodes stay in the
    graph (the Rust side is supposed to handle/fold them).  Returns a description of the
    exporter used.
    """
    model.eval()
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.PRESERVE,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    torch.onnx.export(model, (example,), path, **kwargs)
    undedupe_initializers(path)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    return "torch.onnx.export(dynamo=False, TorchScript exporter) torch " + torch.__version__


def undedupe_initializers(path):
    """The TorchScript exporter deduplicates initializers with identical contents and replaces
    the duplicates by `Identity(initializer)` nodes.  (This happens e.g. in ResNet-20: the
    biases of bn2 and of the projection-shortcut BN of a downsampling block receive identical
    gradients -- they are summed -- and start at 0, so after Adam they are bit-identical.)
    Undo it: give every such Identity output its own copy of the initializer and drop the node,
    so every Conv/BN/Gemm parameter is a direct initializer.  Exact, semantics-preserving.
    Rewrites the file only if there is something to change.  Returns the number of nodes removed."""
    m = onnx.load(path)
    inits = {t.name: t for t in m.graph.initializer}
    keep, removed = [], 0
    for n in m.graph.node:
        if n.op_type == "Identity" and len(n.input) == 1 and n.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            m.graph.initializer.append(t)
            removed += 1
        else:
            keep.append(n)
    if removed:
        del m.graph.node[:]
        m.graph.node.extend(keep)
        onnx.checker.check_model(m)
        onnx.save(m, path)
    return removed


def onnx_info(path):
    m = onnx.load(path)
    ops = sorted({n.op_type for n in m.graph.node})
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    return ops, int(opset)


def write_test_data(dirpath, x, y):
    d = os.path.join(dirpath, "test_data_set_0")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "input_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(x), "input").SerializeToString())
    with open(os.path.join(d, "output_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(y), "logits").SerializeToString())


def ort_session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_run(sess, x):
    return sess.run(["logits"], {"input": x})[0]


def write_card(dirpath, card):
    with open(os.path.join(dirpath, "card.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
