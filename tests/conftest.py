"""Shared fixtures: a tiny BERT saved to disk, the toy task's files, and a config builder.

Tests never reach the real Hub: before any Hugging Face library is imported, the Hub endpoint is set to a
port on 127.0.0.1 (where the test Hub server of ``tests/hub_server.py`` listens when a test asks for it,
and nothing answers otherwise), the cache goes to a temporary HF_HOME, and Xet uploads are off.
"""

import os
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_free_port()}"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-lottery-tests-hf-home-")
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from hf_lottery.commands.demo import build_tiny_bert  # noqa: E402
from tests.helpers import EOS, SENTENCES  # noqa: E402
from tests.hub_server import hub_server  # noqa: E402, F401  (the fixture)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with the demo vocabulary, saved as a pretrained (masked-LM) checkpoint."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), hidden_size=32, num_attention_heads=2)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state; each test may ask for another precision."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def text_files(tmp_path_factory) -> tuple[Path, Path]:
    """40 training and 20 validation documents, with blank lines between some of them (skipped)."""
    folder = tmp_path_factory.mktemp("text")
    train, valid = folder / "train.txt", folder / "valid.txt"
    train.write_text("\n\n".join(SENTENCES[:40]) + "\n", encoding="utf-8")
    valid.write_text("\n".join(SENTENCES[40:]) + "\n\n", encoding="utf-8")
    return train, valid


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 with a word-level tokenizer trained on the demo sentences, saved like a Hub checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[UNK]", EOS]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, bos_token=EOS, unk_token="[UNK]")
    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
