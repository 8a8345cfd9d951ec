"""Tests of training.loop: real contrastive training of the tiny open_clip model, stopped and resumed."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import load_captions
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.training import TrainProgress, TrainReport, train
from retrieval.training.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT
from retrieval.training.evaluation import evaluate
from retrieval.training.runlog import RUN_LOG
from retrieval.training.schedule import lr_at
from tests import imagefactory
from tests.retrieval.training.runs import BASE, TOTAL_STEPS, initial_weights, training_error, weights, with_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    initial = initial_weights(tiny_spec)
    trained = weights(tmp_path / "run" / BEST_CHECKPOINT)
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
    ours, theirs = weights(output / LAST_CHECKPOINT), weights(full_run.output / LAST_CHECKPOINT)
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
    message = training_error(tiny_spec, scenes[0], full_run.output, BASE)
    assert "`resume`" in message and str(full_run.output) in message
    assert (full_run.output / LAST_CHECKPOINT).read_bytes() == before


def test_resume_with_nothing_there_is_refused(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    message = training_error(tiny_spec, scenes[0], tmp_path / "empty", BASE, resume=True)
    assert "nothing to resume" in message and LAST_CHECKPOINT in message


def test_resume_with_other_options_data_or_model_is_refused(
    tiny_spec: ModelSpec, tiny_config: Path, scenes: Any, full_run: TrainReport, tmp_path: Path
) -> None:
    """Each difference is named (old and new value); runtime-only options (max_steps, eval_every) are not one."""
    output = full_run.output
    message = training_error(tiny_spec, scenes[0], output, replace(BASE, lr=2e-3), resume=True)
    assert "lr=0.001" in message and "now 0.002" in message
    message = training_error(tiny_spec, scenes[0], output, replace(BASE, epochs=4, seed=5), resume=True)
    assert "epochs=3" in message and "seed=0" in message
    message = training_error(tiny_spec, scenes[1], output, BASE, resume=True)
    assert "training data" in message
    checkpoint = shutil.copy(output / BEST_CHECKPOINT, tmp_path / "other.pt")
    message = training_error(ModelSpec(str(tiny_config), str(checkpoint)), scenes[0], output, BASE, resume=True)
    assert "model" in message and "random weights" in message
    runtime_only = replace(BASE, max_steps=TOTAL_STEPS, eval_every=3, val_images=5)
    assert train(tiny_spec, scenes[0], output, runtime_only, resume=True).steps == TOTAL_STEPS


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
    best = with_weights(tiny_spec, weights(tmp_path / "run" / BEST_CHECKPOINT))
    assert report.best_val is not None
    again = evaluate(best, val_data, "cpu")
    assert again.text_to_image == pytest.approx(report.best_val.text_to_image)
    assert again.image_to_text == pytest.approx(report.best_val.image_to_text)


# --- time budget -----------------------------------------------------------------------------------------


def test_time_budget_ends_the_run_on_the_clock_with_the_rate_decayed(
    tiny_spec: ModelSpec, scenes: Any, tmp_path: Path
) -> None:
    """A 3 s budget on a run of 1000 epochs: it stops long before its last step, once the budget is spent,
    the learning rate having decayed with the clock, and ends like any run (validated, best.pt, train.json);
    last.pt records the seconds, so a resume continues the clock instead of starting it again."""
    options = replace(BASE, epochs=1000, warmup_steps=0, time_budget=3.0)
    events: list[TrainProgress] = []
    report = train(tiny_spec, scenes[0], tmp_path / "run", options, val_data=scenes[1], progress=events.append)
    assert 0 < report.steps < report.total_steps == 4000
    assert report.seconds >= 3.0
    assert events[-1].lr < 0.25 * options.lr  # a step-based schedule would still be at the full rate here
    assert events[len(events) // 2].lr > events[-1].lr
    log = json.loads((tmp_path / "run" / RUN_LOG).read_text())
    assert log["history"][-1]["step"] == report.steps and "val" in log["history"][-1]
    assert (tmp_path / "run" / BEST_CHECKPOINT).is_file()
    saved = torch.load(tmp_path / "run" / LAST_CHECKPOINT, weights_only=True)
    assert saved["seconds"] >= 3.0
    resumed = train(tiny_spec, scenes[0], tmp_path / "run", options, val_data=scenes[1], resume=True)
    assert resumed.steps == report.steps  # the budget was spent already: no step more
