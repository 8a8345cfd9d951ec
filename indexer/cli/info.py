"""`clipsearch info`: the library's facts (`Library.facts`), as lines or one JSON object."""

from __future__ import annotations

import click

from indexer.cli.options import LibraryChoice, library_options
from indexer.cli.output import echo_fs, echo_json
from retrieval.config import DEFAULT_FAILURES_SHOWN

_SHOWN = (
    "library",
    "database",
    "model",
    "dim",
    "precision",
    "indexed",
    "failed",
    "total_bytes",
    "first_taken",
    "last_taken",
    "index_file",
    "model_device",
    "faiss_gpus",
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object.")
@click.option(
    "--failures",
    "failure_limit",
    type=click.IntRange(min=0),
    default=DEFAULT_FAILURES_SHOWN,
    show_default=True,
    help="How many skipped files to list.",
)
@library_options
def info(as_json: bool, failure_limit: int, library: LibraryChoice) -> None:
    """Show what is in the library: model, counts, index file, skipped files.

    \b
    Example:
      clipsearch info
      clipsearch info --json --failures 100
    """
    with library.open(reading=True) as opened:
        facts = opened.facts(failure_limit).to_json()
    if as_json:
        echo_json(facts)
        return
    for key in _SHOWN:
        echo_fs(f"{key.replace('_', ' '):>12}: {facts[key] if facts[key] is not None else '-'}")
    for path, reason in facts["failures"]:
        echo_fs(f"     skipped: {path}: {reason}")
