"""MaskedTrainingCallback: a plain transformers.Trainer keeps a ticket's pruned weights at exactly zero.

Accumulation, clipping and weight decay are all on, so each way a pruned weight could come back is exercised;
a control run without the callback shows that they do come back. The DDP case launches two CPU processes
with torchrun (run alone with ``pytest -m multiprocess``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_lottery import MaskedTrainingCallback
from hf_lottery.foundations.errors import LotteryError
from hf_lottery.pruning.masks import Mask, apply_mask
from hf_lottery.training.callback import check_unsharded
from tests.callback_worker import demo_dataset, load_model, random_mask, training_args

REPO = Path(__file__).resolve().parent.parent


class GradientObserver(TrainerCallback):
    """Record, after clipping and before the optimizer step, the largest gradient at a pruned position and the norm."""

    def __init__(self, mask: Mask) -> None:
        self.mask = mask
        self.pruned_grad_max: list[float] = []
        self.clipped_norms: list[float] = []

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        params = dict(kwargs["model"].named_parameters())
        self.pruned_grad_max.append(max(float(params[n].grad[~m].abs().max()) for n, m in self.mask.items()))
        norms = [p.grad.norm() for p in params.values() if p.grad is not None]
        self.clipped_norms.append(float(torch.linalg.vector_norm(torch.stack(norms))))


def record_clipping(trainer: Trainer, mask: Mask) -> list[tuple[float, float, float]]:
    """Wrap the accelerator's clip_grad_norm_ to record (norm it returns, norm of the masked grads, pruned max)."""
    seen: list[tuple[float, float, float]] = []
    clip = trainer.accelerator.clip_grad_norm_
    params = dict(trainer.model.named_parameters())

    def recording(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        grads = [p.grad for p in parameters if p.grad is not None]
        masked = [params[n].grad * m for n, m in mask.items()]
        masked_ids = {id(params[n]) for n in mask}
        dense = [p.grad for p in parameters if p.grad is not None and id(p) not in masked_ids]
        expected = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in masked + dense])))
        pruned = max(float(params[n].grad[~m].abs().max()) for n, m in mask.items())
        assert len(grads) == len(masked) + len(dense)
        norm = clip(parameters, max_norm, *args, **kwargs)
        seen.append((float(norm), expected, pruned))
        return norm

    trainer.accelerator.clip_grad_norm_ = recording
    return seen


def train(tiny_bert: Path, tmp_path: Path, callback: bool, **overrides) -> tuple[dict, dict, Mask, Trainer]:
    model = load_model(tiny_bert)
    mask = random_mask(model)
    apply_mask(model, mask)  # the control starts from the same zeros
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in mask}
    observer = GradientObserver(mask)
    callbacks = [MaskedTrainingCallback(mask), observer] if callback else [observer]
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path / ("masked" if callback else "control"), **overrides),
        train_dataset=demo_dataset(tiny_bert),
        callbacks=callbacks,
    )
    clipping = record_clipping(trainer, mask)
    trainer.train()
    after = {n: p.detach().clone() for n, p in model.named_parameters() if n in mask}
    trainer.observed = (observer, clipping)  # type: ignore[attr-defined]
    return before, after, mask, trainer


def bf16_on_cpu() -> bool:
    try:
        TrainingArguments(output_dir="unused", bf16=True, use_cpu=True, report_to=[])
    except (ValueError, ImportError):
        return False
    return True


@pytest.mark.parametrize(
    "bf16",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(not bf16_on_cpu(), reason="this transformers refuses bf16=True on CPU"),
        ),
    ],
)
def test_pruned_weights_stay_zero_and_clipping_sees_masked_gradients(tiny_bert, tmp_path, bf16):
    # A low clipping threshold, so that clipping scales every step's gradients (their norms are below 1 here).
    before, after, mask, trainer = train(tiny_bert, tmp_path, callback=True, bf16=bf16, max_grad_norm=0.1)
    assert trainer.state.global_step == 4 and trainer.accelerator.mixed_precision == ("bf16" if bf16 else "no")
    for name, m in mask.items():
        assert torch.equal(after[name][~m], torch.zeros_like(after[name][~m])), name
        assert (after[name][m] != before[name][m]).float().mean() > 0.9, name  # the survivors trained
    observer, clipping = trainer.observed
    # After clipping, before the step: zero at every pruned position, so the hook ran before clipping.
    assert observer.pruned_grad_max == [0.0] * 4
    assert observer.clipped_norms == pytest.approx([0.1] * 4, rel=1e-4)
    assert len(clipping) == 4
    logged = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
    for (norm, expected, pruned), logged_norm in zip(clipping, logged, strict=True):
        assert pruned == 0.0  # what clip_grad_norm_ is handed is already masked
        assert norm == pytest.approx(expected, rel=1e-5)
        assert logged_norm == pytest.approx(norm, rel=1e-5)
        assert norm > 0.1  # so the clipping really scaled these gradients

    # The control: the same run without the callback brings pruned weights back.
    _, control, _, control_trainer = train(tiny_bert, tmp_path, callback=False, bf16=bf16, max_grad_norm=0.1)
    revived = sum(int((control[n][~m] != 0).sum()) for n, m in mask.items())
    assert revived > 0.9 * sum(int((~m).sum()) for m in mask.values())
    assert max(control_trainer.observed[0].pruned_grad_max) > 0


