"""What a training run is given: its options (`TrainOptions`) and everything fixed for its life (`RunSetup`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import CaptionedDataset


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    lock_image: bool = False
    lock_text: bool = False
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many steps in total (the schedule still spans `epochs`)."""
    device: str = "auto"
    workers: int = 0
    eval_every: int = 0
    """Evaluate every this many steps; 0 = at the end of every epoch."""
    val_images: int = 1000
    fp16_weights: bool = False
    """Store best.pt in half precision (half the size; it loads into a float32 model unchanged)."""


RUNTIME_OPTIONS = ("workers", "device", "eval_every", "val_images", "fp16_weights", "max_steps")
"""Options that change how a run goes, not what it learns: a resumed run may set them differently."""


@dataclass(frozen=True)
class RunSetup:
    """One run's fixed inputs, grouped because the loop, the checkpoint and the run log all read them."""

    spec: ModelSpec
    options: TrainOptions
    train_data: CaptionedDataset
    val_data: CaptionedDataset | None
    """Already cut to `options.val_images`."""
    folder: Path
    device: str
