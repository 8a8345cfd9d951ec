"""Tests of training.loop and training.batches: real contrastive training of the tiny open_clip model.

Every run trains the session's tiny config from scratch on a few dozen generated 32 px scenes, on the CPU
with one torch thread (the machine is shared; two threads fighting another job are much slower than one).
Checkpoints are written to tmp folders and loaded back through the same paths users take.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.errors import TrainingError
from retrieval.model.encoder import Encoder
from retrieval.model.loading import LoadedModel, load_model
from retrieval.model.specs import ModelSpec, identity_of
from retrieval.quality.captions import CaptionedDataset, load_captions
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.training.batches import epoch_batches, iterate_epoch
from retrieval.training.loop import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    RUN_LOG,
    TrainOptions,
    TrainProgress,
    TrainReport,
    evaluate,
    lr_at,
    train,
)
from tests import imagefactory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = TrainOptions(epochs=3, batch_size=8, lr=1e-3, warmup_steps=2, device="cpu", eval_every=1000, seed=0)
"""32 images in batches of 8: 4 steps per epoch, 12 in all; one evaluation (and save) at the end only."""
TOTAL_STEPS = 12

StateDict = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[CaptionedDataset, CaptionedDataset]:
    """(train, val): 32 and 16 generated 32 px scenes with 3 captions each."""
    folder = generate_dataset(
        tmp_path_factory.mktemp("train-scenes") / "data", seed=1, sizes={"train": 32, "val": 16}, image_size=32
    ).folder
    return load_captions(folder / "train.jsonl"), load_captions(folder / "val.jsonl")


@pytest.fixture(scope="module")
def full_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_spec: ModelSpec, scenes: tuple[CaptionedDataset, CaptionedDataset]
) -> TrainReport:
    """One uninterrupted run with BASE options, no validation data."""
    return train(tiny_spec, scenes[0], tmp_path_factory.mktemp("full") / "run", BASE)


def _weights(path: Path) -> StateDict:
    state: StateDict = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return state


def _initial_weights(spec: ModelSpec) -> StateDict:
    """The from-scratch model every run starts from (random weights are seeded, so every load is equal)."""
    model = load_model(spec, warn_random=False).model
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _with_weights(spec: ModelSpec, weights: StateDict) -> LoadedModel:
    loaded = load_model(spec, warn_random=False)
    loaded.model.load_state_dict({name: tensor.float() for name, tensor in weights.items()})
    loaded.model.eval()
    return loaded


def _training_error(spec: ModelSpec, data: CaptionedDataset, output: Path, options: TrainOptions, **kw: Any) -> str:
    with pytest.raises(TrainingError) as caught:
        train(spec, data, output, options, **kw)
    return str(caught.value)


def _val_images(data: CaptionedDataset, count: int) -> list[Image.Image]:
    images = []
    for path in data.images[:count]:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


# --- learning --------------------------------------------------------------------------------------------


def test_training_from_scratch_lowers_the_loss(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    """20 full-batch steps on 16 fixed scenes: the mean loss of the last 5 steps is well below the first 5."""
    data = scenes[0].head(16)
    losses: list[float] = []
    options = replace(BASE, epochs=20, batch_size=16, lr=2e-3)
    report = train(tiny_spec, data, tmp_path / "run", options, progress=lambda p: losses.append(p.loss))
    assert report.steps == report.total_steps == 20 == len(losses)
    assert all(math.isfinite(loss) for loss in losses)
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    assert last < 0.7 * first, losses
    assert report.final_loss == losses[-1]
    initial = _initial_weights(tiny_spec)
    trained = _weights(tmp_path / "run" / BEST_CHECKPOINT)
    assert not torch.equal(trained["visual.conv1.weight"], initial["visual.conv1.weight"])


# --- resuming --------------------------------------------------------------------------------------------


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    tiny_spec: ModelSpec, scenes: Any, full_run: TrainReport, tmp_path: Path
) -> None:
    """Stop after 5 steps (mid-epoch), resume without max_steps: steps 6..12 run and the final weights equal
    the uninterrupted run's (same batches, same crops, same optimizer state)."""
    output = tmp_path / "run"
    part = train(tiny_spec, scenes[0], output, replace(BASE, max_steps=5))
    assert (part.steps, part.total_steps, part.resumed_from) == (5, TOTAL_STEPS, 0)
    saved = torch.load(output / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
    assert saved["step"] == 5
    steps: list[int] = []
    resumed = train(tiny_spec, scenes[0], output, BASE, resume=True, progress=lambda p: steps.append(p.step))
    assert resumed.resumed_from == 5
    assert resumed.steps == TOTAL_STEPS == full_run.steps
    assert steps == list(range(6, TOTAL_STEPS + 1))
    assert [entry["step"] for entry in resumed.history] == [5, TOTAL_STEPS]
    ours, theirs = _weights(output / LAST_CHECKPOINT), _weights(full_run.output / LAST_CHECKPOINT)
    assert ours.keys() == theirs.keys()
    unequal = [name for name in ours if not torch.allclose(ours[name], theirs[name], rtol=0, atol=1e-7)]
    assert unequal == []
    assert resumed.final_loss == pytest.approx(full_run.final_loss, abs=1e-6)


def test_resuming_a_finished_run_trains_no_further(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    """resume=True on a completed run: no step, no rewrite of the checkpoints."""
    output = tmp_path / "run"
    options = replace(BASE, epochs=1, batch_size=16)
    train(tiny_spec, scenes[0], output, options)
    before = {name: (output / name).read_bytes() for name in (BEST_CHECKPOINT, LAST_CHECKPOINT)}
    steps: list[int] = []
    report = train(tiny_spec, scenes[0], output, options, resume=True, progress=lambda p: steps.append(p.step))
    assert (report.resumed_from, report.steps, steps) == (2, 2, [])
    assert {name: (output / name).read_bytes() for name in before} == before


def test_existing_run_without_resume_is_refused(tiny_spec: ModelSpec, scenes: Any, full_run: TrainReport) -> None:
    """A folder holding a run is never overwritten: the message says to pass --resume."""
    before = (full_run.output / LAST_CHECKPOINT).read_bytes()
    message = _training_error(tiny_spec, scenes[0], full_run.output, BASE)
    assert "--resume" in message and str(full_run.output) in message
    assert (full_run.output / LAST_CHECKPOINT).read_bytes() == before


def test_resume_with_nothing_there_is_refused(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    message = _training_error(tiny_spec, scenes[0], tmp_path / "empty", BASE, resume=True)
    assert "nothing to resume" in message and LAST_CHECKPOINT in message


def test_resume_with_other_options_data_or_model_is_refused(
    tiny_spec: ModelSpec, tiny_config: Path, scenes: Any, full_run: TrainReport, tmp_path: Path
) -> None:
    """Each difference is named (old and new value); runtime-only options (max_steps, eval_every) are not one."""
    output = full_run.output
    message = _training_error(tiny_spec, scenes[0], output, replace(BASE, lr=2e-3), resume=True)
    assert "lr=0.001" in message and "now 0.002" in message
    message = _training_error(tiny_spec, scenes[0], output, replace(BASE, epochs=4, seed=5), resume=True)
    assert "epochs=3" in message and "seed=0" in message
    message = _training_error(tiny_spec, scenes[1], output, BASE, resume=True)
    assert "training data" in message
    checkpoint = shutil.copy(output / BEST_CHECKPOINT, tmp_path / "other.pt")
    message = _training_error(ModelSpec(str(tiny_config), str(checkpoint)), scenes[0], output, BASE, resume=True)
    assert "model" in message and "random weights" in message
    runtime_only = replace(BASE, max_steps=TOTAL_STEPS, eval_every=3, val_images=5)
    assert train(tiny_spec, scenes[0], output, runtime_only, resume=True).steps == TOTAL_STEPS


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


# --- checkpoints -----------------------------------------------------------------------------------------


def test_best_checkpoint_loads_in_the_encoder(
    tiny_spec: ModelSpec, tiny_config: Path, scenes: Any, full_run: TrainReport
) -> None:
    """best.pt is an open_clip checkpoint: the Encoder names it by content hash and its vectors are those of the
    trained weights (computed here straight from last.pt, which holds the same step without validation)."""
    best = full_run.best_checkpoint
    assert best == full_run.output / BEST_CHECKPOINT and full_run.best_step == TOTAL_STEPS
    trained = _weights(full_run.output / LAST_CHECKPOINT)
    assert all(torch.equal(tensor, trained[name]) for name, tensor in _weights(best).items())
    encoder = Encoder(ModelSpec(str(tiny_config), str(best)), device="cpu")
    assert encoder.identity.weights == f"checkpoint sha256:{hashlib.sha256(best.read_bytes()).hexdigest()[:16]}"
    assert encoder.identity.architecture == identity_of(tiny_spec).architecture
    texts = ["a small red circle on the left of a plain blue background", "three large green crosses"]
    images = _val_images(scenes[1], 4)
    text_vectors, image_vectors = encoder.encode_texts(texts), encoder.encode_images(images)
    reference = _with_weights(tiny_spec, trained)
    with torch.no_grad():
        expected_text = reference.model.encode_text(reference.tokenizer(texts))
        expected_image = reference.model.encode_image(torch.stack([reference.eval_transform(i) for i in images]))
    expected_text = torch.nn.functional.normalize(expected_text, dim=-1).numpy()
    expected_image = torch.nn.functional.normalize(expected_image, dim=-1).numpy()
    np.testing.assert_allclose(text_vectors, expected_text, atol=1e-5)
    np.testing.assert_allclose(image_vectors, expected_image, atol=1e-5)
    untrained = Encoder(tiny_spec, device="cpu").encode_texts(texts)
    assert not np.allclose(untrained, text_vectors, atol=1e-3)


def test_fp16_weights_give_a_smaller_best_checkpoint_that_loads(
    tiny_spec: ModelSpec, tiny_config: Path, scenes: Any, full_run: TrainReport, tmp_path: Path
) -> None:
    """fp16_weights=True: best.pt holds float16 tensors, is much smaller, and loads into a float32 model whose
    vectors match the full-precision weights of the same run."""
    output = tmp_path / "run"
    train(tiny_spec, scenes[0], output, replace(BASE, epochs=1, batch_size=16, fp16_weights=True))
    half = _weights(output / BEST_CHECKPOINT)
    assert {t.dtype for t in half.values() if t.is_floating_point()} == {torch.float16}
    assert (output / BEST_CHECKPOINT).stat().st_size < 0.6 * full_run.best_checkpoint.stat().st_size
    loaded = load_model(ModelSpec(str(tiny_config), str(output / BEST_CHECKPOINT)), warn_random=False)
    for name, tensor in loaded.model.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, half[name].float()), name
    texts = ["two tiny white stars at the top", "a big black square in the middle"]
    from_half = Encoder(ModelSpec(str(tiny_config), str(output / BEST_CHECKPOINT)), device="cpu").encode_texts(texts)
    full = _with_weights(tiny_spec, _weights(output / LAST_CHECKPOINT))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(full.model.encode_text(full.tokenizer(texts)), dim=-1).numpy()
    cosines = (from_half * expected).sum(axis=1)
    assert cosines.min() > 0.999


# --- locked towers ---------------------------------------------------------------------------------------


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
    before, after = _initial_weights(tiny_spec), _weights(tmp_path / "run" / LAST_CHECKPOINT)
    assert not any(_changed(before, after, ("visual.",), inside=True))
    text_changed = _changed(before, after, TEXT_PARAMS, inside=True)
    assert text_changed and all(text_changed)


def test_lock_text_trains_only_the_image_tower(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    train(tiny_spec, scenes[0], tmp_path / "run", replace(BASE, epochs=1, lock_text=True))
    before, after = _initial_weights(tiny_spec), _weights(tmp_path / "run" / LAST_CHECKPOINT)
    assert not any(_changed(before, after, TEXT_PARAMS, inside=True))
    assert any(_changed(before, after, ("visual.",), inside=True))


def test_locking_both_towers_is_refused(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    message = _training_error(tiny_spec, scenes[0], tmp_path / "run", replace(BASE, lock_image=True, lock_text=True))
    assert "lock" in message and "both" in message
    assert not (tmp_path / "run").exists()


# --- bad data, progress, logs ----------------------------------------------------------------------------


def test_unreadable_images_are_skipped_and_reported(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    """A zero-byte and a truncated JPEG among 8 images: training runs to the end and names both files once."""
    folder = generate_dataset(tmp_path / "data", seed=2, sizes={"train": 8}, image_size=32).folder
    empty = imagefactory.zero_byte(folder / "images" / "train" / "000002.jpg")
    cut = imagefactory.truncated_jpeg(folder / "images" / "train" / "000005.jpg")
    data = load_captions(folder / "train.jsonl")
    losses: list[float] = []
    options = replace(BASE, epochs=2, batch_size=4)
    report = train(tiny_spec, data, tmp_path / "run", options, progress=lambda p: losses.append(p.loss))
    assert report.steps == report.total_steps == 4
    assert all(math.isfinite(loss) for loss in losses)
    # Listed once each (both epochs met them), with the decoder's reason.
    assert sorted(path for path, _ in report.skipped_images) == [str(empty), str(cut)]
    reasons = dict(report.skipped_images)
    assert "zero-byte" in reasons[str(empty)]
    assert "truncated" in reasons[str(cut)]
    assert (tmp_path / "run" / BEST_CHECKPOINT).is_file()


def test_progress_and_run_log_report_steps_and_validation(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    """eval_every=2 over 4 steps: progress for steps 1..4 with the scheduled lr, val recall at 2 and 4; train.json
    and the report hold that history, and best.pt's weights reproduce the best validation recall."""
    train_data, val_data = scenes
    options = replace(BASE, epochs=1, eval_every=2)
    seen: list[TrainProgress] = []
    report = train(tiny_spec, train_data, tmp_path / "run", options, val_data=val_data, progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert all(p.total_steps == 4 and p.epoch == 0 for p in seen)
    assert [p.lr for p in seen] == [lr_at(step, options, 4) for step in range(4)]
    assert [p.val is not None for p in seen] == [False, True, False, True]
    log = json.loads((tmp_path / "run" / RUN_LOG).read_text())
    assert [entry["step"] for entry in log["history"]] == [2, 4] == [entry["step"] for entry in report.history]
    for entry, progress in zip(log["history"], (seen[1], seen[3]), strict=True):
        assert progress.val is not None
        assert entry["val"]["mean"] == pytest.approx(progress.val.mean)
        assert entry["loss"] == pytest.approx(progress.loss)
        assert all(0 <= value <= 100 for value in progress.val.text_to_image.values())
    means = {entry["step"]: entry["val"]["mean"] for entry in log["history"]}
    assert log["best_step"] == report.best_step == max(means, key=lambda step: (means[step], -step))
    assert log["options"]["lr"] == options.lr and log["train_images"] == 32 and log["val_images"] == 16
    assert str((tmp_path / "run" / BEST_CHECKPOINT).resolve()) in log["use_with"]
    best = _with_weights(tiny_spec, _weights(tmp_path / "run" / BEST_CHECKPOINT))
    assert report.best_val is not None
    again = evaluate(best, val_data, "cpu")
    assert again.text_to_image == pytest.approx(report.best_val.text_to_image)
    assert again.image_to_text == pytest.approx(report.best_val.image_to_text)


def test_learning_rate_warms_up_then_decays_by_cosine() -> None:
    """lr_at: linear warmup over 10 steps to lr, then half a cosine to ~0 at the last of 110 steps."""
    options = TrainOptions(lr=1.0, warmup_steps=10)
    assert lr_at(0, options, 110) == pytest.approx(0.1)
    assert lr_at(4, options, 110) == pytest.approx(0.5)
    assert lr_at(9, options, 110) == pytest.approx(1.0)
    assert lr_at(10, options, 110) == pytest.approx(1.0)
    assert lr_at(60, options, 110) == pytest.approx(0.5)
    assert lr_at(109, options, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert lr_at(110, options, 110) == pytest.approx(0.0, abs=1e-12)
    after_warmup = [lr_at(step, options, 110) for step in range(10, 110)]
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))
    # Warmup longer than the run is cut to the run; no warmup starts at the full rate.
    assert lr_at(0, TrainOptions(lr=1.0, warmup_steps=100), 5) == pytest.approx(0.25)
    assert lr_at(0, TrainOptions(lr=1.0, warmup_steps=0), 5) == pytest.approx(1.0)
