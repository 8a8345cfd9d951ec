"""`clipsearch search` and `clipsearch similar`: one query, results as lines, JSON or paths (newline- or
NUL-separated)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.options import (
    FilterChoice,
    LibraryChoice,
    ModelChoice,
    ResultChoice,
    filter_options,
    library_options,
    model_options,
    result_options,
)
from indexer.cli.output import echo_fs, echo_json

if TYPE_CHECKING:
    from retrieval.search import Searcher, SearchResult

null_option = click.option(
    "-0",
    "--null",
    is_flag=True,
    help="Only paths, each ended by a NUL byte instead of a newline, for `xargs -0` (implies --paths).",
)


def check_shown(results: ResultChoice, null: bool) -> None:
    """`--json` prints whole results and `--paths`/`-0` only paths: asked together, the choice is the user's."""
    if results.as_json and (results.paths_only or null):
        paths = "--paths" if results.paths_only else "-0/--null"
        raise click.UsageError(f"--json and {paths} cannot be used together: choose whole results or only paths")


@click.command()
@click.argument("query", nargs=-1, required=True)
@click.option("--template", default=None, help='Prompt template, e.g. "a photo of {}" (off by default).')
@result_options
@filter_options
@null_option
@model_options
@library_options
def search(
    query: tuple[str, ...],
    template: str | None,
    results: ResultChoice,
    filters: FilterChoice,
    null: bool,
    model: ModelChoice,
    library: LibraryChoice,
) -> None:
    """Find the images that best match a text QUERY.

    \b
    Example:
      clipsearch search "a dog on the beach at sunset" -k 20
      clipsearch search red car --in ~/Pictures/2021 --json
      clipsearch search "birthday cake" --paths -0 | xargs -0 open
      clipsearch search beach --after 2021-06 --before 2021-09 --camera iphone --orientation landscape
      clipsearch search dog --in ~/Pictures/trips --in ~/Pictures/family --ext jpg,heic --min-width 2000
    """
    check_shown(results, null)
    chosen = filters.search_filter()  # bad filter values are refused before the model loads
    with _searcher(library, model, results) as searcher:
        found = searcher.search_text(
            " ".join(query),
            results.k,
            template=template,
            min_score=results.min_score,
            search_filter=chosen,
        )
    print_results(found, results, null=null)


@click.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--include-self", is_flag=True, help="Keep the query image itself in the results.")
@result_options
@filter_options
@null_option
@model_options
@library_options
def similar(
    image: Path,
    include_self: bool,
    results: ResultChoice,
    filters: FilterChoice,
    null: bool,
    model: ModelChoice,
    library: LibraryChoice,
) -> None:
    """Find images that look like IMAGE (an indexed photo or any image file).

    \b
    Example:
      clipsearch similar ~/Pictures/IMG_0042.jpg -k 10
      clipsearch similar query.png --min-score 0.95 --paths   # near-duplicates
      clipsearch similar IMG_0042.jpg --after 2020 --before 2021 --camera canon
    """
    check_shown(results, null)
    chosen = filters.search_filter()
    with _searcher(library, model, results) as searcher:
        found = searcher.search_image(
            image,
            results.k,
            include_self=include_self,
            min_score=results.min_score,
            search_filter=chosen,
        )
    print_results(found, results, null=null)


@contextmanager
def _searcher(library: LibraryChoice, model: ModelChoice, results: ResultChoice) -> Iterator[Searcher]:
    from retrieval.search import Searcher

    with library.open(reading=True) as opened:
        yield Searcher(opened, model.encoder_for(opened), gpu=results.gpu_index)


def print_results(found: Sequence[SearchResult], shown: ResultChoice, *, null: bool = False) -> None:
    """Each result as a line, a JSON object or a path, as `--json`, `--paths` and `-0` say; paths as the file
    system's bytes (`echo_fs`), JSON with their undecodable bytes as `\\udcXX` escapes (`echo_json`)."""
    show = _shower(shown, null)
    for result in found:
        show(result)
    if not found and not (shown.as_json or shown.paths_only or null):
        click.echo("no results", err=True)


def _shower(shown: ResultChoice, null: bool) -> Callable[[SearchResult], None]:
    if shown.as_json:
        return lambda result: echo_json(result.to_json())
    if shown.paths_only or null:
        end = b"\0" if null else b"\n"
        return lambda result: echo_fs(result.path, end=end)
    return lambda result: echo_fs(_line(result))


def _line(result: SearchResult) -> str:
    size = f"{result.width}x{result.height}" if result.width else "?"
    taken = f", {result.taken_at:%Y-%m-%d}" if result.taken_at else ""
    return f"{result.rank:>3}  {result.score:.4f}  {result.path}  ({size}{taken})"
