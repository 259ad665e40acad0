"""Token classification: CoNLL/CoNLL-U reading, label alignment, entity F1 and an IMP run on a tiny BERT."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, BertConfig

from hf_lottery.foundations.errors import LotteryError
from hf_lottery.foundations.storage import read_json
from hf_lottery.lottery.config import DataArguments, RunConfig
from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from hf_lottery.training.tasks import get_task_kind
from hf_lottery.training.tasks import token_classification as tc
from hf_lottery.training.tasks import token_metrics as tm
from hf_lottery.training.tasks import token_readers as tr

# The path of tests/helpers.py's SHARED, spelled out so that this file imports nothing but the package.
EWT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ud-english-ewt"
needs_ewt = pytest.mark.skipif(
    not EWT.is_dir(), reason="../shared/data/ud-english-ewt is absent (see ../shared/README.md)"
)

KIND = get_task_kind("token-classification")


def conllu(sentences: list[list[tuple[str, str]]]) -> str:
    """CoNLL-U text of (word, tag) sentences, the tag in the UPOS column."""
    blocks = []
    for n, sentence in enumerate(sentences):
        lines = [f"# sent_id = {n}"]
        lines += [f"{i}\t{w}\t{w}\t{t}\t_\t_\t0\t_\t_\t_" for i, (w, t) in enumerate(sentence, 1)]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def load(train: Path, dev: Path | None = None, **kw):
    return KIND.load_data(DataArguments(train_file=str(train), validation_file=str(dev or train), **kw))


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- scoring ---------------------------------------------------------------------------------------------


def test_entities_follow_conlleval():
    # I-X after O starts an entity; I-X after I-X continues it; B-X after I-X starts a new one.
    assert tm.entities(["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == {(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")}
    # I-Y after X starts a Y entity; an entity open at the end is closed there.
    assert tm.entities(["B-PER", "I-LOC", "I-LOC"]) == {(0, 1, "PER"), (1, 3, "LOC")}
    assert tm.entities(["O", "O"]) == set()


def test_entity_f1_by_hand():
    # Gold: PER(0-2), LOC(3-4); ORG(1-3). Predicted: PER right, ORG where LOC is (type mismatch: wrong),
    # and ORG(1-3) written I-ORG I-ORG after O: an entity that matches. 2 of 3 right both ways.
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "I-ORG", "I-ORG"]]
    scores = tm.entity_f1(gold, pred)
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})

    # Gold: PER(0-3), LOC(4-6). Predicted: PER(0-1), LOC(1-3) (I-LOC after PER), LOC(4-6): 1 of 3 predicted
    # right, 1 of 2 gold found; F1 = 2 * 1/3 * 1/2 / (1/3 + 1/2) = 0.4.
    gold = [["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "I-LOC", "I-LOC", "O", "B-LOC", "I-LOC"]]
    assert tm.entity_f1(gold, pred) == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4})

    assert tm.entity_f1([["B-PER"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_token_accuracy_and_metric_choice():
    gold = [["NOUN", "VERB", "PUNCT"], ["DET"]]
    pred = [["NOUN", "NOUN", "PUNCT"], ["DET"]]
    assert tm.token_accuracy(gold, pred) == {"accuracy": 0.75}
    assert tm.tag_metrics(gold, pred, entity_level=False) == {"accuracy": 0.75}
    both = tm.tag_metrics([["B-PER", "O"]], [["B-PER", "B-PER"]], entity_level=True)
    assert both == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "accuracy": 0.5})
    assert tm.tag_metric(["B-PER", "I-PER", "O"]).name == "f1"
    assert tm.tag_metric(["B-PER", "NOUN", "O"]).name == "accuracy"
    assert tm.tag_metric(["O"]).name == "accuracy"  # no entity tag: nothing to find
    assert tm.tag_metric(["NOUN", "VERB"]).name == "accuracy"


# --- reading -----------------------------------------------------------------------------------------------


@needs_ewt
def test_real_ud_ewt_dev_file():
    path = EWT / "en_ewt-ud-dev.conllu"
    data = load(path)
    words = data.train.tokens
    assert len(words) == 2001 and sum(map(len, words)) == 25147
    assert data.num_labels == 17 and data.metric.name == "accuracy"
    assert {"NOUN", "PUNCT", "VERB", "PROPN", "X"} <= set(data.label_names) and "_" not in data.label_names
    assert all(len(w) == len(t) for w, t in zip(words, data.train.tags, strict=True))
    assert "didn't" not in {w for sentence in words for w in sentence}  # a multiword token's surface form
    assert tr.read_conllu(path, "xpos", limit=10)[0] == words[:10]
    assert len(load(path, max_train_samples=100, max_eval_samples=7).validation.tokens) == 7


def test_conllu_skips_multiword_and_empty_nodes_and_reads_xpos(tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(
        "# text = I don't go.\n"
        "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n"
        "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_\n"
        "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
        "3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t_\t_\n"
        "4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n"
        "\n"
        "1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_\n",  # the last sentence has no blank line after it
        encoding="utf-8",
    )
    data = load(path)
    assert data.train.tokens == [["I", "do", "n't", "go"], ["Yes"]]
    assert data.label_names == ["AUX", "INTJ", "PART", "PRON", "VERB"]
    assert data.train.tags == [[3, 0, 2, 4], [1]]
    assert load(path, label_column="XPOS").label_names == ["PRP", "RB", "UH", "VB", "VBP"]


def test_conll_files_with_docstart_and_tabs(tmp_path):
    path = tmp_path / "ner.conll"
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\nBlackburn NNP I-PER\n")
    data = load(path)
    assert data.train.tokens == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert data.label_names == ["B-ORG", "B-PER", "I-PER", "O"] and data.metric.name == "f1"
    assert load(path, label_column="2").label_names == ["NNP", "VBZ"]
    tabs = tmp_path / "tabs.conll"
    tabs.write_text("New York\tB-LOC\nis\tO\n")  # a tab-separated token may hold a space
    assert load(tabs).train.tokens == [["New York", "is"]]
    assert KIND.claims(DataArguments(train_file=str(tabs), validation_file=str(tabs)))
    assert KIND.claims(DataArguments(train_file="X.CONLLU", validation_file="x.conllu"))
    assert not KIND.claims(DataArguments(train_file="x.tsv", validation_file="x.tsv"))
    assert not KIND.claims(DataArguments(dataset_name="conll2003"))


WORD_LINE = "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("empty.conllu", "", "no sentences"),
        ("comments.conllu", "# only a comment\n\n", "no sentences"),
        ("cols.conllu", WORD_LINE + "2\tgo\tgo\tVERB\n", "line 2 has 4 tab-separated columns"),
        ("id.conllu", "x" + WORD_LINE[1:], "line 1 has ID 'x'"),
        ("notag.conll", "John B-PER\nsaid\n", "line 2 has no tag column"),
        ("width.conll", "John NNP B-PER\nsaid O\n", "line 2 has 2 columns, the first token line 3"),
        ("data.txt", "John B-PER\n", "unknown file type '.txt'"),
    ],
)
def test_bad_files_give_one_line(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LotteryError) as excinfo:
        load(path)
    message = one_line_error(excinfo)
    assert expected in message and str(path) in message


def test_validation_tags_must_occur_in_training_and_label_column_is_checked(tmp_path):
    train, dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    train.write_text("John B-PER\nsaid O\n")
    dev.write_text("Paris B-LOC\n\nJohn B-PER\nsaid B-MISC\n")
    with pytest.raises(LotteryError) as excinfo:
        load(train, dev)
    assert f"{dev}: line 1: tag 'B-LOC' does not occur" in one_line_error(excinfo)
    assert load(train, tmp_path / "train.conll", max_eval_samples=1).validation.tokens == [["John", "said"]]
    conllu_file = tmp_path / "x.conllu"
    conllu_file.write_text(conllu([[("I", "PRON")]]))
    for path, column in ((conllu_file, "lemma"), (train, "tag"), (train, "3")):
        with pytest.raises(LotteryError) as excinfo:
            load(path, label_column=column)
        assert "--label-column" in one_line_error(excinfo)


def fake_hub(monkeypatch, train: Dataset, validation: Dataset) -> DataArguments:
    """``load_hub_splits`` answered from memory: the Hub path with no network."""
    monkeypatch.setattr(tr, "load_hub_splits", lambda name, config, args: (train, validation, None))
    return DataArguments(dataset_name="someone/ner")


def test_hub_class_label_tags(monkeypatch):
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=["O", "B-PER"]))})
    split = Dataset.from_dict({"tokens": [["Ann", "said"], []], "ner_tags": [[1, 0], []]}, features=features)
    data = KIND.load_data(fake_hub(monkeypatch, split, split))
    assert data.label_names == ["O", "B-PER"] and data.metric.name == "f1" and data.num_labels == 2
    assert data.train.tokens == [["Ann", "said"]] and data.train.tags == [[1, 0]]  # the empty row is dropped


def test_hub_string_tags_and_length_mismatch(monkeypatch):
    train = Dataset.from_dict({"words": [["a", "b"], ["c"]], "pos": [["NOUN", "VERB"], ["DET"]]})
    args = dataclasses.replace(fake_hub(monkeypatch, train, train), text_columns=["words"], label_column="pos")
    data = KIND.load_data(args)
    assert data.label_names == ["DET", "NOUN", "VERB"] and data.train.tags == [[1, 2], [0]]
    assert data.metric.name == "accuracy"

    bad = Dataset.from_dict({"tokens": [["a"], ["b", "c", "d"]], "tags": [["O"], ["O", "O"]]})
    with pytest.raises(LotteryError) as excinfo:
        KIND.load_data(fake_hub(monkeypatch, bad, bad))
    assert one_line_error(excinfo) == "someone/ner (train): row 1 has 3 tokens but 2 tags"

    no_tags = Dataset.from_dict({"tokens": [["a"]], "label": [0]})
    with pytest.raises(LotteryError) as excinfo:
        KIND.load_data(fake_hub(monkeypatch, no_tags, no_tags))
    assert "set --label-column" in one_line_error(excinfo)


def test_refuses_a_head_for_other_tags_and_a_slow_tokenizer():
    data = SimpleNamespace(num_labels=3, label_names=["B-X", "I-X", "O"])
    config = BertConfig(architectures=["BertForTokenClassification"], num_labels=5)
    with pytest.raises(LotteryError) as excinfo:
        KIND.load_model("someone/ner-model", revision=None, data=data, model_config=config, log=print)
    assert "token-classification head for 5 labels" in one_line_error(excinfo)
    with pytest.raises(LotteryError) as excinfo:
        KIND.prepare(data, SimpleNamespace(is_fast=False), DataArguments(), None)
    assert "fast tokenizer" in one_line_error(excinfo)


# --- tokenising and evaluating ------------------------------------------------------------------------------------


def test_labels_go_to_the_first_sub_token(tiny_bert):
    assert tc.align_labels([None, 0, 0, 1, None], [3, 4]) == [-100, 3, -100, 4, -100]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    assert tokenizer.is_fast
    split = tr.TaggedSplit([["the", "good!", "film"]], [[0, 1, 2]])  # "good!" is two sub-tokens: good, !
    row = tc.tokenize_and_align(split, tokenizer, max_length=32)[0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens == ["[CLS]", "the", "good", "[UNK]", "film", "[SEP]"]
    assert row["labels"] == [-100, 0, 1, -100, 2, -100]
    short = tc.tokenize_and_align(split, tokenizer, max_length=4)[0]
    assert short["labels"] == [-100, 0, 1, -100]


class Oracle(torch.nn.Module):
    """A "model" whose logits point at the gold labels: evaluation must then score perfectly."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.num_labels = num_labels

    def forward(self, input_ids, labels, **_):
        return SimpleNamespace(logits=torch.nn.functional.one_hot(labels.clamp(min=0), self.num_labels).float())


