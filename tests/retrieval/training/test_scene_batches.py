"""Tests of training.scene_batches: hard-negative batches, match targets and the loss that uses them."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss

from retrieval.errors import TrainingError
from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import CaptionedDataset, load_captions
from retrieval.quality.scenes import sample_scene
from retrieval.training import TrainOptions, train
from retrieval.training.batches import iterate_epoch
from retrieval.training.evaluation import SELECTION_KS
from retrieval.training.scene_batches import (
    PARTNER_ATTRIBUTES,
    SceneLabels,
    hard_negative_batches,
    match_targets,
    soft_clip_loss,
)
from tests.retrieval.training.runs import BASE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(shape: str, colour: str, count: int) -> dict[str, Any]:
    return {"shape": shape, "colour": colour, "count": count}


def test_labels_read_every_generated_image_and_caption(scenes: Any) -> None:
    train_data: CaptionedDataset = scenes[0]
    labels = SceneLabels.of(train_data)
    assert all(scene is not None for scene in labels.scenes)
    assert len(labels.wants) == len(train_data.captions) and all(labels.wants)


def test_labels_refuse_captions_that_describe_no_scene(tmp_path: Path, scenes: Any) -> None:
    image = scenes[0].images[0]
    captions = tmp_path / "photos.csv"
    captions.write_text(f"image,caption\n{image},a dog on the beach\n{scenes[0].images[1]},a cat\n")
    with pytest.raises(TrainingError, match="generate_dataset"):
        SceneLabels.of(load_captions(captions))


def test_hard_negative_batches_hold_look_alikes_and_are_a_function_of_seed_and_epoch() -> None:
    """Anchors come with a same-colour-other-shape, a same-shape-other-count, a same-shape-elsewhere and a
    same-shape-other-size partner; batches hold distinct images and repeat for the same (seed, epoch)."""
    rng = random.Random(0)
    scenes = [sample_scene(rng, held_out=None).to_json() for _ in range(600)]
    batches = hard_negative_batches(scenes, 15, seed=1, epoch=0, batches=20)
    assert len(batches) == 20 and all(len(batch) == len(set(batch)) == 15 for batch in batches)
    assert batches == hard_negative_batches(scenes, 15, seed=1, epoch=0, batches=20)
    assert batches != hard_negative_batches(scenes, 15, seed=1, epoch=1, batches=20)

    def partnered(offset: int, same: str, other: str) -> float:
        """Share of the anchors (every 5th image) whose image `offset` places later is such a partner."""
        groups = [batch[start : start + 5] for batch in batches for start in range(0, 15, 5)]
        return sum(
            scenes[g[0]][same] == scenes[g[offset]][same] and scenes[g[0]][other] != scenes[g[offset]][other]
            for g in groups
        ) / len(groups)

    # by chance (a shuffled order) these shares would be about 0.1, 0.13, 0.16 and 0.1
    assert partnered(1, "colour", "shape") >= 0.9
    assert partnered(2, "shape", "count") >= 0.9
    assert partnered(3, "shape", "position") >= 0.9
    assert partnered(4, "shape", "size") >= 0.9
    first = [scenes[i] for i in batches[0][:5]]  # an anchor and its four partners, in order
    assert first[1]["colour"] == first[0]["colour"] and first[1]["shape"] != first[0]["shape"]
    assert first[2]["shape"] == first[0]["shape"] and first[2]["count"] != first[0]["count"]
    assert first[3]["shape"] == first[0]["shape"] and first[3]["position"] != first[0]["position"]
    assert first[4]["shape"] == first[0]["shape"] and first[4]["size"] != first[0]["size"]


def test_partners_are_the_anchors_twins_where_the_data_has_them() -> None:
    """On scenes where every scene has twins (all combinations of two values of each attribute, each twice),
    partners differ from their anchor in their one attribute only: even full captions tell them apart only by
    it. (Not all: a twin already in the batch is not added twice, which shifts the ones after it.)"""
    values = {"shape": ("circle", "star"), "colour": ("red", "blue"), "size": ("small", "large"), "count": (1, 3)}
    values |= {"position": ("left", "top"), "background": ("white", "black"), "texture": ("plain", "dotted")}
    scenes = [dict(zip(values, combination, strict=True)) for combination in itertools.product(*values.values())] * 2
    batches = hard_negative_batches(scenes, 15, seed=2, epoch=0, batches=20)
    twins, partners = 0, 0
    for batch in batches:
        for start in range(0, 15, 5):
            anchor, *others = (scenes[i] for i in batch[start : start + 5])
            for differs_in, partner in zip(PARTNER_ATTRIBUTES, others, strict=True):
                partners += 1
                twins += [name for name in values if partner[name] != anchor[name]] == [differs_in]
    assert twins / partners >= 0.9  # a loose partner (same colour or shape only) is a twin 1 time in 32


def test_match_targets_mark_every_caption_true_of_an_image() -> None:
    labels = SceneLabels(
        scenes=(
            {"shape": "circle", "colour": "red", "count": 3, "size": "large"},
            {"shape": "circle", "colour": "red", "count": 2, "size": "large"},
            {"shape": "square", "colour": "red", "count": 3, "size": "large"},
            None,
        ),
        wants=(
            {"shape": frozenset({"circle"}), "count": frozenset({3})},  # "three circles"
            {"colour": frozenset({"red"}), "shape": frozenset({"circle"})},  # "red circles"
            {"colour": frozenset({"red"})},  # "something red"
            {},
        ),
    )
    targets = match_targets(labels, images=[0, 1, 2, 3], captions=[0, 1, 2, 3])
    expected = torch.tensor(
        [
            [1, 1, 1, 0],  # three red circles: all three captions
            [0, 1, 1, 0],  # two red circles: not "three circles"
            [0, 0, 1, 0],  # three red squares: "something red" only
            [0, 0, 0, 1],  # unknown scene: its own caption only
        ],
        dtype=torch.float32,
    )
    assert torch.equal(targets, expected)


def test_graded_targets_give_a_loosely_true_caption_its_partial_target() -> None:
    """ "a blue triangle" (count 1 read strictly) is fully true of one blue triangle, partly of three (its loose
    reading asks no count), and not at all of a blue square; "a single blue triangle" is never graded."""
    from retrieval.quality.attributes import constraints_of

    captions = ("a blue triangle", "three blue triangles", "a blue square", "a single blue triangle")
    labels = SceneLabels(
        scenes=(
            {"shape": "triangle", "colour": "blue", "count": 1},
            {"shape": "triangle", "colour": "blue", "count": 3},
            {"shape": "square", "colour": "blue", "count": 1},
            {"shape": "triangle", "colour": "blue", "count": 1},
        ),
        wants=tuple(constraints_of(text) for text in captions),
        loose=tuple(constraints_of(text, implied_count=False) for text in captions),
        partial=0.4,
    )
    targets = match_targets(labels, images=[0, 1, 2, 3], captions=[0, 1, 2, 3])
    expected = torch.tensor(
        [
            [1, 0, 0, 1],  # one blue triangle
            [0.4, 1, 0, 0],  # three blue triangles: "a blue triangle" partly, "a single ..." not at all
            [0, 0, 1, 0],  # a blue square
            [1, 0, 0, 1],  # one blue triangle
        ],
        dtype=torch.float32,
    )
    assert torch.equal(targets, expected)
    plain = SceneLabels(labels.scenes, labels.wants)
    assert match_targets(plain, images=[0, 1, 2, 3], captions=[0, 1, 2, 3])[1, 0] == 0


def test_labels_refuse_a_partial_target_outside_0_to_1(scenes: Any) -> None:
    with pytest.raises(TrainingError, match="partial_target"):
        SceneLabels.of(scenes[0], partial=1.0)
    assert SceneLabels.of(scenes[0], partial=0.5).loose


def test_soft_loss_with_one_match_per_row_is_clip_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    scale = torch.tensor(10.0)
    ours = soft_clip_loss(images, texts, scale, torch.eye(6))
    assert torch.allclose(ours, ClipLoss()(images, texts, scale))
    shared = torch.eye(6)
    shared[0, 1] = 1.0  # caption 1 is true of image 0 too: no longer a negative there
    assert soft_clip_loss(images, texts, scale, shared) != ours


def test_batches_carry_targets_and_training_with_all_options_runs(
    tiny_spec: ModelSpec, scenes: Any, tmp_path: Path
) -> None:
    """With labels each batch carries its targets (diagonal included); a run with augment, hard negatives and
    match targets trains, evaluates and saves like any other, and resumes to the same weights."""
    from retrieval.model.loading import load_model

    loaded = load_model(tiny_spec, warn_random=False)
    labels = SceneLabels.of(scenes[0])
    batch = next(
        iterate_epoch(
            scenes[0],
            batch_size=8,
            seed=0,
            epoch=0,
            start_batch=0,
            transform=loaded.train_transform,
            tokenizer=loaded.tokenizer,
            workers=0,
            labels=labels,
            hard_negatives=True,
        )
    )
    assert batch.targets is not None and batch.targets.shape == (8, 8)
    assert torch.all(batch.targets.diagonal() == 1)
    options = TrainOptions(**(BASE.__dict__ | {"augment": True, "hard_negatives": True, "match_targets": True}))
    report = train(tiny_spec, scenes[0], tmp_path / "run", options, val_data=scenes[1])
    assert report.steps == 12 and report.best_checkpoint.is_file()
    stopped = TrainOptions(**(options.__dict__ | {"max_steps": 5}))
    train(tiny_spec, scenes[0], tmp_path / "resumed", stopped)
    resumed = train(tiny_spec, scenes[0], tmp_path / "resumed", options, val_data=scenes[1], resume=True)
    first = torch.load(report.output / "last.pt", weights_only=True)["state_dict"]
    second = torch.load(resumed.output / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_best_weights_chosen_by_attribute_precision_record_it_per_attribute(
    tiny_spec: ModelSpec, scenes: Any, tmp_path: Path
) -> None:
    """`select_by="attributes"`: every validation logs P@3 and P@10 per attribute, and best.pt is the step
    whose mean of the two is highest (not the best recall); graded targets train like binary ones."""
    options = TrainOptions(
        **(BASE.__dict__ | {"match_targets": True, "partial_target": 0.5, "select_by": "attributes", "eval_every": 4})
    )
    report = train(tiny_spec, scenes[0], tmp_path / "run", options, val_data=scenes[1])
    entries = [entry for entry in report.history if "val" in entry]
    assert len(entries) == 3
    precision = [[entry["val"][f"attributes_p{k}"] for k in SELECTION_KS] for entry in entries]
    assert SELECTION_KS == (3, 10)
    assert all(set(table) >= {"shape", "colour", "colour+shape"} for tables in precision for table in tables)
    means = [float(np.mean([value for table in tables for value in table.values()])) for tables in precision]
    assert report.best_step == entries[means.index(max(means))]["step"]


def test_choosing_by_attributes_needs_generated_validation_data(
    tiny_spec: ModelSpec, scenes: Any, tmp_path: Path
) -> None:
    captions = tmp_path / "photos.csv"
    captions.write_text("image,caption\n" + "".join(f"{path},a photo\n" for path in scenes[1].images[:4]))
    options = TrainOptions(**(BASE.__dict__ | {"select_by": "attributes", "max_steps": 1}))
    with pytest.raises(TrainingError, match="select_by"):
        train(tiny_spec, scenes[0], tmp_path / "run", options, val_data=load_captions(captions))


def test_options_refuse_an_unknown_choice_of_best_weights() -> None:
    with pytest.raises(TrainingError, match="`select_by` must be 'recall' or 'attributes', not 'loss'"):
        TrainOptions(select_by="loss")
