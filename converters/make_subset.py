#!/usr/bin/env python3
"""Write a deterministic Fashion-MNIST subset in the standard IDX gzip layout.

Takes the FIRST 10,000 training images/labels and the FIRST 2,000 test
images/labels (file order, no shuffling) from the full Fashion-MNIST IDX files
and writes them, byte-exact IDX (big-endian magic 0x00000803 for images,
0x00000801 for labels, big-endian uint32 dims, uint8 payload), gzip-compressed
with mtime=0 so the output is reproducible, under the standard file names.

Usage: python converters/make_subset.py [SRC_DIR] [OUT_DIR]
  SRC_DIR defaults to /usr/share/datasets/fashion-mnist
  OUT_DIR defaults to fixtures/data/fashion-mnist-subset (relative to repo root)
Only the Python standard library is needed.
"""
import gzip
import hashlib
import os
import struct
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN = 10_000
N_TEST = 2_000


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic >> 8 != 0x08:  # 0x000008xx: unsigned byte payload
        raise ValueError(f"{path}: unexpected magic {magic:#010x}")
    ndim = magic & 0xFF
    dims = list(struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]))
    payload = data[4 + 4 * ndim:]
    per_item = 1
    for d in dims[1:]:
        per_item *= d
    if len(payload) != dims[0] * per_item:
        raise ValueError(f"{path}: payload size mismatch")
    return magic, dims, per_item, payload


def write_idx(path, magic, dims, payload):
    ndim = magic & 0xFF
    assert len(dims) == ndim
    header = struct.pack(">I", magic) + struct.pack(">" + "I" * ndim, *dims)
    raw = header + payload
    with open(path, "wb") as fo:
        # mtime=0 and no file name in the gzip header -> reproducible bytes
        with gzip.GzipFile(filename="", mode="wb", fileobj=fo, mtime=0, compresslevel=9) as g:
            g.write(raw)
    return hashlib.sha256(raw).hexdigest()


def subset(src, dst, name, n, expect_magic):
    magic, dims, per_item, payload = read_idx(os.path.join(src, name))
    assert magic == expect_magic, (name, hex(magic))
    assert dims[0] >= n
    new_dims = [n] + dims[1:]
    digest = write_idx(os.path.join(dst, name), magic, new_dims, payload[: n * per_item])
    print(f"{name}: magic={magic:#010x} dims={new_dims} (of {dims[0]}) sha256(raw)={digest}")
    return new_dims, digest


README = """# Fashion-MNIST subset (test fixture)

Deterministic subset of Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence),
made by `converters/make_subset.py` from the Debian package `dataset-fashion-mnist`
(`/usr/share/datasets/fashion-mnist/*.gz`).

| file | content |
|---|---|
| train-images-idx3-ubyte.gz | first {n_train} training images (file order, indices 0..{n_train_m1}), 28x28 uint8 |
| train-labels-idx1-ubyte.gz | the matching first {n_train} training labels (0..9) |
| t10k-images-idx3-ubyte.gz | first {n_test} test images (indices 0..{n_test_m1}) |
| t10k-labels-idx1-ubyte.gz | the matching first {n_test} test labels |

Format: standard IDX, byte-exact: big-endian magic `0x00000803` (images, 3 dims)
or `0x00000801` (labels, 1 dim), then big-endian uint32 dims, then the uint8
payload; gzip with mtime=0 (reproducible). No shuffling, no preprocessing.

SHA-256 of the decompressed IDX bytes:

{hashes}
"""


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(REPO, "fixtures", "data", "fashion-mnist-subset")
    os.makedirs(dst, exist_ok=True)
    hashes = []
    for name, n, magic in [
        ("train-images-idx3-ubyte.gz", N_TRAIN, 0x00000803),
        ("train-labels-idx1-ubyte.gz", N_TRAIN, 0x00000801),
        ("t10k-images-idx3-ubyte.gz", N_TEST, 0x00000803),
        ("t10k-labels-idx1-ubyte.gz", N_TEST, 0x00000801),
    ]:
        _, digest = subset(src, dst, name, n, magic)
        hashes.append(f"- `{name}`: `{digest}`")
    with open(os.path.join(dst, "README.md"), "w") as f:
        f.write(README.format(n_train=N_TRAIN, n_train_m1=N_TRAIN - 1, n_test=N_TEST,
                              n_test_m1=N_TEST - 1, hashes="\n".join(hashes)))
    print("wrote", dst)


if __name__ == "__main__":
    main()
