"""Regenerate the demo task shipped in hf_lottery/demo_data/ (deterministic; run once, commit the files).

A toy sentiment task: filler words with a few positive and negative words, some preceded by "not",
which flips them; the label is 1 when the sentiment adds up to positive. Word counts alone do not
solve it, so a tiny BERT has to use word order, and heavy pruning shows.
"""

import random
from pathlib import Path

POSITIVE = "good great fine superb lovely brilliant charming fun moving smart witty warm bright rich fresh".split()
NEGATIVE = "bad awful dull boring weak flat poor tired messy bland silly cold stale empty clumsy".split()
FILLER = (
    "the a film story plot cast scene music actor script movie ending pace tone work show one it this that "
    "is was and but with of to in very quite really so too rather"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "not"]


def sentence(rng: random.Random) -> tuple[str, int]:
    while True:
        phrases = [[rng.choice(POSITIVE)] for _ in range(rng.randint(0, 3))]
        phrases += [[rng.choice(NEGATIVE)] for _ in range(rng.randint(0, 3))]
        score = 0
        for phrase in phrases:
            sign = 1 if phrase[0] in POSITIVE else -1
            if rng.random() < 0.15:
                phrase.insert(0, "not")
                sign = -sign
            score += sign
        if score != 0:
            break
    phrases += [[rng.choice(FILLER)] for _ in range(rng.randint(4, 10))]
    rng.shuffle(phrases)
    return " ".join(word for phrase in phrases for word in phrase), int(score > 0)


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "hf_lottery" / "demo_data"
    rng = random.Random(0)
    for name, rows in (("train.tsv", 2000), ("dev.tsv", 400)):
        lines = ["sentence\tlabel"] + ["\t".join(map(str, sentence(rng))) for _ in range(rows)]
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "vocab.txt").write_text("\n".join(SPECIAL + POSITIVE + NEGATIVE + FILLER) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
