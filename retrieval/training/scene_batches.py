"""Batches that know what their pictures show: hard negatives, and every true caption counted as a match.

On captions in the scene generator's vocabulary (`retrieval.quality.attributes.constraints_of`), each
image's scene is read from its captions. Two things follow:
- hard negatives (`hard_negative_batches`): a fifth of each batch are anchors, and each anchor brings an
  image of the same colour and another shape, one of the same shape and another count, one of the same
  shape in another position and one of the same shape in the other size, so the loss must tell shape,
  count, place and size apart instead of winning on colour and background alone;
- match targets (`match_targets`): a short caption ("three circles") is true of every image in the batch
  with three circles, not only of its own; the loss spreads each caption's target over all of them instead
  of pushing the other true images away.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from retrieval.errors import TrainingError
from retrieval.quality.attributes import Constraints, constraints_of, satisfies, scene_of
from retrieval.quality.captions import CaptionedDataset


@dataclass(frozen=True)
class SceneLabels:
    """Every image's scene (None where its captions leave it open) and every caption's constraints."""

    scenes: tuple[dict[str, Any] | None, ...]
    wants: tuple[Constraints, ...]

    @classmethod
    def of(cls, data: CaptionedDataset) -> SceneLabels:
        by_image: list[list[str]] = [[] for _ in data.images]
        for text, owner in zip(data.captions, data.caption_image, strict=True):
            by_image[owner].append(text)
        scenes = tuple(scene_of(captions) for captions in by_image)
        known = sum(scene is not None for scene in scenes)
        if known < len(scenes) / 2:
            raise TrainingError(
                f"only {known} of {len(scenes)} images have captions that describe a whole generated scene; "
                "`hard_negatives` and `match_targets` need data from generate_dataset",
                parameters=("hard_negatives", "match_targets"),
            )
        return cls(scenes, tuple(constraints_of(text) for text in data.captions))


def hard_negative_batches(
    scenes: Sequence[dict[str, Any] | None], batch_size: int, seed: int, epoch: int, batches: int
) -> list[list[int]]:
    """`batches` batches of distinct images: anchors in a shuffled order, each followed by a partner of the
    same colour and another shape, one of the same shape and another count, one of the same shape in
    another position and one of the same shape in another size (where one exists)."""
    rng = random.Random(f"hard-negatives/{seed}/{epoch}")
    by_colour: dict[str, list[int]] = defaultdict(list)
    by_shape: dict[str, list[int]] = defaultdict(list)
    for position, scene in enumerate(scenes):
        if scene is not None:
            by_colour[scene["colour"]].append(position)
            by_shape[scene["shape"]].append(position)
    order = list(range(len(scenes)))
    rng.shuffle(order)
    anchors = iter(order * (1 + batches * batch_size // max(1, len(order))))
    result: list[list[int]] = []
    for _ in range(batches):
        batch: dict[int, None] = {}  # ordered and distinct
        while len(batch) < batch_size:
            anchor = next(anchors)
            batch[anchor] = None
            scene = scenes[anchor]
            if scene is None:
                continue
            for partner in (
                _partner(rng, by_colour[scene["colour"]], scenes, "shape", scene["shape"]),
                _partner(rng, by_shape[scene["shape"]], scenes, "count", scene["count"]),
                _partner(rng, by_shape[scene["shape"]], scenes, "position", scene["position"]),
                _partner(rng, by_shape[scene["shape"]], scenes, "size", scene["size"]),
            ):
                if partner is not None and len(batch) < batch_size:
                    batch[partner] = None
        result.append(list(batch))
    return result


def _partner(
    rng: random.Random, pool: list[int], scenes: Sequence[dict[str, Any] | None], differs_in: str, value: Any
) -> int | None:
    """An image from `pool` whose `differs_in` attribute is not `value` (a few tries; None if unlucky)."""
    for _ in range(8):
        position = rng.choice(pool)
        scene = scenes[position]
        if scene is not None and scene[differs_in] != value:
            return position
    return None


def match_targets(labels: SceneLabels, images: Sequence[int], captions: Sequence[int]) -> torch.Tensor:
    """targets[i, j] = 1 where caption `captions[j]` is true of image `images[i]` (always on the diagonal:
    each caption is true of its own image)."""
    targets = torch.eye(len(images))
    for i, image in enumerate(images):
        scene = labels.scenes[image]
        if scene is None:
            continue
        for j, caption in enumerate(captions):
            wants = labels.wants[caption]
            if i != j and wants and satisfies(scene, wants):
                targets[i, j] = 1.0
    return targets


def soft_clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE with several true pairs per row: cross-entropy against the targets spread
    evenly over each image's true captions and each caption's true images."""
    logits = logit_scale * image_features @ text_features.T
    per_image = targets / targets.sum(dim=1, keepdim=True)
    per_caption = (targets / targets.sum(dim=0, keepdim=True)).T
    image_loss = -(per_image * logits.log_softmax(dim=1)).sum(dim=1).mean()
    text_loss = -(per_caption * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (image_loss + text_loss) / 2
