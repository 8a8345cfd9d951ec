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


@dataclass
class Batch:
    pixels: torch.Tensor
    tokens: torch.Tensor
    skipped: list[tuple[str, str]]  # (path, reason) of images left out of this batch


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
    ) -> None:
        self.data = data
        self.batches = batches
        self.transform = transform
        self.tokenizer = tokenizer
        self.caption_seed = caption_seed
        self.first_batch = first_batch  # epoch position of batches[0], so a resumed epoch draws the same crops
        self.captions_by_image: list[list[str]] = [[] for _ in data.images]
        for text, owner in zip(data.captions, data.caption_image, strict=True):
            self.captions_by_image[owner].append(text)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, position: int) -> Batch:
        pixels, texts, skipped = [], [], []
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
                texts.append(rng.choice(self.captions_by_image[image_index]))
        if len(pixels) < 2:
            return Batch(torch.zeros(0), torch.zeros(0, dtype=torch.long), skipped)
        return Batch(torch.stack(pixels), self.tokenizer(texts), skipped)


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
) -> Iterator[Batch]:
    """The batches of `epoch` from `start_batch` on (a batch with fewer than 2 readable images is empty)."""
    batches = epoch_batches(len(data), batch_size, seed, epoch)[start_batch:]
    loader = _BatchLoader(data, batches, transform, tokenizer, caption_seed=f"{seed}/{epoch}", first_batch=start_batch)
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
