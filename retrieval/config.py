"""Defaults, named once. Every option that has a default takes it from here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
RANDOM_WEIGHTS = "none"
"""`--pretrained none`: random weights, seeded so that every load gives the same model (tests only)."""
RANDOM_WEIGHTS_SEED = 0

DEFAULT_DEVICE = "auto"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_BATCH_SIZE = 32
DEFAULT_DECODE_WORKERS = max(1, min(8, (os.cpu_count() or 2)))
DEFAULT_TOP_K = 10

LIBRARY_ENV = "CLIPSEARCH_LIBRARY"
DATABASE_FILE = "library.db"
INDEX_FILE_PREFIX = "index-"
INDEX_FILE_SUFFIX = ".faiss"

EXACT_SUBSET_MAX = 50_000
"""A filtered search whose allowed set is at most this large scores the subset exactly instead of widening."""


def default_library_dir() -> Path:
    """Where a library lives when neither `--library` nor CLIPSEARCH_LIBRARY says: the user's data dir."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "clipsearch" / "default"


REFERENCE_CONFIG_FILE = "reference.json"
REFERENCE_CHECKPOINT_FILE = "reference.pt"
"""The project's own small model, trained by `clipsearch train` on generated scenes (see README): package
data in retrieval/model/data/, found by `retrieval.model.reference`."""
DEFAULT_DEMO_IMAGES = 300
