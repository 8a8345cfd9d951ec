"""`clipsearch index`, added to the `indexer.cli.app` group; this module is the console entry point."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

import indexer.cli.bench  # noqa: F401  (registers bench and demo; it imports indexer.cli.train: train, generate-dataset)
from indexer.cli.app import (
    chosen_spec,
    cli,
    library_options,
    make_encoder,
    model_options,
    open_library,
    stderr_progress_bar,
)
from indexer.pipeline import IndexReport, ProgressCallback, index_folders
from indexer.scan import ScanOptions, check_roots
from retrieval.config import DEFAULT_DECODE_WORKERS, DEFAULT_MODEL, DEFAULT_PRETRAINED
from retrieval.model.specs import ModelSpec

__all__ = ["cli", "main"]


@cli.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files or folders matching GLOB (repeatable).")
@click.option("--include-hidden", is_flag=True, help="Also index hidden files and folders (names starting with '.').")
@click.option("--follow-symlinks", is_flag=True, help="Descend into symlinked folders.")
@click.option("--retry-errors", is_flag=True, help="Try files that failed before again, even if unchanged.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=DEFAULT_DECODE_WORKERS,
    show_default=True,
    help="Image decoding threads.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@model_options
@library_options
def index(roots: tuple[Path, ...], **kwargs: Any) -> None:
    """Index the images under ROOTS (incremental: only new and changed files are embedded).

    \b
    Example:
      clipsearch index ~/Pictures
      clipsearch index ~/Pictures /mnt/photos --exclude '*/thumbnails/*'
      clipsearch index ./demo --model data/models/tiny.json --pretrained none   # offline test run
    """
    options = ScanOptions(
        include_hidden=kwargs["include_hidden"],
        exclude=tuple(kwargs["exclude"]),
        follow_symlinks=kwargs["follow_symlinks"],
    )
    check_roots(str(root) for root in roots)  # before a library is created for nothing
    with open_library(kwargs["library_dir"], kwargs["database_url"], create=True) as library:
        spec = chosen_spec(library, kwargs["model"], kwargs["pretrained"]) or ModelSpec(
            DEFAULT_MODEL, DEFAULT_PRETRAINED
        )
        encoder = make_encoder(library, spec, kwargs["device"], kwargs["precision"], kwargs["batch_size"])
        show_progress = not kwargs["quiet"] and not kwargs["as_json"] and sys.stderr.isatty()
        with _progress_bar(show_progress) as progress:
            report = index_folders(
                library,
                encoder,
                [str(r) for r in roots],
                options=options,
                workers=kwargs["workers"],
                retry_errors=kwargs["retry_errors"],
                progress=progress,
            )
    if kwargs["as_json"]:
        click.echo(json.dumps(asdict(report) | {"images_per_second": report.images_per_second}))
    else:
        _print_report(report)


class _progress_bar:
    """A click progress bar on stderr (count, rate, ETA), or nothing when not wanted."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.started = time.perf_counter()

    def __enter__(self) -> ProgressCallback | None:
        return self.update if self.enabled else None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = stderr_progress_bar(total, "embedding")
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(done - self.bar.pos, current_item=f"{rate:.1f} img/s")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _print_report(report: IndexReport) -> None:
    click.echo(
        f"indexed {', '.join(report.roots)}: {report.scanned} images found, {report.embedded} embedded "
        f"({report.images_per_second:.1f}/s), {report.unchanged} unchanged, {report.moved} moved, "
        f"{report.copied} copied, {report.touched} touched, {report.removed} removed, "
        f"{report.failed} skipped as unreadable, in {report.seconds:.1f}s"
    )
    for path, reason in report.failures[:10]:
        click.echo(f"  skipped {path}: {reason}", err=True)
    if len(report.failures) > 10:
        click.echo(f"  ... and {len(report.failures) - 10} more (see `clipsearch info`)", err=True)
    for path, reason in report.unlisted:
        click.echo(f"  could not list {path}: {reason} (its stored images were kept)", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="clipsearch")
