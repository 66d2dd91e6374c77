#!/usr/bin/env python3
"""Checks every pruned model written by the Rust tests (COMPRESS_EXPORT_DIR) with ONNX's own
checker (full_check) and ONNX Runtime: each case dir holds model.onnx, input_K.pb and the
masked reference's output_K.pb (computed by tract); ORT must agree within 1e-4."""
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def load(path):
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def main(root):
    cases = sorted(p for p in pathlib.Path(root).iterdir() if (p / "model.onnx").is_file())
    if not cases:
        print(f"no exported models under {root}")
        return 1
    failed = 0
    for case in cases:
        try:
            model = onnx.load(case / "model.onnx")
            onnx.checker.check_model(model, full_check=True)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(str(case / "model.onnx"), opts, providers=["CPUExecutionProvider"])
            feeds = {i.name: load(case / f"input_{k}.pb") for k, i in enumerate(sess.get_inputs())}
            outs = sess.run(None, feeds)
            worst = 0.0
            for k, got in enumerate(outs):
                want = load(case / f"output_{k}.pb")
                if got.shape != want.shape:
                    raise AssertionError(f"output {k}: shape {got.shape} vs {want.shape}")
                worst = max(worst, float(np.max(np.abs(got - want))))
            if worst > 1e-4:
                raise AssertionError(f"ONNX Runtime differs from the reference by {worst:.3e}")
            print(f"ok   {case.name}: checker passed, ORT max abs diff {worst:.2e}")
        except Exception as e:  # report every case, then fail
            failed += 1
            print(f"FAIL {case.name}: {e}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
