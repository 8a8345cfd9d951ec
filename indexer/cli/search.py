"""`clipsearch search` and `clipsearch similar`: one query of weighted parts (`query_options`, which `export`
shares), results as lines, JSON or paths (newline- or NUL-separated)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.app import NAMES
from indexer.cli.options import (
    FilterChoice,
    LibraryChoice,
    ModelChoice,
    ResultChoice,
    filter_options,
    library_options,
    model_options,
    option_group,
    result_options,
)
from indexer.cli.output import echo_fs, echo_json
from retrieval.config import DEFAULT_MIN_RELEVANCE, DEFAULT_SORT, SORT_CHOICES

if TYPE_CHECKING:
    from retrieval.filters import SearchFilter
    from retrieval.query import Query
    from retrieval.search import Searcher, SearchResult

null_option = click.option(
    "-0",
    "--null",
    is_flag=True,
    help="Only paths, each ended by a NUL byte instead of a newline, for `xargs -0` (implies --paths).",
)
local_option = click.option(
    "--local",
    is_flag=True,
    help="Search in this process even when a `clipsearch serve` runs on the library (which answers warm).",
)


def check_shown(results: ResultChoice, null: bool) -> None:
    """`--json` prints whole results and `--paths`/`-0` only paths: asked together, the choice is the user's."""
    if results.as_json and (results.paths_only or null):
        paths = "--paths" if results.paths_only else "-0/--null"
        raise click.UsageError(f"--json and {paths} cannot be used together: choose whole results or only paths")


@dataclass(frozen=True)
class QueryChoice:
    """What to search for and how results are ordered: QUERY words, `--image`, `--not`, `--not-image`,
    `--template`, `--sort`, `--include-self` (and the negative weights `QueryCommand` sets aside)."""

    words: tuple[str, ...]
    images: tuple[Path, ...]
    negated: tuple[str, ...]
    negated_images: tuple[Path, ...]
    template: str | None
    sort: str
    include_self: bool
    weighted: tuple[str, ...]

    def query(
        self,
        results: ResultChoice,
        search_filter: SearchFilter,
        *,
        image: Path | None = None,
        min_relevance: float | None = None,
    ) -> Query:
        """The library's `Query`: `image` (similar's IMAGE) first, the `--image`s, the text parts
        (`text_parts`: plain words as one, each weighted word alone, each `--not`), the `--not-image`s; k and
        the cut-off of `results`, the images `search_filter` lets through; `min_relevance` as given (None: the
        default for a text query; refused for a query with an image part, which relevance is not made for)."""
        from retrieval.config import NOT_WEIGHT
        from retrieval.errors import InvalidQueryError
        from retrieval.query import Part, Query, relevance_cutoff, text_parts

        parts = [Part(image=str(path)) for path in ((image,) if image else ()) + self.images]
        parts += text_parts(self.words + self.weighted, self.negated)
        parts += [Part(image=str(path), weight=NOT_WEIGHT) for path in self.negated_images]
        if not parts:
            raise click.UsageError("nothing to search for: give some words, or an image with --image")
        try:  # the library's rule (the web API's too), refused here as a usage error before any library opens
            min_relevance = relevance_cutoff(parts, min_relevance)
        except InvalidQueryError as exc:
            raise click.UsageError(exc.naming(NAMES)) from exc
        return Query(
            tuple(parts),
            k=results.k,
            filter=search_filter,
            min_score=results.min_score,
            sort=self.sort,
            template=self.template,
            include_self=self.include_self,
            min_relevance=min_relevance,
        )


_NEGATIVE_WEIGHT = re.compile(r"-(?:\d+(?:\.\d*)?|\.\d+):[^\s\d]")


class QueryCommand(click.Command):
    """A command taking query words, where a word with a negative weight (`-1:people`) is a word, not an
    option: before click parses, each is handed to the hidden `--weighted` option (unless it is another
    option's value, or follows `--`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {
            name
            for param in self.params
            if isinstance(param, click.Option) and not param.is_flag and not param.count
            for name in param.opts
        }
        protected: list[str] = []
        for position, arg in enumerate(args):
            if arg == "--":
                protected += args[position:]
                break
            after_option = bool(protected) and protected[-1] in takes_value
            if _NEGATIVE_WEIGHT.match(arg) and not after_option:
                protected.append("--weighted")
            protected.append(arg)
        return super().parse_args(ctx, protected)


query_options = option_group(
    QueryChoice,
    "what",
    click.argument("words", nargs=-1, metavar="[QUERY]..."),
    click.option(
        "--image",
        "images",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="An image to search by, with the words (repeatable).",
    ),
    click.option("--not", "negated", multiple=True, help="Away from this text (weight -1; repeatable)."),
    click.option(
        "--not-image",
        "negated_images",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Away from this image (weight -1; repeatable).",
    ),
    click.option(
        "--template", default=None, help='Prompt template for each text, e.g. "a photo of {}" (off by default).'
    ),
    click.option(
        "--sort",
        type=click.Choice(SORT_CHOICES),
        default=DEFAULT_SORT,
        show_default=True,
        help="Order of the results chosen by score: by score, or by date taken (else file mtime), "
        "oldest (date) or newest (-date) first.",
    ),
    click.option("--include-self", is_flag=True, help="Keep the query's own images in the results."),
    click.option("--weighted", "weighted", multiple=True, hidden=True),
)
"""The query's options, shared by `search`, `similar` and `export` (filters added here reach all three)."""


