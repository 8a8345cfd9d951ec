"""Defaults named in `retrieval.config` for light callers (the CLI's --help) equal those the code uses."""

from __future__ import annotations

from retrieval import config
from retrieval.index import GPU_CHOICES
from retrieval.training import TrainOptions


def test_train_defaults_are_train_options_defaults() -> None:
    """`clipsearch train --help` shows config's defaults; `TrainOptions()` must have the same."""
    options = TrainOptions()
    assert (
        options.epochs, options.batch_size, options.lr, options.weight_decay, options.warmup_steps,
        options.grad_clip, options.seed, options.val_images,
    ) == (
        config.DEFAULT_TRAIN_EPOCHS, config.DEFAULT_TRAIN_BATCH_SIZE, config.DEFAULT_TRAIN_LR,
        config.DEFAULT_TRAIN_WEIGHT_DECAY, config.DEFAULT_TRAIN_WARMUP_STEPS, config.DEFAULT_TRAIN_GRAD_CLIP,
        config.DEFAULT_TRAIN_SEED, config.DEFAULT_TRAIN_VAL_IMAGES,
    )  # fmt: skip


def test_gpu_choices_are_the_index_choices() -> None:
    """`--gpu-index` offers exactly what `VectorIndex(gpu=...)` accepts."""
    assert config.GPU_CHOICES == GPU_CHOICES
