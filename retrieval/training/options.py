"""What a training run is given: its options (`TrainOptions`) and everything fixed for its life (`RunSetup`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrieval.config import (
    DEFAULT_DEVICE,
    DEFAULT_TRAIN_BATCH_SIZE,
    DEFAULT_TRAIN_EPOCHS,
    DEFAULT_TRAIN_GRAD_CLIP,
    DEFAULT_TRAIN_LR,
    DEFAULT_TRAIN_SEED,
    DEFAULT_TRAIN_VAL_IMAGES,
    DEFAULT_TRAIN_WARMUP_STEPS,
    DEFAULT_TRAIN_WEIGHT_DECAY,
    TRAIN_SELECT_BY_CHOICES,
)
from retrieval.errors import TrainingError
from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import CaptionedDataset


@dataclass(frozen=True)
class TrainOptions:
    """How to train; the defaults live in `retrieval.config` so that `train --help` shows them without torch."""

    epochs: int = DEFAULT_TRAIN_EPOCHS
    batch_size: int = DEFAULT_TRAIN_BATCH_SIZE
    lr: float = DEFAULT_TRAIN_LR
    weight_decay: float = DEFAULT_TRAIN_WEIGHT_DECAY
    warmup_steps: int = DEFAULT_TRAIN_WARMUP_STEPS
    grad_clip: float = DEFAULT_TRAIN_GRAD_CLIP
    lock_image: bool = False
    lock_text: bool = False
    seed: int = DEFAULT_TRAIN_SEED
    max_steps: int | None = None
    """Stop after this many steps in total (the schedule still spans `epochs`)."""
    device: str = DEFAULT_DEVICE
    workers: int = 0
    eval_every: int = 0
    """Evaluate every this many steps; 0 = at the end of every epoch."""
    val_images: int = DEFAULT_TRAIN_VAL_IMAGES
    fp16_weights: bool = False
    """Store best.pt in half precision (half the size; it loads into a float32 model unchanged)."""
    augment: bool = False
    """Photo-like distortions of training images (`retrieval.training.augment`) instead of open_clip's crop."""
    hard_negatives: bool = False
    """Batches of anchors with same-colour-other-shape and same-shape-other-count partners (generated data)."""
    match_targets: bool = False
    """Count every caption in a batch that is true of an image as its match (generated data)."""
    partial_target: float = 0.0
    """With `match_targets`: the target of a caption whose loose reading only is true of an image (three blue
    triangles for "a blue triangle"; `SceneLabels`); 0 counts such a pair as a plain mismatch."""
    select_by: str = "recall"
    """What best.pt is chosen by: "recall" (mean validation recall) or "attributes" (mean attribute precision@3
    and @10 of the short benchmark queries on the validation images, `evaluation.SELECTION_KS`; generated
    data)."""
    time_budget: float | None = None
    """Wall-clock seconds the run may train (resumed runs included): the learning rate decays to zero by then
    and the run ends with a last evaluation. The schedule then follows the clock, so such a run is not
    reproducible step for step."""

    def __post_init__(self) -> None:
        if self.select_by not in TRAIN_SELECT_BY_CHOICES:
            choices = " or ".join(repr(choice) for choice in TRAIN_SELECT_BY_CHOICES)
            raise TrainingError(f"`select_by` must be {choices}, not {self.select_by!r}", parameters=("select_by",))


RUNTIME_OPTIONS = ("workers", "device", "eval_every", "val_images", "fp16_weights", "max_steps", "select_by")
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