min_relevance_option = click.option(
    "--min-relevance",
    type=float,
    default=None,
    help=f"Hide results whose relevance (0..1, calibrated per query) is below this; 0 shows every result. "
    f"Default {DEFAULT_MIN_RELEVANCE} for a text-only query; queries with an image have no relevance.",
)


@click.command(cls=QueryCommand)
@query_options
@min_relevance_option
@result_options
@filter_options
@null_option
@local_option
@model_options
@library_options
def search(
    what: QueryChoice,
    min_relevance: float | None,
    results: ResultChoice,
    filters: FilterChoice,
    null: bool,
    local: bool,
    model: ModelChoice,
    library: LibraryChoice,
) -> None:
    """Find the images that best match a QUERY: words, weighted words, images, and parts to avoid.

    Each result shows its score (cosine) and, for a text-only query, its relevance (0..1, calibrated so that
    one cutoff works across queries); results below --min-relevance are hidden, so a query the model does not
    understand may show none.

    When `clipsearch serve` runs on the library, a text query is sent to it (warm: no model to load) and
    prints exactly what a local search prints; with no server, or --local, the search runs here.

    The plain words together are one text; a word W:TEXT weighs TEXT by the number W (2:beach, -1:people);
    --not TEXT is -1:TEXT. The parts' unit embeddings are summed by weight and renormalised. A digit or space
    after the colon keeps a word plain (10:30), and so does a leading backslash ('\\2:beach').

    \b
    Example:
      clipsearch search "a dog on the beach at sunset" -k 20
      clipsearch search red car --in ~/Pictures/2021 --json
      clipsearch search beach sunset --not people --sort -date
      clipsearch search --image ref.jpg "at night"
      clipsearch search 2:beach 1:sunset -1:people
      clipsearch search "birthday cake" --paths -0 | xargs -0 open
      clipsearch search beach --after 2021-06 --before 2021-09 --camera iphone --orientation landscape
      clipsearch search dog --in ~/Pictures/trips --in ~/Pictures/family --ext jpg,heic --min-width 2000
      clipsearch search "three circles" --min-relevance 0.6    # only confident hits
    """
    check_shown(results, null)
    query = what.query(results, filters.search_filter(), min_relevance=min_relevance)  # bad values refused here
    found = None if local else served_results(query, library, model, results)
    if found is None:
        with searcher_for(library, model, results) as searcher:
            found = searcher.search(query)
    print_results(found, results, null=null)
    if not found and query.min_relevance and not (results.as_json or results.paths_only or null):
        click.echo(
            f"(matches below relevance {query.min_relevance:g} are hidden: --min-relevance 0 shows the closest ones)",
            err=True,
        )


@click.command(cls=QueryCommand)
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@query_options
@result_options
@filter_options
@null_option
@model_options
@library_options
def similar(
    image: Path,
    what: QueryChoice,
    results: ResultChoice,
    filters: FilterChoice,
    null: bool,
    model: ModelChoice,
    library: LibraryChoice,
) -> None:
    """Find images that look like IMAGE (an indexed photo or any image file), optionally steered by words.

    \b
    Example:
      clipsearch similar ~/Pictures/IMG_0042.jpg -k 10
      clipsearch similar query.png --min-score 0.95 --paths   # near-duplicates
      clipsearch similar ref.jpg "at night" --not people
      clipsearch similar IMG_0042.jpg --after 2020 --before 2021 --camera canon
    """
    check_shown(results, null)
    query = what.query(results, filters.search_filter(), image=image)
    with searcher_for(library, model, results) as searcher:
        found = searcher.search(query)
    print_results(found, results, null=null)


def served_results(
    query: Query, library: LibraryChoice, model: ModelChoice, results: ResultChoice
) -> list[SearchResult] | None:
    """The results of `query` from a `clipsearch serve` running on the chosen library, or None (search here):
    only for the library's own folder and store, with the model and the index as the server runs them (no
    model, device, backend, precision or FAISS placement asked for)."""
    from indexer.server_client import search_via_server
    from retrieval.config import DEFAULT_BACKEND, DEFAULT_DEVICE, default_library_dir

    as_served = (model.model, model.pretrained, model.device, model.backend, model.precision, results.gpu_index)
    if library.database_url is not None or as_served != (None, None, DEFAULT_DEVICE, DEFAULT_BACKEND, "auto", "auto"):
        return None
    return search_via_server(Path(library.directory or default_library_dir()).expanduser(), query)


@contextmanager
def searcher_for(library: LibraryChoice, model: ModelChoice, results: ResultChoice) -> Iterator[Searcher]:
    """A searcher over the chosen library with the chosen model, the library open while it is used."""
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
    relevance = "   -" if result.relevance is None else f"{result.relevance:.2f}"
    return f"{result.rank:>3}  {result.score:.4f}  {relevance}  {result.path}  ({size}{taken})"
