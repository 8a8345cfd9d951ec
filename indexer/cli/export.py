"""`clipsearch export`: the results of a query (every option of `search`) written into a folder."""

from __future__ import annotations

from pathlib import Path

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
from indexer.cli.search import (
    QueryChoice,
    QueryCommand,
    check_shown,
    min_relevance_option,
    query_options,
    searcher_for,
)
from retrieval.config import DEFAULT_EXPORT_MODE


@click.command(cls=QueryCommand)
@query_options
@click.option(
    "--to",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder to write into (made if need be).",
)
@click.option(
    "--link",
    "mode",
    flag_value="link",
    default=DEFAULT_EXPORT_MODE == "link",
    help="Symbolic links to the originals [default].",
)
@click.option("--hardlink", "mode", flag_value="hardlink", help="Hard links (same file system only).")
@click.option("--copy", "mode", flag_value="copy", help="Copies.")
@min_relevance_option
@result_options
@filter_options
@model_options
@library_options
def export(
    what: QueryChoice,
    folder: Path,
    mode: str,
    min_relevance: float | None,
    results: ResultChoice,
    filters: FilterChoice,
    model: ModelChoice,
    library: LibraryChoice,
) -> None:
    """Write the results of a QUERY into a folder, under their own names.

    The query is written as for `search` (words, W:TEXT weights, --image, --not, filters, -k). Names
    that clash get ' (2)', ' (3)', ... in result order; a file already in the folder is never overwritten,
    and running the same export again adds nothing. Prints each file written (--paths: only its path;
    --json: one object for the whole export).

    \b
    Example:
      clipsearch export beach sunset --not people -k 50 --to ~/Desktop/beach
      clipsearch export --image ref.jpg "at night" --in ~/Pictures/2021 --to night --copy
    """
    from retrieval.export import WRITTEN, export_files

    check_shown(results, null=False)
    query = what.query(results, filters.search_filter(), min_relevance=min_relevance)
    with searcher_for(library, model, results) as searcher:
        found = searcher.search(query)
    report = export_files([result.path for result in found], folder, mode=mode)
    if results.as_json:
        echo_json(report.to_json())
        return
    for item in report.files:
        if item.destination is None:
            echo_fs(f"missing: {item.source} (gone since it was indexed)", err=True)
        elif results.paths_only:
            echo_fs(item.destination)
        elif item.outcome == WRITTEN:
            echo_fs(f"{item.destination}  <-  {item.source}")
    counts = ", ".join(f"{report.count(outcome)} {outcome}" for outcome in ("written", "already there", "missing"))
    click.echo(f"exported {len(found)} result(s) into {report.folder} as {mode}: {counts}", err=True)
