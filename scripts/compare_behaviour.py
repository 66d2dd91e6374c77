#!/usr/bin/env python3
"""Compares two output folders of scripts/behaviour.sh: model files must be byte-identical,
JSON reports equal once timings are dropped (run timings, per-epoch seconds, latency) and the
folders' own paths are masked, text
outputs equal. Exit 0 when everything matches, 1 with one line per difference otherwise."""
import json
import pathlib
import sys

TIMING_KEYS = {"timings", "seconds", "latency_ms", "latency_s"}


def strip(value, folder):
    """Drops timings and writes the output folder's own path as <out>."""
    if isinstance(value, dict):
        return {k: strip(v, folder) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [strip(v, folder) for v in value]
    if isinstance(value, str):
        return value.replace(str(folder.resolve()), "<out>").replace(str(folder), "<out>")
    return value


def first_difference(a, b, path="$"):
    if type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'second' if k not in a else 'first'}"
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def main(first, second):
    a, b = pathlib.Path(first), pathlib.Path(second)
    names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
    problems, same = [], 0
    for name in names:
        pa, pb = a / name, b / name
        if not pa.exists() or not pb.exists():
            problems.append(f"{name}: only in {'second' if not pa.exists() else 'first'}")
            continue
        if name.endswith(".svg") or name.endswith(".err"):
            continue  # drawings and stderr text are not behaviour
        if name.endswith(".json"):
            ja, jb = strip(json.loads(pa.read_text()), a), strip(json.loads(pb.read_text()), b)
            d = first_difference(ja, jb)
            if d:
                problems.append(f"{name}: {d}")
                continue
        elif name.endswith(".md"):
            continue  # the summary table quotes timings
        elif pa.read_bytes() != pb.read_bytes():
            problems.append(f"{name}: bytes differ")
            continue
        same += 1
    for p in problems:
        print(p)
    print(f"{same} outputs identical, {len(problems)} differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
