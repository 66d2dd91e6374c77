"""Writes fixtures/external/<name>/: a shipped model re-saved with external data.

The weights go to the side file `model.onnx.data` (ONNX's `data_location = EXTERNAL`, one file
for all tensors, every tensor external: `size_threshold=0`), as PyTorch's dynamo exporter and
every model over 2 GB write them. The test data set is copied unchanged; onnxruntime, run from
the file path, must reproduce its outputs.

Usage (from the repository root; needs only `onnx`, `onnxruntime` and `numpy`):
    python converters/make_external_data.py [SOURCE_DIR] [NAME]
Defaults: fixtures/patterns/conv_bn_relu_chain, conv_bn_relu_chain.
"""
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

SIDE_FILE = "model.onnx.data"


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else "fixtures/patterns/conv_bn_relu_chain"
    name = sys.argv[2] if len(sys.argv) > 2 else os.path.basename(source.rstrip("/"))
    out = os.path.join("fixtures", "external", name)
    os.makedirs(out, exist_ok=True)
    for stale in ("model.onnx", SIDE_FILE):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))

    model = onnx.load(os.path.join(source, "model.onnx"))
    path = os.path.join(out, "model.onnx")
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=SIDE_FILE,
        size_threshold=0,
    )
    onnx.checker.check_model(path, full_check=True)

    data = os.path.join(out, "test_data_set_0")
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(os.path.join(source, "test_data_set_0"), data)

    # Every initializer must really be external, and onnxruntime must read it from the path.
    stored = onnx.load(path, load_external_data=False)
    external = [t.name for t in stored.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and len(external) == len(stored.graph.initializer), external
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {}
    for i, inp in enumerate(sess.get_inputs()):
        t = onnx.TensorProto()
        with open(os.path.join(data, f"input_{i}.pb"), "rb") as f:
            t.ParseFromString(f.read())
        feeds[inp.name] = numpy_helper.to_array(t)
    got = sess.run(None, feeds)
    for i, g in enumerate(got):
        t = onnx.TensorProto()
        with open(os.path.join(data, f"output_{i}.pb"), "rb") as f:
            t.ParseFromString(f.read())
        diff = float(np.abs(g - numpy_helper.to_array(t)).max())
        assert diff < 1e-4, diff
        print(f"output {i}: max abs diff vs test data {diff:.2e}")
    sizes = {f: os.path.getsize(os.path.join(out, f)) for f in ("model.onnx", SIDE_FILE)}
    print(f"wrote {out}: {len(external)} external tensors, {sizes}")


if __name__ == "__main__":
    main()
