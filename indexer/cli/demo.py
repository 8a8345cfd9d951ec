"""`clipsearch demo`: the main job end to end, offline, with the project's reference model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.output import print_recall
from retrieval.config import DEFAULT_DEMO_FOLDER, DEFAULT_DEMO_IMAGES, DEFAULT_DEMO_K

if TYPE_CHECKING:
    from indexer.demo import DemoReport, Hit


@click.command()
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where the demo's images and libraries go [default: {DEFAULT_DEMO_FOLDER} in the current folder].",
)
@click.option("--images", type=click.IntRange(min=20), default=DEFAULT_DEMO_IMAGES, show_default=True)
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=DEFAULT_DEMO_K, show_default=True, help="Results per query."
)
def demo(folder: Path | None, images: int, k: int) -> None:
    """Show the main job end to end, offline: generate scenes, index them, search by text and image.

    Uses the project's own small reference model (shipped in the package), so it needs no download.

    \b
    Example:
      clipsearch demo
      clipsearch demo --folder /tmp/demo --images 1000
    """
    from indexer.demo import run_demo

    _print_demo(run_demo(folder, images=images, k=k))


def _print_hits(hits: list[Hit]) -> None:
    for hit in hits:
        click.echo(f"    {hit.result.rank}. {hit.result.score:.3f}  {Path(hit.result.path).name}  shows: {hit.caption}")


def _print_demo(report: DemoReport) -> None:
    indexing = report.indexing
    click.echo(
        f"indexed {report.images} generated scenes into {report.library} with the reference model "
        f"({indexing.embedded} embedded, {indexing.unchanged} unchanged, {indexing.seconds:.1f}s)\n"
    )
    for query, hits in report.text_queries:
        click.echo(f'search "{query}"')
        _print_hits(hits)
    path, caption, hits = report.image_query
    click.echo(f"\nsimilar to {Path(path).name} (shows: {caption})")
    _print_hits(hits)
    click.echo()
    print_recall(report.recall)
    library = f"--library {report.library}"
    click.echo(
        "\nTry it yourself:\n"
        f'  clipsearch search "a small red star" {library}\n'
        f"  clipsearch similar {path} {library}\n"
        "On your own photos, with pretrained weights (downloaded once, about 600 MB):\n"
        "  clipsearch index ~/Pictures\n"
        '  clipsearch search "a dog on the beach at sunset"'
    )
