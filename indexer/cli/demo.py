"""`clipsearch demo`: the main job end to end, offline, with the project's reference model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.bench import print_attribute_table
from indexer.cli.output import print_recall
from retrieval.config import DEFAULT_DEMO_FOLDER, DEFAULT_DEMO_IMAGES, DEFAULT_DEMO_K

if TYPE_CHECKING:
    from indexer.demo import DemoReport, Hit, QueryResult


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
        checks = "  ".join(f"{'✓' if ok else '✗'} {name}" for name, ok in hit.checks.items())
        click.echo(f"    {hit.result.rank}. {hit.result.score:.3f}  {Path(hit.result.path).name}  {checks}")
        click.echo(f"         shows: {hit.caption}")


def _print_query(result: QueryResult) -> None:
    asked = ", ".join(f"{name} {value}" for name, value in result.query.wants.items())
    click.echo(f'search "{result.query.text}"  (asks for {asked})')
    _print_hits(result.hits)
    right = sum(hit.right for hit in result.hits)
    if result.relevant == 0:
        click.echo("    precision: no picture in the set has all of it (try more --images)")
        return
    possible = min(len(result.hits), result.relevant)
    click.echo(
        f"    precision: {right}/{len(result.hits)} right, {100 * result.precision:.0f}% of the {possible} that "
        f"could be ({result.relevant} such pictures in the set)"
    )


def _print_demo(report: DemoReport) -> None:
    indexing = report.indexing
    click.echo(
        f"indexed {report.images} generated scenes into {report.library} with the reference model "
        f"({indexing.embedded} embedded, {indexing.unchanged} unchanged, {indexing.seconds:.1f}s)\n"
    )
    for result in report.text_queries:
        _print_query(result)
    path, caption, hits = report.image_query
    click.echo(f"\nsimilar to {Path(path).name} (shows: {caption}; hits checked for the same objects)")
    _print_hits(hits)
    shown = sum(result.precision for result in report.text_queries) / len(report.text_queries)
    click.echo(f"\nshowcase precision@{len(report.text_queries[0].hits)}: {100 * shown:.1f}%")
    click.echo(
        f"\nAttribute precision on the {report.attributes.images} scenes (short queries; clipsearch bench attributes):"
    )
    print_attribute_table(report.attributes.precision)
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
