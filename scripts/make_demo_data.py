"""Regenerate the demo task shipped in hf_lottery/demo_data/ (deterministic; run once, commit the files).

A toy sentiment task: a sentence of filler words with a few positive and negative words; the label
is 1 when positive words outnumber negative ones. Small enough that a tiny BERT learns it in seconds.
"""

import random
from pathlib import Path

POSITIVE = "good great fine superb lovely brilliant charming fun moving smart witty warm bright rich fresh".split()
NEGATIVE = "bad awful dull boring weak flat poor tired messy bland silly cold stale empty clumsy".split()
FILLER = ("the a film story plot cast scene music actor script movie ending pace tone work show one it this that "
          "is was and but with of to in very quite really so too rather").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentence(rng: random.Random) -> tuple[str, int]:
    while True:
        pos, neg = rng.randint(0, 3), rng.randint(0, 3)
        if pos != neg:
            break
    words = [rng.choice(POSITIVE) for _ in range(pos)] + [rng.choice(NEGATIVE) for _ in range(neg)]
    words += [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
    rng.shuffle(words)
    return " ".join(words), int(pos > neg)


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "hf_lottery" / "demo_data"
    rng = random.Random(0)
    for name, rows in (("train.tsv", 2000), ("dev.tsv", 400)):
        lines = ["sentence\tlabel"] + ["\t".join(map(str, sentence(rng))) for _ in range(rows)]
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "vocab.txt").write_text("\n".join(SPECIAL + POSITIVE + NEGATIVE + FILLER) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
