"""`clipsearch roots` and `clipsearch forget`: the folders the library was indexed from, and removing one."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.cli.options import LibraryChoice, library_options
from indexer.cli.output import echo_fs, echo_json


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the roots as one JSON object.")
@library_options
def roots(as_json: bool, library: LibraryChoice) -> None:
    """List the indexed roots: images, unreadable files, first and last index time.

    A folder indexed under a recorded root is part of that root, not a root of its own.

    \b
    Example:
      clipsearch roots
      clipsearch roots --json
    """
    from indexer.roots import list_roots

    with library.open() as opened:
        listing = list_roots(opened)
    if as_json:
        echo_json(
            {
                "roots": [
                    {
                        "path": root.path,
                        "images": root.images,
                        "failed": root.failed,
                        "first_indexed_at": root.first_indexed_at.isoformat(),
                        "last_indexed_at": root.last_indexed_at.isoformat(),
                        "options": json.loads(root.options),
                    }
                    for root in listing.roots
                ],
                "unrooted": listing.unrooted,
            }
        )
        return
    if not listing.roots:
        click.echo("no roots recorded yet (a root is recorded when `clipsearch index` runs on it)")
    for root in listing.roots:
        last = root.last_indexed_at.isoformat(sep=" ", timespec="seconds")
        echo_fs(f"{root.path}: {root.images} images, {root.failed} unreadable, last indexed {last} UTC")
    if listing.unrooted:
        click.echo(f"{listing.unrooted} images under no recorded root (indexed before roots were recorded)")


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Say what would be removed and change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as one JSON object.")
@library_options
def forget(folder: Path, dry_run: bool, as_json: bool, library: LibraryChoice) -> None:
    """Remove the images under FOLDER from the library (the files on disk are not touched).

    FOLDER is an indexed root (it is no longer recorded), a folder under one (the root stays: its next
    `index` run finds the images again unless you `--exclude` them), or any folder holding indexed images;
    it need not exist any more. Anything else is refused.

    \b
    Example:
      clipsearch forget /mnt/old-disk/photos
      clipsearch forget ~/Pictures/screenshots --dry-run
    """
    from indexer.roots import forget_folder

    with library.open() as opened:
        report = forget_folder(opened, str(folder), dry_run=dry_run)
    if as_json:
        echo_json(
            {
                "folder": report.folder,
                "images": report.images,
                "failed": report.failed,
                "roots": report.roots,
                "dry_run": report.dry_run,
            }
        )
        return
    verb = "would remove" if report.dry_run else "removed"
    dropped = f"; root {', '.join(report.roots)} no longer recorded" if report.roots else ""
    echo_fs(f"{verb} {report.images} images and {report.failed} unreadable files under {report.folder}{dropped}")
