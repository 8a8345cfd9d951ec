"""`clipsearch bench recall` and `clipsearch demo`, added to the `indexer.cli.app` group."""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from indexer.bench_recall import RecallBenchReport, bench_recall
from indexer.cli.app import chosen_spec, cli, make_encoder, model_options, open_library
from indexer.cli.train import captions_options, read_captions
from indexer.demo import DemoReport, Hit, run_demo
from retrieval.config import DEFAULT_DECODE_WORKERS, DEFAULT_DEMO_IMAGES, DEFAULT_MODEL, DEFAULT_PRETRAINED
from retrieval.model.specs import ModelSpec
from retrieval.quality.recall import DEFAULT_KS, Recall


@cli.group()
def bench() -> None:
    """Measure retrieval quality and speed."""


@bench.command("recall")
@click.argument("captions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-k", "ks", type=click.IntRange(min=1), multiple=True, help="Recall@k cut-offs [default: 1, 5, 10].")
@click.option(
    "--ann",
    default=None,
    metavar="FACTORY",
    help='Also measure an approximate faiss index, e.g. "HNSW32" or "IVF64,Flat".',
)
@click.option(
    "--library",
    "library_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A library of the benchmark's own, kept so reruns embed nothing [default: a temporary one].",
)
@click.option("--workers", type=click.IntRange(min=1), default=DEFAULT_DECODE_WORKERS, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@model_options
@captions_options
def bench_recall_command(captions: Path, **kwargs: Any) -> None:
    """Recall@k, text->image and image->text, of the engine on a captioned dataset.

    The images are indexed by the indexer, captions encoded by the encoder, and both directions searched
    through FAISS (CLIP_benchmark definitions); an exact numpy ranking of the same vectors checks it.

    \b
    Example:
      clipsearch bench recall shapes/test.jsonl --model data/models/reference.json \\
          --pretrained data/models/reference.pt
      clipsearch bench recall dataset_coco.json --images-root ~/coco --split test --ann HNSW32 --json
    """
    data = read_captions(captions, kwargs)
    with ExitStack() as stack:
        folder = kwargs["library_dir"] or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clipsearch-")))
        library = stack.enter_context(open_library(folder, None, create=True))
        spec = chosen_spec(library, kwargs["model"], kwargs["pretrained"]) or ModelSpec(
            DEFAULT_MODEL, DEFAULT_PRETRAINED
        )
        encoder = make_encoder(library, spec, kwargs["device"], kwargs["precision"], kwargs["batch_size"])
        report = bench_recall(
            library, encoder, data, ks=kwargs["ks"] or DEFAULT_KS, ann=kwargs["ann"], workers=kwargs["workers"]
        )
    if kwargs["as_json"]:
        click.echo(json.dumps(report.to_json()))
    else:
        print_recall(report)


def _recall_rows(label: str, recall: Recall) -> list[str]:
    return [
        f"{label + ' text->image':<28}" + "".join(f"{v:>8.2f}" for v in recall.text_to_image.values()),
        f"{label + ' image->text':<28}" + "".join(f"{v:>8.2f}" for v in recall.image_to_text.values()),
    ]


def print_recall(report: RecallBenchReport) -> None:
    click.echo(f"dataset: {report.dataset} ({report.images} images, {report.captions} captions)")
    click.echo(f"model:   {report.model}")
    click.echo(f"{'recall (%)':<28}" + "".join(f"{'R@' + str(k):>8}" for k in report.ks))
    for row in _recall_rows("index", report.index):
        click.echo(row)
    if report.index_matches_exact:
        click.echo("exact search (numpy) over the same vectors gives the same numbers")
    else:
        for row in _recall_rows("exact", report.exact):
            click.echo(row)
    if report.ann is not None:
        ann = Recall.from_json(report.ann["recall"])
        for row in _recall_rows(report.ann["factory"], ann):
            click.echo(row)
        overlap = report.ann["overlap_with_exact"]
        click.echo(
            f"{report.ann['factory']} finds of the exact top-k: "
            + ", ".join(f"{key} {v['text_to_image']:.1f}% / {v['image_to_text']:.1f}%" for key, v in overlap.items())
            + " (text->image / image->text)"
        )
    if report.unreadable:
        click.echo(f"{len(report.unreadable)} unreadable image(s) left out, e.g. {report.unreadable[0][0]}", err=True)
    click.echo("seconds: " + ", ".join(f"{key} {value:.1f}" for key, value in report.seconds.items()))


@cli.command()
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo's images and libraries go [default: clipsearch-demo in the current folder].",
)
@click.option("--images", type=click.IntRange(min=20), default=DEFAULT_DEMO_IMAGES, show_default=True)
@click.option("-k", "k", type=click.IntRange(min=1), default=3, show_default=True, help="Results per query.")
def demo(folder: Path | None, images: int, k: int) -> None:
    """Show the main job end to end, offline: generate scenes, index them, search by text and image.

    Uses the project's own small reference model (data/models/), so it needs no download.

    \b
    Example:
      clipsearch demo
      clipsearch demo --folder /tmp/demo --images 1000
    """
    report = run_demo(folder or Path("clipsearch-demo"), images=images, k=k)
    _print_demo(report)


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
