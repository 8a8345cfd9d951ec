"""Batches for contrastive training: which images go together, which caption each one shows, and pixels.

The order is a pure function of (seed, epoch), so a resumed run sees exactly the batches the killed run
would have seen next. Unreadable images are dropped from their batch and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from retrieval.decode import read_and_decode
from retrieval.errors import TrainingError, UnreadableImageError
from retrieval.quality.captions import CaptionedDataset
from retrieval.training.scene_batches import PartnerPools, SceneLabels, hard_negative_batches, match_targets

LOADER_PREFETCH = 4
"""Batches each loader worker keeps ready: enough that a fast GPU step never waits on a slow image."""


@dataclass
class Batch:
    pixels: torch.Tensor
    tokens: torch.Tensor
    skipped: list[tuple[str, str]]  # (path, reason) of images left out of this batch
    targets: torch.Tensor | None = None  # [i, j] = 1 where caption j is true of image i (`match_targets`)

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (what DataLoader's `pin_memory` calls on a custom batch type)."""
        targets = self.targets.pin_memory() if self.targets is not None else None
        return Batch(self.pixels.pin_memory(), self.tokens.pin_memory(), self.skipped, targets)


def dataset_digest(data: CaptionedDataset) -> str:
    """Identifies a training set by its images' names and its captions: resuming on other data is refused."""
    digest = hashlib.sha256()
    for path in data.images:
        digest.update(path.name.encode() + b"\0")
    for text, owner in zip(data.captions, data.caption_image, strict=True):
        digest.update(f"{owner}\0{text}\0".encode())
    return digest.hexdigest()[:16]


def batches_per_epoch(images: int, batch_size: int) -> int:
    """Full batches only: a contrastive loss over a tiny last batch is noise."""
    if images < 2:
        raise TrainingError(f"training needs at least 2 images, got {images}")
    return max(1, images // min(batch_size, images))


def epoch_batches(images: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(images, generator=generator).tolist()
    size = min(batch_size, images)
    return [order[start * size : (start + 1) * size] for start in range(batches_per_epoch(images, batch_size))]


@dataclass
class _EpochPlan:
    """Which images make each batch of an epoch: a pure function of (seed, epoch), kept for the last epoch."""

    images: int
    batch_size: int
    seed: int
    labels: SceneLabels | None
    hard_negatives: bool
    _cached: tuple[int, list[list[int]]] | None = None
    _pools: PartnerPools | None = None

    @property
    def per_epoch(self) -> int:
        return batches_per_epoch(self.images, self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        if self._cached is None or self._cached[0] != epoch:
            if self.hard_negatives and self.labels is not None:
                size = min(self.batch_size, self.images)
                if self._pools is None:
                    self._pools = PartnerPools(self.labels.scenes)
                made = hard_negative_batches(self.labels.scenes, size, self.seed, epoch, self.per_epoch, self._pools)
            else:
                made = epoch_batches(self.images, self.batch_size, self.seed, epoch)
            self._cached = (epoch, made)
        return self._cached[1]


class _BatchLoader(Dataset[Batch]):
    """Item k = the batch of training step `first_step + k`, so one DataLoader (its workers started once)
    serves a whole run and decodes whole batches in parallel; an epoch's batch list is made on first use."""

    def __init__(
        self,
        data: CaptionedDataset,
        plan: _EpochPlan,
        transform: Callable[[Any], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        first_step: int,
        steps: int,
    ) -> None:
        self.data = data
        self.plan = plan
        self.transform = transform
        self.tokenizer = tokenizer
        self.first_step = first_step
        self.steps = steps
        self.captions_by_image: list[list[int]] = [[] for _ in data.images]
        for caption, owner in enumerate(data.caption_image):
            self.captions_by_image[owner].append(caption)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, item: int) -> Batch:
        epoch, position = divmod(self.first_step + item, self.plan.per_epoch)
        caption_seed = f"{self.plan.seed}/{epoch}"
        pixels, images, captions, skipped = [], [], [], []
        with torch.random.fork_rng(devices=[]):
            # Random augmentations (crops) draw from torch's global generator: seed it per batch, so a batch's
            # pixels are the same whatever ran before it (a resumed run, another worker process).
            torch.manual_seed(_batch_seed(f"{caption_seed}/{position}"))
            for image_index in self.plan.batches(epoch)[position]:
                path = str(self.data.images[image_index])
                try:
                    _, decoded = read_and_decode(path, min_side=64)
                except UnreadableImageError as exc:
                    skipped.append((path, exc.reason))
                    continue
                pixels.append(self.transform(decoded.image))
                rng = random.Random(f"{caption_seed}/{image_index}")
                images.append(image_index)
                captions.append(rng.choice(self.captions_by_image[image_index]))
        if len(pixels) < 2:
            return Batch(torch.zeros(0), torch.zeros(0, dtype=torch.long), skipped)
        tokens = self.tokenizer([self.data.captions[caption] for caption in captions])
        labels = self.plan.labels
        targets = match_targets(labels, images, captions) if labels is not None else None
        return Batch(torch.stack(pixels), tokens, skipped, targets)


def iterate_steps(
    data: CaptionedDataset,
    *,
    batch_size: int,
    seed: int,
    first_step: int,
    stop_step: int,
    transform: Callable[[Any], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    workers: int,
    labels: SceneLabels | None = None,
    hard_negatives: bool = False,
    pin_memory: bool = False,
) -> Generator[Batch, None, None]:
    """The batches of steps `first_step` .. `stop_step - 1`, across epochs, from one DataLoader (a batch with
    fewer than 2 readable images is empty). Step s is batch s % per-epoch of epoch s // per-epoch.

    With `labels`, each batch carries its match targets; with `hard_negatives` too, batches are made of
    anchors and their hard negatives (`scene_batches.hard_negative_batches`). `pin_memory` puts each batch
    in page-locked memory, so that copying it to a GPU can overlap the step before."""
    plan = _EpochPlan(len(data), batch_size, seed, labels, hard_negatives)
    loader = _BatchLoader(data, plan, transform, tokenizer, first_step, max(0, stop_step - first_step))
    yield from DataLoader(
        loader,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=LOADER_PREFETCH if workers else None,
        pin_memory=pin_memory,
        collate_fn=_as_is,
    )


def iterate_epoch(
    data: CaptionedDataset,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    start_batch: int,
    transform: Callable[[Any], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    workers: int,
    labels: SceneLabels | None = None,
    hard_negatives: bool = False,
) -> Iterator[Batch]:
    """The batches of `epoch` from `start_batch` on (`iterate_steps` over one epoch)."""
    per_epoch = batches_per_epoch(len(data), batch_size)
    yield from iterate_steps(
        data,
        batch_size=batch_size,
        seed=seed,
        first_step=epoch * per_epoch + start_batch,
        stop_step=(epoch + 1) * per_epoch,
        transform=transform,
        tokenizer=tokenizer,
        workers=workers,
        labels=labels,
        hard_negatives=hard_negatives,
    )


def _batch_seed(name: str) -> int:
    """A torch seed that is a pure function of `name` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "little")


def _as_is(batch: Any) -> Any:
    """Items are whole batches already (a module-level function, so spawned workers can pickle it)."""
    return batch
