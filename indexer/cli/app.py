"""The `clipsearch` command line: parse, call the Python API, format. No logic of its own.

`indexer.cli` adds the `index` command to this group and is the console entry point, so that
`retrieval` never imports `indexer`.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from retrieval.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    DEFAULT_TOP_K,
    DEVICE_CHOICES,
    default_library_dir,
)
from retrieval.errors import ClipsearchError
from retrieval.index import GPU_CHOICES, gpu_count
from retrieval.library import Library
from retrieval.model.devices import PRECISION_CHOICES, resolve_device
from retrieval.model.encoder import Encoder, RandomWeightsWarning
from retrieval.model.specs import ModelSpec
from retrieval.search import Searcher, SearchResult

F = TypeVar("F", bound=Callable[..., Any])


class ClipsearchGroup(click.Group):
    """Turns every library error into one clear message and exit code 1, and shows warnings plainly."""

    def invoke(self, ctx: click.Context) -> Any:
        def show(message: Any, category: Any, *_args: Any, **_kwargs: Any) -> None:
            click.secho(f"warning: {message}", err=True, fg="yellow")

        logging.getLogger().setLevel(logging.ERROR)  # open_clip logs its own notes on the root logger
        with warnings.catch_warnings():
            warnings.simplefilter("always", RandomWeightsWarning)
            warnings.showwarning = show
            try:
                return super().invoke(ctx)
            except ClipsearchError as exc:
                raise click.ClickException(str(exc)) from exc


@click.group(cls=ClipsearchGroup)
@click.version_option(package_name="clipsearch")
def cli() -> None:
    """clipsearch: search your photos by text or by example image, offline, with open_clip + FAISS.

    \b
    Example:
      clipsearch index ~/Pictures
      clipsearch search "a dog on the beach at sunset" -k 20
    """


def _stacked(func: F, options: Sequence[Callable[[Any], Any]]) -> F:
    """Apply click option decorators so that they list in `options` order in --help."""
    for option in reversed(options):
        func = option(func)
    return func


def library_options(func: F) -> F:
    func = click.option(
        "--database-url",
        envvar="CLIPSEARCH_DATABASE_URL",
        default=None,
        help="SQLAlchemy URL of the store (default: sqlite file inside the library folder).",
    )(func)
    return click.option(
        "--library",
        "library_dir",
        envvar="CLIPSEARCH_LIBRARY",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Library folder [env CLIPSEARCH_LIBRARY; default: your user data folder].",
    )(func)


def model_options(func: F) -> F:
    options = [
        click.option(
            "--model",
            default=None,
            help=f"open_clip model name or config JSON path [index default: {DEFAULT_MODEL}; "
            "search default: the library's model].",
        ),
        click.option(
            "--pretrained",
            default=None,
            help=f"Pretrained tag, checkpoint path, or 'none' for random weights "
            f"[index default: {DEFAULT_PRETRAINED}].",
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
    ]
    return _stacked(func, options)


def result_options(func: F) -> F:
    options = [
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
    ]
    return _stacked(func, options)


def stderr_progress_bar(length: int, label: str) -> Any:
    """An entered click progress bar on stderr with position, ETA and a free-text note (`current_item`);
    the caller exits it."""
    bar = click.progressbar(
        length=length,
        label=label,
        show_pos=True,
        show_eta=True,
        file=sys.stderr,
        item_show_func=lambda note: note,
    )
    bar.__enter__()
    return bar


def open_library(library_dir: Path | None, database_url: str | None, *, create: bool = False) -> Library:
    return Library(library_dir or default_library_dir(), create=create, database_url=database_url)


def chosen_spec(library: Library, model: str | None, pretrained: str | None) -> ModelSpec | None:
    """The model named on the command line, completed from the library's record; None = the library's own."""
    recorded = library.recorded_model()
    if model is None and pretrained is None:
        return recorded
    base = recorded or ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED)
    if model is not None:
        model = ModelSpec(model, base.pretrained).absolute().model  # ./tiny.json names the recorded /abs/tiny.json
    if pretrained is None:
        pretrained = base.pretrained if model in (None, base.model) else DEFAULT_PRETRAINED
    return ModelSpec(model or base.model, pretrained)


def make_encoder(library: Library, spec: ModelSpec | None, device: str, precision: str, batch_size: int) -> Encoder:
    return library.encoder(spec, device=device, precision=precision, batch_size=batch_size)


@contextmanager
def searcher_for(kwargs: dict[str, Any]) -> Iterator[Searcher]:
    with open_library(kwargs["library_dir"], kwargs["database_url"]) as library:
        spec = chosen_spec(library, kwargs["model"], kwargs["pretrained"])
        encoder = make_encoder(library, spec, kwargs["device"], kwargs["precision"], kwargs["batch_size"])
        yield Searcher(library, encoder, gpu=kwargs["gpu_index"])


def print_results(results: Sequence[SearchResult], *, as_json: bool, paths_only: bool) -> None:
    for result in results:
        if as_json:
            click.echo(json.dumps(result.to_json()))
        elif paths_only:
            click.echo(result.path)
        else:
            size = f"{result.width}x{result.height}" if result.width else "?"
            taken = f", {result.taken_at:%Y-%m-%d}" if result.taken_at else ""
            click.echo(f"{result.rank:>3}  {result.score:.4f}  {result.path}  ({size}{taken})")
    if not results and not (as_json or paths_only):
        click.echo("no results", err=True)


@cli.command()
@click.argument("query", nargs=-1, required=True)
@click.option("--template", default=None, help='Prompt template, e.g. "a photo of {}" (off by default).')
@result_options
@model_options
@library_options
def search(query: tuple[str, ...], template: str | None, **kwargs: Any) -> None:
    """Find the images that best match a text QUERY.

    \b
    Example:
      clipsearch search "a dog on the beach at sunset" -k 20
      clipsearch search red car --in ~/Pictures/2021 --json
    """
    with searcher_for(kwargs) as searcher:
        results = searcher.search_text(
            " ".join(query), kwargs["k"], template=template, within=kwargs["within"], min_score=kwargs["min_score"]
        )
    print_results(results, as_json=kwargs["as_json"], paths_only=kwargs["paths_only"])


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--include-self", is_flag=True, help="Keep the query image itself in the results.")
@result_options
@model_options
@library_options
def similar(image: Path, include_self: bool, **kwargs: Any) -> None:
    """Find images that look like IMAGE (an indexed photo or any image file).

    \b
    Example:
      clipsearch similar ~/Pictures/IMG_0042.jpg -k 10
      clipsearch similar query.png --min-score 0.95 --paths   # near-duplicates
    """
    with searcher_for(kwargs) as searcher:
        results = searcher.search_image(
            image, kwargs["k"], include_self=include_self, within=kwargs["within"], min_score=kwargs["min_score"]
        )
    print_results(results, as_json=kwargs["as_json"], paths_only=kwargs["paths_only"])


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object.")
@click.option(
    "--failures",
    "failure_limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many skipped files to list.",
)
@library_options
def info(as_json: bool, failure_limit: int, library_dir: Path | None, database_url: str | None) -> None:
    """Show what is in the library: model, counts, index file, skipped files.

    \b
    Example:
      clipsearch info
      clipsearch info --json --failures 100
    """
    with open_library(library_dir, database_url) as library:
        facts = library_facts(library, failure_limit)
    if as_json:
        click.echo(json.dumps(facts, default=str))
        return
    for key in (
        "library",
        "database",
        "model",
        "dim",
        "indexed",
        "failed",
        "total_bytes",
        "first_taken",
        "last_taken",
        "index_file",
        "model_device",
        "faiss_gpus",
    ):
        click.echo(f"{key.replace('_', ' '):>12}: {facts[key] if facts[key] is not None else '-'}")
    for path, reason in facts["failures"]:
        click.echo(f"     skipped: {path}: {reason}")


def library_facts(library: Library, failure_limit: int) -> dict[str, Any]:
    stats = library.store.stats(failure_limit)
    index_path = library.index_path(stats.generation)
    return {
        "library": str(library.directory),
        "database": library.store.engine.url.render_as_string(hide_password=True),
        "model": library.recorded_description(),
        "model_identity": library.recorded_identity(),
        "dim": library.dim(),
        "indexed": stats.indexed,
        "failed": stats.failed,
        "total_bytes": stats.total_bytes,
        "first_taken": stats.first_taken.isoformat() if stats.first_taken else None,
        "last_taken": stats.last_taken.isoformat() if stats.last_taken else None,
        "generation": stats.generation,
        "index_file": str(index_path) if index_path.exists() else "stale or missing (rebuilt on next search)",
        "model_device": resolve_device("auto"),
        "faiss_gpus": gpu_count(),
        "failures": stats.failures,
    }
