#!/usr/bin/env python3
"""Latency of a dense and a pruned ONNX model in ONNX Runtime (1 thread, CPU), median of runs.
Usage: OMP_WAIT_POLICY=passive python scripts/bench_ort.py DENSE.onnx PRUNED.onnx [RUNS]
Prints one JSON line per batch size (64 and 1)."""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def median_ms(path, batch, runs):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [batch] + [d for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sess.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[runs // 2]


def main():
    dense, pruned = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    for batch in (64, 1):
        d, p = median_ms(dense, batch, runs), median_ms(pruned, batch, runs)
        print(json.dumps({"runtime": "onnxruntime", "batch": batch, "dense_ms": d, "pruned_ms": p, "speedup": d / p}))


if __name__ == "__main__":
    main()
