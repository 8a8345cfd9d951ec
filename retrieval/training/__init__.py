"""Contrastive training of open_clip models on captioned data (what `clipsearch train` runs).

One module per concern: `options` (what a run is given), `batches`, `parameters` (locking, AdamW groups),
`schedule` (the learning rate), `evaluation`, `checkpoint` (`last.pt`, `best.pt`), `runlog` (`train.json`),
`report` (what a run tells its caller) and `loop` (the trainer and `train()`).

Importing this package imports torch and open_clip: callers that must start light import it where
training begins.
"""

from __future__ import annotations

from retrieval.training.loop import train
from retrieval.training.options import TrainOptions
from retrieval.training.report import TrainProgress, TrainReport

__all__ = ["TrainOptions", "TrainProgress", "TrainReport", "train"]
