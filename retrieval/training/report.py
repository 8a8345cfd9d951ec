"""What training tells its caller: a `TrainProgress` event after every step and a `TrainReport` at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.quality.recall import Recall
from retrieval.training.checkpoint import BEST_CHECKPOINT


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    val: Recall | None = None


StepCallback = Callable[[TrainProgress], None]
"""Called after every step. Not `retrieval.progress.ProgressCallback`: a step carries loss, lr and validation."""


@dataclass
class TrainReport:
    output: Path
    steps: int
    total_steps: int
    seconds: float
    resumed_from: int
    best_step: int | None
    best_val: Recall | None
    final_loss: float
    skipped_images: list[tuple[str, str]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_checkpoint(self) -> Path:
        return self.output / BEST_CHECKPOINT