def test_evaluate_scores_the_gold_tags_perfectly(tiny_bert, tmp_path):
    path = tmp_path / "ner.conll"
    path.write_text("the B-WORK\ngood! I-WORK\nfilm O\n\nplot B-WORK\n\nit O\nis O\n")
    data = load(path)
    args = DataArguments(train_file=str(path), validation_file=str(path), max_length=32)
    prepared = KIND.prepare(data, AutoTokenizer.from_pretrained(tiny_bert), args, Accelerator(cpu=True))
    assert set(prepared.validation.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    loader = DataLoader(prepared.validation, batch_size=2, collate_fn=prepared.eval_collator)
    metrics = prepared.evaluate(Oracle(data.num_labels), loader, Accelerator(cpu=True))
    assert metrics == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0}


# --- a whole run -------------------------------------------------------------------------------------------------

WORDS = ["the", "film", "movie", "story", "actor", "cast", "script", "music"]
QUALITIES = ["good", "great", "dull", "boring", "fine", "bad"]


def ner_sentences(count: int, offset: int) -> list[list[tuple[str, str]]]:
    """Toy NER: a work (film, movie, story; "story script" is one two-word work) or a person (actor, cast)."""
    sentences = []
    for n in range(offset, offset + count):
        thing = WORDS[1 + n % 7]
        kind = "PER" if thing in ("actor", "cast") else "WORK"
        sentence = [("the", "O"), (thing, f"B-{kind}")]
        if n % 3 == 0:
            sentence.append(("script", f"I-{kind}"))
        sentence += [("is" if n % 2 else "was", "O"), (QUALITIES[n % 6], "O")]
        sentences.append(sentence)
    return sentences


