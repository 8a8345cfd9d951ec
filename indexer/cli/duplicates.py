"""`clipsearch duplicates`: groups of near-duplicate images, the best copy marked, as lines or JSON; a summary
of what removing the other copies would free. It never deletes anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from indexer.cli.options import FilterChoice, LibraryChoice, filter_options, library_options
from indexer.cli.output import echo_fs, echo_json
from retrieval.config import DEFAULT_DUPLICATE_THRESHOLD

if TYPE_CHECKING:
    from retrieval.duplicates import DuplicateGroup, DuplicateMember


@click.command()
@click.option(
    "--threshold",
    type=float,
    default=DEFAULT_DUPLICATE_THRESHOLD,
    show_default=True,
    help="Cosine an image needs to the group's best copy to be its near-duplicate.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group and line.")
@filter_options
@library_options
def duplicates(threshold: float, as_json: bool, filters: FilterChoice, library: LibraryChoice) -> None:
    """List groups of near-duplicate images (re-encodes, resizes, crops, small edits), the best copy first
    (most pixels, then oldest, then largest file). Deletes nothing. The filters of `search` (--in, --after,
    --camera, ...) narrow it to the images that pass them: both images of a pair must.

    \b
    Example:
      clipsearch duplicates
      clipsearch duplicates --in ~/Pictures/2021 --threshold 0.97 --json
      clipsearch duplicates --after 2023-06 --camera iphone --ext jpg,heic
    """
    from retrieval.duplicates import find_duplicates

    search_filter = filters.search_filter()  # a bad date is refused before the library is opened
    with library.open(reading=True) as opened:
        groups = find_duplicates(opened, threshold, search_filter=search_filter)
    for number, group in enumerate(groups, start=1):
        if as_json:
            echo_json({"group": number, **group.to_json()})
        else:
            _print_group(number, group)
    click.echo(_summary(groups), err=as_json)


def _print_group(number: int, group: DuplicateGroup) -> None:
    click.echo(f"group {number}: {len(group.members)} images, {_bytes(group.reclaimable)} reclaimable")
    echo_fs(f"  best    {_facts(group.best)}")
    for member in group.copies:
        echo_fs(f"  {member.score:.4f}  {_facts(member)}")


def _facts(member: DuplicateMember) -> str:
    size = f"{member.width}x{member.height}" if member.width else "?"
    taken = f", {member.taken_at:%Y-%m-%d}" if member.taken_at else ""
    return f"{member.path}  ({size}, {_bytes(member.size)}{taken})"


def _summary(groups: Sequence[DuplicateGroup]) -> str:
    from retrieval.duplicates import summary

    count, images, reclaimable = summary(groups)
    return (
        f"{count} group(s), {images} images; {_bytes(reclaimable)} ({reclaimable} bytes) reclaimable if all but "
        "the best copy of each group were removed (nothing was deleted)"
    )


def _bytes(count: int) -> str:
    """1234567 -> `1.2 MB` (decimal units, as file managers show sizes)."""
    value, unit = float(count), "bytes"
    for bigger in ("KB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
