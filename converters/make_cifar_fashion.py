#!/usr/bin/env python3
"""Write a 3x32x32 CIFAR-10-binary-format copy of Fashion-MNIST ("CIFAR-Fashion").

Usage:
  python converters/make_cifar_fashion.py OUT_DIR [--src /usr/share/datasets/fashion-mnist]

CIFAR-10 itself cannot be downloaded here; this gives the project real 3-channel 32x32 data
in the CIFAR binary layout that `compress` reads. Pure numpy (no torch), deterministic:

* Each 28x28 image is zero-padded by 2 pixels on every side to 32x32 (no resampling, so the
  Rust test in tests/rgb_model.rs reproduces the bytes exactly).
* Gray is turned into colour with a tint chosen by the image's index i in its split:
  TINTS[i % 8]; channel c is `(p * tint[c] + 127) // 255` (integer arithmetic, rounding half
  up). The tint depends on the index, not on the class: a per-class tint would give the label
  away through the colour.
* Records: 1 label byte, then the R, G and B planes (1024 bytes each, row-major), as in
  CIFAR-10. Train: data_batch_1.bin .. data_batch_5.bin, 12,000 images each (Fashion-MNIST's
  60,000 in order); test: test_batch.bin, the 10,000 test images in order.

Prints the size and SHA-256 of every file written, and the FNV-1a-64 hash of test_batch.bin
(what the Rust test compares, since FNV needs no hashing crate).
"""
import argparse
import gzip
import hashlib
import os
import struct

import numpy as np

SRC = "/usr/share/datasets/fashion-mnist"
# (R, G, B) tints, 0..255; white first, so index 0 of each split stays gray.
TINTS = np.array([
    (255, 255, 255), (255, 160, 96), (96, 160, 255), (160, 255, 96),
    (255, 96, 160), (96, 255, 208), (208, 96, 255), (255, 224, 128),
], dtype=np.uint32)
PAD = 2
TRAIN_FILES = 5


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    assert magic >> 8 == 0x08, hex(magic)
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def to_records(images, labels):
    """uint8 [N,28,28] + [N] -> CIFAR-10 records, bytes of N x 3073."""
    n = len(images)
    padded = np.zeros((n, 32, 32), dtype=np.uint32)
    padded[:, PAD:PAD + 28, PAD:PAD + 28] = images
    tint = TINTS[np.arange(n) % len(TINTS)]  # [N,3]
    planes = (padded[:, None, :, :] * tint[:, :, None, None] + 127) // 255  # [N,3,32,32]
    rec = np.empty((n, 1 + 3 * 1024), dtype=np.uint8)
    rec[:, 0] = labels
    rec[:, 1:] = planes.reshape(n, -1).astype(np.uint8)
    return rec.tobytes()


def fnv1a64(data):
    """FNV-1a, 64 bit, over the bytes (plain Python: about 10 s for test_batch.bin)."""
    h = 0xcbf29ce484222325
    prime = 0x100000001b3
    mask = (1 << 64) - 1
    for b in data:
        h = ((h ^ b) * prime) & mask
    return h


def write(path, data, fnv=False):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    extra = f" fnv1a64 {fnv1a64(data):016x}" if fnv else ""
    print(f"{os.path.basename(path)}: {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}{extra}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--src", default=SRC)
    ap.add_argument("--test-only", action="store_true", help="write test_batch.bin only")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    def split(prefix):
        x = read_idx(os.path.join(args.src, f"{prefix}-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(args.src, f"{prefix}-labels-idx1-ubyte.gz"))
        assert x.shape[1:] == (28, 28) and len(x) == len(y)
        return x, y

    xte, yte = split("t10k")
    write(os.path.join(args.out, "test_batch.bin"), to_records(xte, yte), fnv=True)
    if args.test_only:
        return
    xtr, ytr = split("train")
    per = len(xtr) // TRAIN_FILES
    records = to_records(xtr, ytr)  # indices run over the whole train split
    rec_len = 1 + 3 * 1024
    for k in range(TRAIN_FILES):
        write(os.path.join(args.out, f"data_batch_{k + 1}.bin"),
              records[k * per * rec_len:(k + 1) * per * rec_len])


if __name__ == "__main__":
    main()