class NoRemasking(MaskedTrainingCallback):
    """The callback with its gradient hooks but without re-masking the weights after each step."""

    def on_optimizer_step(self, args, state, control, **kwargs) -> None:
        pass


@pytest.mark.parametrize("callback", [MaskedTrainingCallback, NoRemasking])
def test_momentum_from_a_dense_optimizer_does_not_revive_pruned_weights(tiny_bert, tmp_path, callback):
    """Masked gradients are not enough when the optimizer state comes from dense training: re-masking is."""
    model = load_model(tiny_bert)
    mask = random_mask(model)
    dataset = demo_dataset(tiny_bert)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    batch = {k: torch.tensor(v) for k, v in dataset[:8].items()}
    model(**batch).loss.backward()
    optimizer.step()  # one dense step: Adam's moments are nonzero everywhere
    optimizer.zero_grad()
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, max_steps=2),
        train_dataset=dataset,
        callbacks=[callback(mask)],
        optimizers=(optimizer, None),
    )
    trainer.train()
    params = dict(model.named_parameters())
    alive = sum(int((params[n][~m] != 0).sum()) for n, m in mask.items())
    if callback is MaskedTrainingCallback:
        assert alive == 0
    else:
        assert alive > 0.9 * sum(int((~m).sum()) for m in mask.values())


def test_a_mask_the_model_does_not_fit_is_one_line(tiny_bert, tmp_path):
    model = load_model(tiny_bert)
    mask = random_mask(model)
    name = next(iter(mask))
    for bad in ({**mask, "bert.encoder.layer.9.output.dense.weight": mask[name]}, {name: mask[name][:1]}):
        with pytest.raises(LotteryError) as error:
            Trainer(model=model, args=training_args(tmp_path), callbacks=[MaskedTrainingCallback(bad)])
        assert "\n" not in str(error.value) and "MaskedTrainingCallback" in str(error.value)


def test_a_mask_named_on_the_ddp_wrapper_finds_the_parameters(tiny_bert, tmp_path):
    model = load_model(tiny_bert)
    mask = random_mask(model)
    callback = MaskedTrainingCallback({f"module.{name}": m for name, m in mask.items()})
    callback.on_train_begin(training_args(tmp_path), TrainerState(), TrainerControl(), model=model)
    try:
        params = dict(model.named_parameters())
        assert all(torch.equal(params[n][~m], torch.zeros_like(params[n][~m])) for n, m in mask.items())
        assert pruned_gradient(model, mask) == 0  # every masked parameter's gradient is masked
    finally:
        callback.on_train_end(training_args(tmp_path), TrainerState(), TrainerControl(), model=model)
    assert pruned_gradient(model, mask) > 0  # and no longer once training ended


def pruned_gradient(model: torch.nn.Module, mask) -> float:
    """The gradient of one backward pass at the pruned positions, summed."""
    model.zero_grad()
    model(input_ids=torch.tensor([[2, 5, 7, 3]]), labels=torch.tensor([1])).loss.backward()
    params = dict(model.named_parameters())
    return sum(float(params[name].grad[~m].abs().sum()) for name, m in mask.items())


def test_sharded_training_is_refused(tiny_bert, tmp_path, monkeypatch):
    """FSDP needs several processes (Trainer refuses it in one), so the check is called directly."""
    model = load_model(tiny_bert)
    callback = MaskedTrainingCallback(random_mask(model))
    fsdp = TrainingArguments(output_dir=str(tmp_path), fsdp=True, use_cpu=True, report_to=[])
    with pytest.raises(LotteryError, match="^FSDP shards the parameters") as error:
        callback.on_train_begin(fsdp, TrainerState(), TrainerControl(), model=model)
    assert "\n" not in str(error.value)
    with pytest.raises(LotteryError, match="^DeepSpeed shards"):
        check_unsharded(SimpleNamespace(fsdp=None, deepspeed={"zero_optimization": {"stage": 3}}), model)
    # `accelerate launch --use_fsdp` reaches the Trainer through the accelerator's state, not the arguments.
    plain = training_args(tmp_path)
    check_unsharded(plain, model)
    monkeypatch.setitem(AcceleratorState._shared_state, "distributed_type", DistributedType.FSDP)
    with pytest.raises(LotteryError, match="^FSDP shards"):
        check_unsharded(plain, model)
    monkeypatch.setitem(AcceleratorState._shared_state, "distributed_type", DistributedType.DEEPSPEED)
    with pytest.raises(LotteryError, match="^DeepSpeed shards"):
        check_unsharded(plain, model)


@pytest.mark.multiprocess
def test_ddp_on_two_processes_keeps_pruned_weights_zero(tiny_bert, tmp_path):
    env = {**os.environ, "CALLBACK_MODEL": str(tiny_bert), "CALLBACK_OUT": str(tmp_path), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "tests.callback_worker"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    mask = {n: m.bool() for n, m in load_file(tmp_path / "mask.safetensors").items()}
    rank0, rank1 = load_file(tmp_path / "weights_rank0.safetensors"), load_file(tmp_path / "weights_rank1.safetensors")
    initial = load_model(tiny_bert).state_dict()
    assert set(mask) == set(rank0) and mask
    for name, m in mask.items():
        assert torch.equal(rank0[name][~m], torch.zeros_like(rank0[name][~m])), name
        assert torch.equal(rank0[name], rank1[name]), name  # the all-reduced masked gradients agree
        assert (rank0[name][m] != initial[name][m]).float().mean() > 0.9, name
