"""The option groups commands share, each built the one way: `option_group` stacks a list of click options
and hands the command what they say as ONE frozen dataclass (a "choice"), so a command names a group once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from retrieval.config import (
    BACKEND_CHOICES,
    BACKEND_ENV,
    DEFAULT_BACKEND,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    DEFAULT_TOP_K,
    DEVICE_CHOICES,
    GPU_CHOICES,
    LIBRARY_ENV,
    ORIENTATIONS,
)
from retrieval.model.devices import PRECISION_CHOICES
from retrieval.quality.captions import FORMATS, CaptionedDataset, load_captions

if TYPE_CHECKING:
    from retrieval.filters import SearchFilter
    from retrieval.library import Library
    from retrieval.model.encoder import Encoder

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def option_group(choice: type[Any], keyword: str, *options: Decorator) -> Decorator:
    """One decorator applying `options` (listed in this order in --help) and passing the command, instead of
    their values, `keyword=choice(...)`: each option's parameter name is a field of the dataclass `choice`."""
    names = [field.name for field in fields(choice)]

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        def collect(**values: Any) -> Any:
            chosen = choice(**{name: values.pop(name) for name in names})
            return command(**values, **{keyword: chosen})

        func: Callable[..., Any] = functools.update_wrapper(collect, command)  # name, docstring, click params
        for option in reversed(options):
            func = option(func)
        return func

    return apply


@dataclass(frozen=True)
class LibraryChoice:
    """Which library: `--library` and `--database-url`."""

    directory: Path | None
    database_url: str | None

    def open(self, *, create: bool = False, reading: bool = False) -> Library:
        """The library; `reading` for a command that only reads it (`Library`'s light read path)."""
        from retrieval.library import Library  # the store's code loads when a command runs, not for --help

        return Library(self.directory, create=create, database_url=self.database_url, reading=reading)


@dataclass(frozen=True)
class ModelChoice:
    """Which model and how it runs: `--model`, `--pretrained`, `--device`, `--backend`, `--precision`,
    `--batch-size`."""

    model: str | None
    pretrained: str | None
    device: str
    precision: str
    batch_size: int
    backend: str = DEFAULT_BACKEND

    def encoder_for(self, library: Library, *, or_default: bool = False) -> Encoder:
        """The encoder of the model chosen for `library` (`Library.model_for`: named, recorded or default)."""
        spec = library.model_for(self.model, self.pretrained, or_default=or_default)
        return library.encoder(
            spec, device=self.device, precision=self.precision, batch_size=self.batch_size, backend=self.backend
        )


@dataclass(frozen=True)
class ResultChoice:
    """Which results and how they print: `-k`, `--min-score`, `--json`, `--paths`, `--gpu-index`."""

    k: int
    min_score: float | None
    as_json: bool
    paths_only: bool
    gpu_index: str


@dataclass(frozen=True)
class FilterChoice:
    """Which images a query may return: `--in`, `--after`, `--before`, `--camera`, `--ext`, `--min-width`,
    `--min-height`, `--orientation` (every one given must pass)."""

    within: tuple[Path, ...]
    after: str | None
    before: str | None
    camera: str | None
    extensions: tuple[str, ...]
    min_width: int | None
    min_height: int | None
    orientation: str | None

    def search_filter(self, exclude_ids: set[int] | None = None) -> SearchFilter:
        """The library's `SearchFilter` of these options; a bad date raises `InvalidDateError` naming it."""
        from retrieval.filters import SearchFilter  # faiss: when a command runs, not for --help

        return SearchFilter.of(
            within=self.within or None,
            after=self.after,
            before=self.before,
            camera=self.camera,
            extensions=self.extensions or None,
            min_width=self.min_width,
            min_height=self.min_height,
            orientation=self.orientation,
            exclude_ids=exclude_ids,
        )


@dataclass(frozen=True)
class CaptionsChoice:
    """How to read a captions file: `--images-root`, `--format`, `--split`, `--skip-missing`."""

    images_root: Path | None
    caption_format: str
    split: str | None
    skip_missing: bool

    def load(self, path: Path) -> CaptionedDataset:
        return load_captions(
            path,
            images_root=self.images_root,
            format=self.caption_format,
            split=self.split,
            skip_missing=self.skip_missing,
        )


library_options = option_group(
    LibraryChoice,
    "library",
    click.option(
        "--library",
        "directory",
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
    ModelChoice,
    "model",
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
        "--backend",
        type=click.Choice(BACKEND_CHOICES),
        default=DEFAULT_BACKEND,
        envvar=BACKEND_ENV,
        show_default=True,
        help="What runs the model: auto = ONNX Runtime on CPU (exported once into the library), torch on GPU.",
    ),
    click.option(
        "--precision",
        type=click.Choice(PRECISION_CHOICES),
        default="auto",
        show_default=True,
        help="auto = fp16 on GPU, fp32 on CPU; int8 = quantised image tower (CPU, ONNX backend).",
    ),
    click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True),
)

result_options = option_group(
    ResultChoice,
    "results",
    click.option(
        "-k",
        "--top-k",
        "k",
        type=click.IntRange(min=1),
        default=DEFAULT_TOP_K,
        show_default=True,
        help="How many results.",
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

filter_options = option_group(
    FilterChoice,
    "filters",
    click.option(
        "--in",
        "within",
        type=click.Path(file_okay=False, path_type=Path),
        multiple=True,
        help="Only images under this folder; repeat for several (images under any of them).",
    ),
    click.option(
        "--after",
        metavar="DATE",
        default=None,
        help="Only images dated from the start of DATE on (2021 = from 2021-01-01 00:00, included). "
        "DATE: 2021, 2021-06, 2021-06-15 or 2021-06-15T14:30. An image's date is its EXIF date taken, else its "
        "file's modification time (local time).",
    ),
    click.option(
        "--before",
        metavar="DATE",
        default=None,
        help="Only images dated before the start of DATE (2021-06 = before 2021-06-01 00:00, excluded).",
    ),
    click.option(
        "--camera", metavar="TEXT", default=None, help="Only images whose camera make or model holds TEXT (any case)."
    ),
    click.option(
        "--ext",
        "extensions",
        metavar="EXT[,EXT]",
        multiple=True,
        help="Only files with these extensions (jpg,png or repeated; any case; jpeg = jpg, tiff = tif).",
    ),
    click.option(
        "--min-width", type=click.IntRange(min=1), default=None, help="Only images at least this many pixels wide."
    ),
    click.option(
        "--min-height", type=click.IntRange(min=1), default=None, help="Only images at least this many pixels high."
    ),
    click.option(
        "--orientation",
        type=click.Choice(ORIENTATIONS, case_sensitive=False),
        default=None,
        help="Only landscape (wider than high), portrait (higher than wide) or square images.",
    ),
)

captions_options = option_group(
    CaptionsChoice,
    "reader",
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
