"""The learning-rate schedule: linear warmup, then cosine decay to zero (open_clip's `cosine_lr`)."""

from __future__ import annotations

import math

from retrieval.training.options import TrainOptions


def lr_at(step: int, options: TrainOptions, total_steps: int, time_spent: float = 0.0) -> float:
    """Linear warmup to `lr`, then cosine decay to zero at `total_steps`, or sooner: with a `time_budget`,
    the decay goes as far as the larger of the steps' share and `time_spent`, the budget's share used."""
    warmup = min(options.warmup_steps, max(0, total_steps - 1))
    if step < warmup:
        return options.lr * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total_steps - warmup), time_spent)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * options.lr
