"""`clipsearch search` and `clipsearch similar`: one query, results as lines, JSON or paths."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.options import (
    LibraryChoice,
    ModelChoice,
    ResultChoice,
    library_options,
    model_options,
    result_options,
)
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
    query: tuple[str, ...], template: str | None, results: ResultChoice, model: ModelChoice, library: LibraryChoice
) -> None:
    """Find the images that best match a text QUERY.

    \b
    Example:
      clipsearch search "a dog on the beach at sunset" -k 20
      clipsearch search red car --in ~/Pictures/2021 --json
    """
    with _searcher(library, model, results) as searcher:
        found = searcher.search_text(
            " ".join(query), results.k, template=template, within=results.within, min_score=results.min_score
        )
    print_results(found, results)


@click.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--include-self", is_flag=True, help="Keep the query image itself in the results.")
@result_options
@model_options
@library_options
def similar(image: Path, include_self: bool, results: ResultChoice, model: ModelChoice, library: LibraryChoice) -> None:
    """Find images that look like IMAGE (an indexed photo or any image file).

    \b
    Example:
      clipsearch similar ~/Pictures/IMG_0042.jpg -k 10
      clipsearch similar query.png --min-score 0.95 --paths   # near-duplicates
    """
    with _searcher(library, model, results) as searcher:
        found = searcher.search_image(
            image, results.k, include_self=include_self, within=results.within, min_score=results.min_score
        )
    print_results(found, results)


@contextmanager
def _searcher(library: LibraryChoice, model: ModelChoice, results: ResultChoice) -> Iterator[Searcher]:
    from retrieval.search import Searcher

    with library.open() as opened:
        yield Searcher(opened, model.encoder_for(opened), gpu=results.gpu_index)


def print_results(found: Sequence[SearchResult], shown: ResultChoice) -> None:
    """Each result as a line, a JSON object or a path, as `--json` and `--paths` say."""
    for result in found:
        if shown.as_json:
            echo_json(result.to_json())
        elif shown.paths_only:
            click.echo(result.path)
        else:
            size = f"{result.width}x{result.height}" if result.width else "?"
            taken = f", {result.taken_at:%Y-%m-%d}" if result.taken_at else ""
            click.echo(f"{result.rank:>3}  {result.score:.4f}  {result.path}  ({size}{taken})")
    if not found and not (shown.as_json or shown.paths_only):
        click.echo("no results", err=True)
