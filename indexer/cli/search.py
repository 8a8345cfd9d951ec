"""`clipsearch search` and `clipsearch similar`: one query, results as lines, JSON or paths."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.options import library_options, model_options, result_options
from indexer.cli.output import echo_json

if TYPE_CHECKING:
    from retrieval.search import Searcher, SearchResult


@click.command()
@click.argument("query", nargs=-1, required=True)
@click.option("--template", default=None, help='Prompt template, e.g. "a photo of {}" (off by default).')
@result_options
@model_options
@library_options
def search(
    query: tuple[str, ...],
    template: str | None,
    k: int,
    within: Path | None,
    min_score: float | None,
    as_json: bool,
    paths_only: bool,
    gpu_index: str,
    model: str | None,
    pretrained: str | None,
    device: str,
    precision: str,
    batch_size: int,
    library_dir: Path | None,
    database_url: str | None,
) -> None:
    """Find the images that best match a text QUERY.

    \b
    Example:
      clipsearch search "a dog on the beach at sunset" -k 20
      clipsearch search red car --in ~/Pictures/2021 --json
    """
    with _searcher(library_dir, database_url, model, pretrained, device, precision, batch_size, gpu_index) as searcher:
        results = searcher.search_text(" ".join(query), k, template=template, within=within, min_score=min_score)
    print_results(results, as_json=as_json, paths_only=paths_only)


@click.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--include-self", is_flag=True, help="Keep the query image itself in the results.")
@result_options
@model_options
@library_options
def similar(
    image: Path,
    include_self: bool,
    k: int,
    within: Path | None,
    min_score: float | None,
    as_json: bool,
    paths_only: bool,
    gpu_index: str,
    model: str | None,
    pretrained: str | None,
    device: str,
    precision: str,
    batch_size: int,
    library_dir: Path | None,
    database_url: str | None,
) -> None:
    """Find images that look like IMAGE (an indexed photo or any image file).

    \b
    Example:
      clipsearch similar ~/Pictures/IMG_0042.jpg -k 10
      clipsearch similar query.png --min-score 0.95 --paths   # near-duplicates
    """
    with _searcher(library_dir, database_url, model, pretrained, device, precision, batch_size, gpu_index) as searcher:
        results = searcher.search_image(image, k, include_self=include_self, within=within, min_score=min_score)
    print_results(results, as_json=as_json, paths_only=paths_only)


@contextmanager
def _searcher(
    library_dir: Path | None,
    database_url: str | None,
    model: str | None,
    pretrained: str | None,
    device: str,
    precision: str,
    batch_size: int,
    gpu_index: str,
) -> Iterator[Searcher]:
    from retrieval.library import Library
    from retrieval.search import Searcher

    with Library(library_dir, database_url=database_url) as library:
        spec = library.model_for(model, pretrained)
        encoder = library.encoder(spec, device=device, precision=precision, batch_size=batch_size)
        yield Searcher(library, encoder, gpu=gpu_index)


def print_results(results: Sequence[SearchResult], *, as_json: bool, paths_only: bool) -> None:
    for result in results:
        if as_json:
            echo_json(result.to_json())
        elif paths_only:
            click.echo(result.path)
        else:
            size = f"{result.width}x{result.height}" if result.width else "?"
            taken = f", {result.taken_at:%Y-%m-%d}" if result.taken_at else ""
            click.echo(f"{result.rank:>3}  {result.score:.4f}  {result.path}  ({size}{taken})")
    if not results and not (as_json or paths_only):
        click.echo("no results", err=True)
