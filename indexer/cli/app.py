"""The `clipsearch` group and its edge: a library error becomes one clear message naming flags, warnings
print plainly, and `main` is the console entry point. Commands are added in `indexer.cli`."""

from __future__ import annotations

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
    "precision": "--precision",
    "format": "--format",
    "output": "--output",
    "resume": "--resume",
    "lr": "--lr",
    # model branch: training on generated scenes
    "hard_negatives": "--hard-negatives",
    "match_targets": "--match-targets",
    "style": "--style",
}
"""The flag of each library parameter that errors name (`ClipsearchError.parameters`)."""


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    click.secho(f"warning: {renamed(str(message), FLAGS, FLAGS)}", err=True, fg="yellow")


class ClipsearchGroup(click.Group):
    """Turns every library error into one clear message and exit code 1, and shows warnings plainly."""

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
                raise click.ClickException(exc.naming(FLAGS)) from exc


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
