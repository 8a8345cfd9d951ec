"""`clipsearch watch`: keep a library current as the files under its roots change; one line per applied batch."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from indexer.cli.options import LibraryChoice, ModelChoice, library_options, model_options
from indexer.cli.output import echo_fs
from indexer.cli.scan_options import scan_options
from retrieval.config import WATCH_MAX_DELAY_SECONDS, WATCH_QUIET_SECONDS

if TYPE_CHECKING:
    from indexer.watch import WatchBatch


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=Path))
@scan_options
@click.option(
    "--quiet-seconds",
    type=click.FloatRange(min=0.05),
    default=WATCH_QUIET_SECONDS,
    show_default=True,
    help="Apply a burst of changes once no event came for this long (a file once it stayed unchanged this long).",
)
@click.option(
    "--max-delay",
    type=click.FloatRange(min=0.1),
    default=WATCH_MAX_DELAY_SECONDS,
    show_default=True,
    help="Under a steady stream of events, apply what has settled at least this often (seconds).",
)
@model_options
@library_options
def watch(
    roots: tuple[Path, ...],
    exclude: tuple[str, ...],
    include_hidden: bool,
    follow_symlinks: bool,
    retry_errors: bool,
    workers: int,
    quiet_seconds: float,
    max_delay: float,
    model: ModelChoice,
    library: LibraryChoice,
) -> None:
    """Index ROOTS, then keep the library current as files are added, changed, moved or deleted.

    Stops on Ctrl-C or SIGTERM once the batch in progress is committed (exit status 0); changes not yet
    applied are found by the next `index` or `watch`. A second Ctrl-C stops at once (the batch in progress
    is rolled back).

    \b
    Example:
      clipsearch watch ~/Pictures
      clipsearch watch ~/Pictures /mnt/photos --exclude '*/thumbnails/*' --quiet-seconds 2
    """
    from indexer.scan import ScanOptions, check_roots

    try:
        from indexer.watch import Watcher, WatchSettings
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "watchdog":
            raise
        raise click.ClickException("watching needs watchdog: pip install 'clipsearch[watch]'") from exc

    options = ScanOptions(include_hidden=include_hidden, exclude=exclude, follow_symlinks=follow_symlinks)
    check_roots(str(root) for root in roots)  # before a library is created for nothing
    stop = threading.Event()
    with library.open(create=True) as opened, _stopping_on_signals(stop):
        watcher = Watcher(
            opened,
            model.encoder_for(opened, or_default=True),
            [str(root) for root in roots],
            options=options,
            settings=WatchSettings(quiet=quiet_seconds, max_delay=max_delay),
            workers=workers,
            retry_errors=retry_errors,
            on_batch=_print_batch,
        )
        watcher.run(stop)
    click.echo("stopped", err=True)


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (the watch ends after its batch); a second SIGINT interrupts at once."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        click.echo("stopping after the batch in progress (Ctrl-C again to stop now)", err=True)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_batch(batch: WatchBatch) -> None:
    report = batch.report
    what = "caught up with" if batch.catch_up else f"{batch.paths} changed paths under"
    echo_fs(
        f"{time.strftime('%H:%M:%S')} {what} {batch.root}: {report.embedded} embedded, {report.moved} moved, "
        f"{report.copied} copied, {report.touched} touched, {report.removed} removed, {report.failed} unreadable "
        f"({report.seconds:.2f}s)"
    )
