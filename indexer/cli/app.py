"""The `clipsearch` group and its edge: a library error becomes one clear message naming flags, so does a
file system refusal (disk full, read-only, permission), warnings print plainly, and `main` is the console
entry point. Commands are added in `indexer.cli`."""

from __future__ import annotations

import errno
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

import click

from retrieval.errors import ClipsearchError, renamed

FLAGS = {
    "model": "--model",
    "pretrained": "--pretrained",
    "directory": "--library",
    "library": "--library",
    "device": "--device",
    "backend": "--backend",
    "precision": "--precision",
    "format": "--format",
    "output": "--output",
    "resume": "--resume",
    "lr": "--lr",
    "k": "--top-k",
    "within": "--in",
    "min_score": "--min-score",
    "min_relevance": "--min-relevance",  # relevance branch
    # model branch: training on generated scenes
    "hard_negatives": "--hard-negatives",
    "match_targets": "--match-targets",
    "style": "--style",
    # filters branch: search filters
    "after": "--after",
    "before": "--before",
    "camera": "--camera",
    "extensions": "--ext",
    "min_width": "--min-width",
    "min_height": "--min-height",
    "orientation": "--orientation",
    "threshold": "--threshold",  # dups branch
    # query branch: fused queries, sort, export
    "sort": "--sort",
    "folder": "--to",
    "database_url": "--database-url",  # pg branch
    # ray branch: indexing on a Ray cluster
    "ray_address": "--ray",
}
"""The flag of each library parameter that errors name (`ClipsearchError.parameters`)."""
NAMES = FLAGS | {"weight": "W in a W:TEXT word"}
"""What the CLI calls each library parameter that errors name: its flag, or for a parameter that is no flag
(a query part's weight) the command-line syntax that sets it."""

_FILE_SYSTEM_REFUSALS = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or raise the quota"),
    errno.EFBIG: ("the file grew past the size the file system or a limit allows", "raise the limit"),
    errno.EROFS: ("the file system is read-only", "use a library on a writable disk"),
    errno.EACCES: ("permission was denied", "check the owner and permissions"),
}
"""The OSErrors that the edge turns into a sentence: errno -> (what happened, what to do)."""


def file_system_message(exc: OSError) -> str | None:
    """One sentence for a write the file system refused (what, which path, that committed work is kept), or
    None for any other OSError, which stays a traceback: it is a bug to fix, not a condition to explain."""
    refusal = _FILE_SYSTEM_REFUSALS.get(exc.errno or 0)
    if refusal is None:
        return None
    what, remedy = refusal
    named = isinstance(exc.filename, (str, bytes, os.PathLike))
    where = f" at {os.fsdecode(exc.filename)}" if named else ""
    reason = exc.strerror or os.strerror(exc.errno or 0)
    return f"{what}{where} ({reason}): nothing committed before is lost; {remedy} and run the command again"


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    click.secho(f"warning: {renamed(str(message), NAMES, NAMES)}", err=True, fg="yellow")


class ClipsearchGroup(click.Group):
    """Turns every library error, and the file system's refusals, into one clear message and exit code 1, and
    shows warnings plainly."""

    def invoke(self, ctx: click.Context) -> Any:
        import logging

        from retrieval.model.loading import RandomWeightsWarning

        logging.getLogger().setLevel(logging.ERROR)  # open_clip logs its own notes on the root logger
        with warnings.catch_warnings():
            warnings.simplefilter("always", RandomWeightsWarning)
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except ClipsearchError as exc:
                raise click.ClickException(exc.naming(NAMES)) from exc
            except OSError as exc:
                message = file_system_message(exc)
                if message is None:
                    raise
                raise click.ClickException(message) from exc


@click.group(cls=ClipsearchGroup)
@click.version_option(package_name="clipsearch")
def cli() -> None:
    """clipsearch: search your photos by text or by example image, offline, with open_clip + FAISS.

    \b
    Example:
      clipsearch index ~/Pictures
      clipsearch search "a dog on the beach at sunset" -k 20
    """


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="clipsearch")
