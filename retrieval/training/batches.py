"""Batches for contrastive training: which images go together, which caption each one shows, and pixels.

The order is a pure function of (seed, epoch), so a resumed run sees exactly the batches the killed run
would have seen next. Unreadable images are dropped from their batch and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from retrieval.decode import read_and_decode
from retrieval.errors import TrainingError, UnreadableImageError
from retrieval.quality.captions import CaptionedDataset
from retrieval.training.scene_batches import SceneLabels, hard_negative_batches, match_targets


@dataclass
class Batch:
    pixels: torch.Tensor
    tokens: torch.Tensor
    skipped: list[tuple[str, str]]  # (path, reason) of images left out of this batch
    targets: torch.Tensor | None = None  # [i, j] = 1 where caption j is true of image i (`match_targets`)


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


class _BatchLoader(Dataset[Batch]):
    """Item i = batch i of an epoch, so a DataLoader with workers decodes whole batches in parallel."""

    def __init__(
        self,
        data: CaptionedDataset,
        batches: list[list[int]],
        transform: Callable[[Any], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        caption_seed: str,
        first_batch: int = 0,
        labels: SceneLabels | None = None,
    ) -> None:
        self.data = data
        self.batches = batches
        self.transform = transform
        self.tokenizer = tokenizer
        self.caption_seed = caption_seed
        self.first_batch = first_batch  # epoch position of batches[0], so a resumed epoch draws the same crops
        self.labels = labels
        self.captions_by_image: list[list[int]] = [[] for _ in data.images]
        for caption, owner in enumerate(data.caption_image):
            self.captions_by_image[owner].append(caption)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, position: int) -> Batch:
        pixels, images, captions, skipped = [], [], [], []
        with torch.random.fork_rng(devices=[]):
            # Random augmentations (crops) draw from torch's global generator: seed it per batch, so a batch's
            # pixels are the same whatever ran before it (a resumed run, another worker process).
            torch.manual_seed(_batch_seed(f"{self.caption_seed}/{self.first_batch + position}"))
            for image_index in self.batches[position]:
                path = str(self.data.images[image_index])
                try:
                    _, decoded = read_and_decode(path, min_side=64)
                except UnreadableImageError as exc:
                    skipped.append((path, exc.reason))
                    continue
                pixels.append(self.transform(decoded.image))
                rng = random.Random(f"{self.caption_seed}/{image_index}")
                images.append(image_index)
                captions.append(rng.choice(self.captions_by_image[image_index]))
        if len(pixels) < 2:
            return Batch(torch.zeros(0), torch.zeros(0, dtype=torch.long), skipped)
        tokens = self.tokenizer([self.data.captions[caption] for caption in captions])
        targets = match_targets(self.labels, images, captions) if self.labels is not None else None
        return Batch(torch.stack(pixels), tokens, skipped, targets)


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
    """The batches of `epoch` from `start_batch` on (a batch with fewer than 2 readable images is empty).

    With `labels`, each batch carries its match targets; with `hard_negatives` too, batches are made of
    anchors and their hard negatives (`scene_batches.hard_negative_batches`)."""
    if hard_negatives and labels is not None:
        count = batches_per_epoch(len(data), batch_size)
        batches = hard_negative_batches(labels.scenes, min(batch_size, len(data)), seed, epoch, count)[start_batch:]
    else:
        batches = epoch_batches(len(data), batch_size, seed, epoch)[start_batch:]
    loader = _BatchLoader(
        data, batches, transform, tokenizer, caption_seed=f"{seed}/{epoch}", first_batch=start_batch, labels=labels
    )
    yield from DataLoader(
        loader,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        persistent_workers=False,
        collate_fn=_as_is,
    )


def _batch_seed(name: str) -> int:
    """A torch seed that is a pure function of `name` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "little")


def _as_is(batch: Any) -> Any:
    """Items are whole batches already (a module-level function, so spawned workers can pickle it)."""
    return batch
