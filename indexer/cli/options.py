"""The option groups commands share, each built the one way: `option_group` stacks a list of click options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from retrieval.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    DEFAULT_TOP_K,
    DEVICE_CHOICES,
    GPU_CHOICES,
    LIBRARY_ENV,
)
from retrieval.model.devices import PRECISION_CHOICES
from retrieval.quality.captions import FORMATS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def option_group(*options: Decorator) -> Decorator:
    """One decorator applying `options` so that they list in this order in --help."""

    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


library_options = option_group(
    click.option(
        "--library",
        "library_dir",
        envvar=LIBRARY_ENV,
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Library folder [env {LIBRARY_ENV}; default: your user data folder].",
    ),
    click.option(
        "--database-url",
        envvar="CLIPSEARCH_DATABASE_URL",
        default=None,
        help="SQLAlchemy URL of the store (default: sqlite file inside the library folder).",
    ),
)

model_options = option_group(
    click.option(
        "--model",
        default=None,
        help=f"open_clip model name or config JSON path [index default: {DEFAULT_MODEL}; "
        "search default: the library's model].",
    ),
    click.option(
        "--pretrained",
        default=None,
        help=f"Pretrained tag, checkpoint path, or 'none' for random weights [index default: {DEFAULT_PRETRAINED}].",
    ),
    click.option(
        "--device",
        type=click.Choice(DEVICE_CHOICES),
        default=DEFAULT_DEVICE,
        envvar="CLIPSEARCH_DEVICE",
        show_default=True,
        help="Where the model runs.",
    ),
    click.option(
        "--precision",
        type=click.Choice(PRECISION_CHOICES),
        default="auto",
        show_default=True,
        help="auto = fp16 on GPU, fp32 on CPU.",
    ),
    click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True),
)

result_options = option_group(
    click.option(
        "-k",
        "--top-k",
        "k",
        type=click.IntRange(min=1),
        default=DEFAULT_TOP_K,
        show_default=True,
        help="How many results.",
    ),
    click.option(
        "--in",
        "within",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Only images under this folder.",
    ),
    click.option("--min-score", type=float, default=None, help="Drop results scoring below this (cosine, -1..1)."),
    click.option("--json", "as_json", is_flag=True, help="One JSON object per result and line."),
    click.option("--paths", "paths_only", is_flag=True, help="Only paths, one per line (for piping)."),
    click.option(
        "--gpu-index",
        type=click.Choice(GPU_CHOICES),
        default="auto",
        show_default=True,
        help="Search the FAISS index on a GPU when faiss has one.",
    ),
)

captions_options = option_group(
    click.option(
        "--images-root",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder image paths are relative to [default: the captions file's folder].",
    ),
    click.option(
        "--format",
        "caption_format",
        type=click.Choice(FORMATS),
        default="auto",
        show_default=True,
        help="Captions file format.",
    ),
    click.option(
        "--split", default=None, help="Only this split (a CSV/JSONL `split` field; Karpathy JSON: default test)."
    ),
    click.option("--skip-missing", is_flag=True, help="Leave out listed images whose file is missing."),
)
"""How to read a captions file: `train` and `bench recall`."""
