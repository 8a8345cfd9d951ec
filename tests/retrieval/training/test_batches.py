"""Tests of training.batches: which images go together, and the same batches again after a resume."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from retrieval.errors import TrainingError
from retrieval.model.loading import load_model
from retrieval.model.specs import ModelSpec
from retrieval.training.batches import Batch, batches_per_epoch, epoch_batches, iterate_epoch, iterate_steps

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_batches_of_a_resumed_epoch_are_the_same_whatever_ran_before(tiny_spec: ModelSpec, scenes: Any) -> None:
    """iterate_epoch from batch 2 yields exactly batches 2.. of the whole epoch (pixels, random crops included,
    and caption choice), even after the global torch RNG moved; and with worker processes as without."""
    loaded = load_model(tiny_spec, warn_random=False)
    common = {"batch_size": 8, "seed": 3, "epoch": 1, "transform": loaded.train_transform}
    common |= {"tokenizer": loaded.tokenizer}
    whole = list(iterate_epoch(scenes[0], start_batch=0, workers=0, **common))
    torch.rand(1000)
    tail = list(iterate_epoch(scenes[0], start_batch=2, workers=0, **common))
    assert len(whole) == 4 and len(tail) == 2
    for ours, theirs in zip(whole[2:], tail, strict=True):
        assert torch.equal(ours.pixels, theirs.pixels) and torch.equal(ours.tokens, theirs.tokens)
    in_workers = list(iterate_epoch(scenes[0], start_batch=0, workers=2, **common))
    assert all(torch.equal(a.pixels, b.pixels) for a, b in zip(whole, in_workers, strict=True))
    # The crops are random (otherwise the above would hold trivially): one image, two epochs, two crops.
    order = {epoch: [i for batch in epoch_batches(32, 8, 3, epoch) for i in batch] for epoch in (0, 1)}
    other_epoch = list(iterate_epoch(scenes[0], start_batch=0, workers=0, **(common | {"epoch": 0})))
    pixels = {0: torch.cat([b.pixels for b in other_epoch]), 1: torch.cat([b.pixels for b in whole])}
    image = order[0][0]
    assert not torch.equal(pixels[0][0], pixels[1][order[1].index(image)])


def test_epoch_batches_are_full_distinct_and_a_function_of_seed_and_epoch() -> None:
    """10 images in batches of 4: 2 full batches of distinct images (the last 2 images sit the epoch out);
    the same (seed, epoch) gives the same batches, another epoch another order; fewer than 2 images is refused."""
    batches = epoch_batches(10, 4, seed=7, epoch=0)
    assert [len(batch) for batch in batches] == [4, 4] and batches_per_epoch(10, 4) == 2
    assert len({i for batch in batches for i in batch}) == 8
    assert epoch_batches(10, 4, seed=7, epoch=0) == batches
    assert epoch_batches(10, 4, seed=7, epoch=1) != batches
    assert batches_per_epoch(3, 128) == 1
    with pytest.raises(TrainingError, match="at least 2 images"):
        batches_per_epoch(1, 4)


def test_steps_across_epochs_are_each_epochs_batches_in_turn(tiny_spec: ModelSpec, scenes: Any) -> None:
    """One loader over steps 2..8 (4 steps per epoch) gives epoch 0's batches from 2, all of epoch 1 and
    epoch 2's first, the same as epoch by epoch, pixels and captions alike, from worker processes too."""
    loaded = load_model(tiny_spec, warn_random=False)
    common = {"batch_size": 8, "seed": 3, "transform": loaded.train_transform, "tokenizer": loaded.tokenizer}
    by_epoch = [
        *iterate_epoch(scenes[0], epoch=0, start_batch=2, workers=0, **common),
        *iterate_epoch(scenes[0], epoch=1, start_batch=0, workers=0, **common),
        *list(iterate_epoch(scenes[0], epoch=2, start_batch=0, workers=0, **common))[:1],
    ]
    one_loader = list(iterate_steps(scenes[0], first_step=2, stop_step=9, workers=2, **common))
    assert len(one_loader) == len(by_epoch) == 7
    for ours, theirs in zip(one_loader, by_epoch, strict=True):
        assert torch.equal(ours.pixels, theirs.pixels) and torch.equal(ours.tokens, theirs.tokens)
    assert list(iterate_steps(scenes[0], first_step=5, stop_step=5, workers=0, **common)) == []


def test_a_batch_pins_every_tensor_it_carries() -> None:
    """What DataLoader's pin_memory calls on a batch: pixels, tokens and targets pinned (needs a GPU)."""
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs CUDA; this machine has no GPU")
    batch = Batch(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, dtype=torch.long), [], torch.eye(2))
    pinned = batch.pin_memory()
    assert pinned.pixels.is_pinned() and pinned.tokens.is_pinned()
    assert pinned.targets is not None and pinned.targets.is_pinned()
