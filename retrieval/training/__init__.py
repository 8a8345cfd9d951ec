"""Contrastive training of open_clip models on captioned data (what `clipsearch train` runs).

Importing this package imports torch and open_clip: callers that must start light import it where
training begins.
"""

from __future__ import annotations

from retrieval.training.loop import TrainOptions, TrainProgress, TrainReport, train

__all__ = ["TrainOptions", "TrainProgress", "TrainReport", "train"]
