"""`clipsearch index`: bring a library up to date with folders of images."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.options import LibraryChoice, ModelChoice, library_options, model_options
from indexer.cli.output import ProgressBar, echo_fs, echo_json
from indexer.cli.scan_options import scan_options
from retrieval.config import RAY_DECODE_BATCH_SIZE

if TYPE_CHECKING:
    from indexer.pipeline import IndexReport


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=Path))
@scan_options
@click.option(
    "--ray",
    "ray_address",
    metavar="auto|ADDRESS",
    default=None,
    help="Decode and encode on a Ray cluster: auto (RAY_ADDRESS, a cluster `ray start` runs here, else a new "
    "local one) or the head's host:port. Needs: pip install 'clipsearch[ray]'.",
)
@click.option(
    "--ray-decode-batch-size",
    type=click.IntRange(min=1),
    default=RAY_DECODE_BATCH_SIZE,
    show_default=True,
    help="Files per decode task on Ray (--batch-size is the encode actors' batch).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@model_options
@library_options
def index(
    roots: tuple[Path, ...],
    exclude: tuple[str, ...],
    include_hidden: bool,
    follow_symlinks: bool,
    retry_errors: bool,
    workers: int,
    ray_address: str | None,
    ray_decode_batch_size: int,
    quiet: bool,
    as_json: bool,
    model: ModelChoice,
    library: LibraryChoice,
) -> None:
    """Index the images under ROOTS (incremental: only new and changed files are embedded).

    \b
    Example:
      clipsearch index ~/Pictures
      clipsearch index ~/Pictures /mnt/photos --exclude '*/thumbnails/*'
      clipsearch index ./demo --model retrieval/model/data/tiny.json --pretrained none   # offline test run
      clipsearch index /mnt/photos --ray auto --database-url postgresql+psycopg://me@db/photos
    """
    from indexer.scan import ScanOptions, check_roots

    options = ScanOptions(include_hidden=include_hidden, exclude=exclude, follow_symlinks=follow_symlinks)
    check_roots(str(root) for root in roots)  # before a library is created for nothing
    run = _runner(ray_address, ray_decode_batch_size, model)  # so is a missing Ray
    with library.open(create=True) as opened:
        encoder = model.encoder_for(opened, or_default=True)
        with ProgressBar("embedding", quiet=quiet or as_json) as bar:

            def progress(done: int, total: int) -> None:
                bar.update(done, total, f"{bar.per_second(done):.1f} img/s")

            report = run(
                opened,
                encoder,
                [str(root) for root in roots],
                options=options,
                workers=workers,
                retry_errors=retry_errors,
                progress=progress if bar.enabled else None,
            )
    if as_json:
        echo_json(asdict(report) | {"images_per_second": report.images_per_second})
    else:
        _print_report(report)


def _runner(ray_address: str | None, decode_batch_size: int, model: ModelChoice) -> Callable[..., IndexReport]:
    """`index_folders`, or, with `--ray`, the same run on a Ray cluster (Ray is imported only then)."""
    if ray_address is None:
        from indexer.pipeline import index_folders

        return index_folders
    from indexer.ray_index import RayOptions, import_ray, index_folders_on_ray

    import_ray()
    chosen = RayOptions(ray_address, model.device, model.precision, decode_batch_size)
    return functools.partial(index_folders_on_ray, ray_options=chosen)


def _print_report(report: IndexReport) -> None:
    echo_fs(
        f"indexed {', '.join(report.roots)}: {report.scanned} images found, {report.embedded} embedded "
        f"({report.images_per_second:.1f}/s), {report.unchanged} unchanged, {report.moved} moved, "
        f"{report.copied} copied, {report.touched} touched, {report.removed} removed, "
        f"{report.failed} skipped as unreadable, in {report.seconds:.1f}s"
    )
    for path, reason in report.failures[:10]:
        echo_fs(f"  skipped {path}: {reason}", err=True)
    if len(report.failures) > 10:
        click.echo(f"  ... and {len(report.failures) - 10} more (see `clipsearch info`)", err=True)
    for path, reason in report.unlisted:
        echo_fs(f"  could not list {path}: {reason} (its stored images were kept)", err=True)
    for path, reason in report.skipped:
        echo_fs(f"  left out {path}: {reason}", err=True)
    if report.links_skipped:
        click.echo(f"  {report.links_skipped} symbolic links not followed (see --follow-symlinks)", err=True)
