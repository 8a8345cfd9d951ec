"""Tests of training.parameters: locked towers stay as they were; AdamW's groups follow open_clip's rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from retrieval.model.loading import load_model
from retrieval.model.specs import ModelSpec
from retrieval.training import TrainOptions, train
from retrieval.training.checkpoint import LAST_CHECKPOINT
from retrieval.training.parameters import lock_towers, make_optimizer
from tests.retrieval.training.runs import BASE, StateDict, initial_weights, training_error, weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _changed(before: StateDict, after: StateDict, prefix: tuple[str, ...], inside: bool) -> list[bool]:
    return [
        not torch.equal(before[name], after[name])
        for name in before
        if name.startswith(prefix) == inside and name != "logit_scale"
    ]


TEXT_PARAMS = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection")


def test_lock_image_trains_only_the_text_tower(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    """lock_image=True: every visual.* tensor is bit-identical to the initial model, text tensors moved."""
    train(tiny_spec, scenes[0], tmp_path / "run", replace(BASE, epochs=1, lock_image=True))
    before, after = initial_weights(tiny_spec), weights(tmp_path / "run" / LAST_CHECKPOINT)
    assert not any(_changed(before, after, ("visual.",), inside=True))
    text_changed = _changed(before, after, TEXT_PARAMS, inside=True)
    assert text_changed and all(text_changed)


def test_lock_text_trains_only_the_image_tower(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    train(tiny_spec, scenes[0], tmp_path / "run", replace(BASE, epochs=1, lock_text=True))
    before, after = initial_weights(tiny_spec), weights(tmp_path / "run" / LAST_CHECKPOINT)
    assert not any(_changed(before, after, TEXT_PARAMS, inside=True))
    assert any(_changed(before, after, ("visual.",), inside=True))


def test_locking_both_towers_is_refused(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    message = training_error(tiny_spec, scenes[0], tmp_path / "run", replace(BASE, lock_image=True, lock_text=True))
    assert "lock" in message and "both" in message
    assert not (tmp_path / "run").exists()


def test_optimizer_groups_exempt_gains_biases_and_temperature_from_decay(tiny_spec: ModelSpec) -> None:
    """Every trainable parameter is in exactly one group: matrices decay by weight_decay; biases, norms' gains
    and logit_scale not at all. A locked tower's parameters are in neither."""
    model = load_model(tiny_spec, warn_random=False).model
    options = TrainOptions(weight_decay=0.3, lr=0.01)
    no_decay, decay = make_optimizer(model, options).param_groups
    assert (no_decay["weight_decay"], decay["weight_decay"], decay["lr"]) == (0.0, 0.3, 0.01)
    grouped = {id(p): name for group, name in ((no_decay, "no"), (decay, "yes")) for p in group["params"]}
    named = dict(model.named_parameters())
    assert len(grouped) == len(no_decay["params"]) + len(decay["params"]) == len(named)
    assert grouped[id(named["logit_scale"])] == "no" and grouped[id(named["visual.conv1.weight"])] == "yes"
    assert all(grouped[id(p)] == "no" for name, p in named.items() if name.endswith(".bias") or p.ndim < 2)
    lock_towers(model, replace(options, lock_image=True))
    locked = {id(p) for group in make_optimizer(model, options).param_groups for p in group["params"]}
    assert not locked & {id(p) for name, p in named.items() if name.startswith("visual.")}
    assert id(named["text_projection"]) in locked