def test_imp_run_on_a_conllu_file(tiny_bert, tmp_path):
    train, dev = tmp_path / "train.conllu", tmp_path / "dev.conllu"
    train.write_text(conllu(ner_sentences(20, 0)))
    dev.write_text(conllu(ner_sentences(6, 20)))
    out = tmp_path / "run"
    config = RunConfig.build(
        "prune",
        model_name_or_path=str(tiny_bert),
        train_file=str(train),
        validation_file=str(dev),
        levels=1,
        prune_fraction=0.5,
        max_steps=3,
        batch_size=8,
        max_length=32,
        seed=0,
        output_dir=str(out),
    )
    rows = run_lottery(config)
    assert [(r.level, r.branch) for r in rows] == [(0, "imp"), (1, "imp")]
    assert all(r.metric == "f1" and 0.0 <= r.value <= 1.0 and {"precision", "recall"} <= set(r.scores) for r in rows)
    assert rows[0].sparsity == 0.0 and rows[1].sparsity == pytest.approx(0.5, abs=1e-3)
    assert read_json(RunPaths(out).config)["model"]["task_kind"] == "token-classification"
    model_config = read_json(RunPaths(out).model_files / "config.json")
    assert list(model_config["id2label"].values()) == ["B-PER", "B-WORK", "I-PER", "I-WORK", "O"]
