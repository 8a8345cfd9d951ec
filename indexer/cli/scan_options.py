"""The scan options `index` and `watch` share: which files under the roots are read, and by how many threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from retrieval.config import DEFAULT_DECODE_WORKERS

_OPTIONS = [
    click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files or folders matching GLOB (repeatable)."),
    click.option(
        "--include-hidden", is_flag=True, help="Also index hidden files and folders (names starting with '.')."
    ),
    click.option(
        "--follow-symlinks",
        is_flag=True,
        help="Follow symbolic links to files and folders, even ones that lead outside ROOTS. By default links are "
        "skipped and counted: a link inside ROOTS leads to images indexed under their own path anyway.",
    ),
    click.option("--retry-errors", is_flag=True, help="Try files that failed before again, even if unchanged."),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=DEFAULT_DECODE_WORKERS,
        show_default=True,
        help="Image decoding threads.",
    ),
]


def scan_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --exclude, --include-hidden, --follow-symlinks, --retry-errors and --workers, in that order."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command
