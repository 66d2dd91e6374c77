"""Writes labelled token data (JSONL, the format `compress --data FILE.jsonl` reads) with a label
a small encoder can learn, for training and pruning runs on the tiny BERT of export_bert.py.

The task ("which keyword"): every sequence starts with id 1 (a [CLS]-like token) and holds
random filler ids from 10 to 999 and, at one to three random positions after the first, the
keyword of its class: id 2 + label (4 classes, ids 2 to 5). The first token's output feeds the
classifier (the pooler reads token 0), so the model must attend from it to the keyword: a bag
of words, not a position, decides the label. Lengths are uniform in [MIN_LEN, MAX_LEN];
`attention_mask` is written on about half the lines and `token_type_ids` (0 on the first half,
1 on the rest) on about a third, so batches mix given and default fields. Classes are balanced
(label = line number mod 4, lines then shuffled).

Usage (from the repository root; plain Python, no torch needed):
    python3 converters/make_token_data.py                      # the committed 400-line fixture
    python3 converters/make_token_data.py --lines 20000 --seed 1 --out /tmp/keywords.jsonl
"""
import argparse
import json
import random

CLASSES = 4
FIRST_KEYWORD = 2
CLS = 1
FILLER = (10, 999)
MIN_LEN, MAX_LEN = 6, 16


def example(rng, label):
    n = rng.randint(MIN_LEN, MAX_LEN)
    ids = [CLS] + [rng.randint(*FILLER) for _ in range(n - 1)]
    for pos in rng.sample(range(1, n), rng.randint(1, 3)):
        ids[pos] = FIRST_KEYWORD + label
    line = {"input_ids": ids}
    if rng.random() < 0.5:
        line["attention_mask"] = [1] * n
    if rng.random() < 0.33:
        line["token_type_ids"] = [0] * (n // 2) + [1] * (n - n // 2)
    line["label"] = label
    return line


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="fixtures/transformers/keywords.jsonl")
    a = p.parse_args()
    rng = random.Random(a.seed)
    lines = [example(rng, i % CLASSES) for i in range(a.lines)]
    rng.shuffle(lines)
    with open(a.out, "w") as f:
        for line in lines:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
