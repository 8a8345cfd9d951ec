"""Batches that know what their pictures show: hard negatives, and every true caption counted as a match.

On captions in the scene generator's vocabulary (`retrieval.quality.attributes.constraints_of`), each
image's scene is read from its captions. Two things follow:
- hard negatives (`hard_negative_batches`): a fifth of each batch are anchors, and each anchor brings an
  image of another shape, one of another count, one in another position and one of the other size, each
  the anchor's twin but for that attribute where the data has one, so the loss must tell shape, count,
  place and size apart instead of winning on colour and background alone;
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
from retrieval.quality.attributes import Constraints, constraints_of, scene_of
from retrieval.quality.captions import CaptionedDataset


@dataclass(frozen=True)
class SceneLabels:
    """Every image's scene (None where its captions leave it open), every caption's constraints (`wants`),
    and with a `partial` target above 0 their loose reading (`loose`: a bare "a triangle" asks no count)."""

    scenes: tuple[dict[str, Any] | None, ...]
    wants: tuple[Constraints, ...]
    loose: tuple[Constraints, ...] = ()
    partial: float = 0.0

    @classmethod
    def of(cls, data: CaptionedDataset, partial: float = 0.0) -> SceneLabels:
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
        if not 0.0 <= partial < 1.0:
            raise TrainingError(
                f"`partial_target` must be at least 0 and below 1, not {partial}", parameters=("partial_target",)
            )
        wants = tuple(constraints_of(text) for text in data.captions)
        loose = tuple(constraints_of(text, implied_count=False) for text in data.captions) if partial else ()
        return cls(scenes, wants, loose, partial)


def hard_negative_batches(
    scenes: Sequence[dict[str, Any] | None],
    batch_size: int,
    seed: int,
    epoch: int,
    batches: int,
    pools: PartnerPools | None = None,
) -> list[list[int]]:
    """`batches` batches of distinct images: anchors in a shuffled order, each followed by a partner of another
    shape, one of another count, one in another position and one of another size (where one exists).

    Each partner is the anchor's twin where the data has one: the same scene but for that one attribute, so
    that even the anchor's full caption tells them apart only by it. Failing that, a partner that keeps the
    objects (colour, size, count, position) and changes the background; failing that, one of the same colour
    (for shape) or the same shape (for the rest). `pools` (`PartnerPools(scenes)`) saves making them again
    for each epoch."""
    rng = random.Random(f"hard-negatives/{seed}/{epoch}")
    pools = pools if pools is not None else PartnerPools(scenes)
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
            for differs_in in PARTNER_ATTRIBUTES:
                partner = pools.partner(rng, scene, differs_in)
                if partner is not None and len(batch) < batch_size:
                    batch[partner] = None
        result.append(list(batch))
    return result


PARTNER_ATTRIBUTES = ("shape", "count", "position", "size")
"""What each anchor's partners differ in, in the order they follow it."""
_SCENE_ATTRIBUTES = ("shape", "colour", "size", "count", "position", "background", "texture")
_OBJECT_ATTRIBUTES = ("shape", "colour", "size", "count", "position")


class PartnerPools:
    """The images to draw a partner from, per attribute it should differ in: twins, object twins, loose."""

    def __init__(self, scenes: Sequence[dict[str, Any] | None]) -> None:
        self.scenes = scenes
        self.tiers: dict[tuple[str, int], dict[tuple[Any, ...], list[int]]] = {}
        for differs_in in PARTNER_ATTRIBUTES:
            for tier in range(3):
                pool: dict[tuple[Any, ...], list[int]] = defaultdict(list)
                for position, scene in enumerate(scenes):
                    if scene is not None:
                        pool[self._key(scene, differs_in, tier)].append(position)
                self.tiers[(differs_in, tier)] = pool

    @staticmethod
    def _key(scene: dict[str, Any], differs_in: str, tier: int) -> tuple[Any, ...]:
        if tier == 0:
            return tuple(scene[name] for name in _SCENE_ATTRIBUTES if name != differs_in)
        if tier == 1:
            return tuple(scene[name] for name in _OBJECT_ATTRIBUTES if name != differs_in)
        return (scene["colour"],) if differs_in == "shape" else (scene["shape"],)

    def partner(self, rng: random.Random, scene: dict[str, Any], differs_in: str) -> int | None:
        for tier in range(3):
            pool = self.tiers[(differs_in, tier)].get(self._key(scene, differs_in, tier), [])
            found = _partner(rng, pool, self.scenes, differs_in, scene[differs_in]) if pool else None
            if found is not None:
                return found
        return None


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
    each caption is true of its own image), and `labels.partial` where only its loose reading is (three blue
    triangles for "a blue triangle"): graded, so such a picture ranks above one of another shape without
    counting as fully right. Found by set intersections, not by testing every pair: a loader worker makes
    one of these for every batch."""
    targets = torch.eye(len(images))
    holders: dict[tuple[str, Any], set[int]] = defaultdict(set)  # (attribute, value) -> batch rows that have it
    known: set[int] = set()
    for row, image in enumerate(images):
        scene = labels.scenes[image]
        if scene is not None:
            known.add(row)
            for name, value in scene.items():
                holders[(name, value)].add(row)
    for column, caption in enumerate(captions):
        wants = labels.wants[caption]
        if not wants:
            continue
        rows = _holding(wants, known, holders)
        if labels.partial and labels.loose[caption] != wants:
            partly = _holding(labels.loose[caption], known, holders) - rows - {column}
            if partly:
                targets[sorted(partly), column] = labels.partial
        if rows:
            targets[sorted(rows), column] = 1.0
    return targets


def _holding(wants: Constraints, known: set[int], holders: dict[tuple[str, Any], set[int]]) -> set[int]:
    """The batch rows whose scene has, for every attribute `wants` names, one of the values it accepts."""
    rows = set(known)
    for name, values in wants.items():
        rows &= set().union(*(holders.get((name, value), set()) for value in values))
    return rows


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
