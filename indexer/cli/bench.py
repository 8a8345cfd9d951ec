"""`clipsearch bench recall` and `bench attributes`: recall@k and attribute precision@k of the engine."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.options import CaptionsChoice, ModelChoice, captions_options, model_options
from indexer.cli.output import echo_json, print_recall
from retrieval.config import DEFAULT_DECODE_WORKERS

if TYPE_CHECKING:
    from retrieval.library import Library
    from retrieval.model.encoder import Encoder
    from retrieval.quality.attributes import AttributePrecision


@click.group()
def bench() -> None:
    """Measure retrieval quality and speed."""


def _benchmark_library_options(command: Callable[..., None]) -> Callable[..., None]:
    """`--library` and `--workers`, the options every benchmark that indexes its dataset takes."""
    command = click.option("--workers", type=click.IntRange(min=1), default=DEFAULT_DECODE_WORKERS, show_default=True)(
        command
    )
    return click.option(
        "--library",
        "library_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="A library of the benchmark's own, kept so reruns embed nothing [default: a temporary one].",
    )(command)


def _benchmark_library(stack: ExitStack, library_dir: Path | None, model: ModelChoice) -> tuple[Library, Encoder]:
    """The benchmark's library (`library_dir`, else a temporary folder that `stack` removes) and its encoder."""
    from retrieval.library import Library  # model code loads with a command, not with --help

    folder = library_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clipsearch-")))
    library = stack.enter_context(Library(folder, create=True))
    return library, model.encoder_for(library, or_default=True)


@bench.command("recall")
@click.argument("captions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-k", "ks", type=click.IntRange(min=1), multiple=True, help="Recall@k cut-offs [default: 1, 5, 10].")
@click.option(
    "--ann",
    default=None,
    metavar="FACTORY",
    help='Also measure an approximate faiss index, e.g. "HNSW32" or "IVF64,Flat".',
)
@_benchmark_library_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@model_options
@captions_options
def recall(
    captions: Path,
    ks: tuple[int, ...],
    ann: str | None,
    library_dir: Path | None,
    workers: int,
    as_json: bool,
    model: ModelChoice,
    reader: CaptionsChoice,
) -> None:
    """Recall@k, text->image and image->text, of the engine on a captioned dataset.

    The images are indexed by the indexer, captions encoded by the encoder, and both directions searched
    through FAISS (CLIP_benchmark definitions); an exact numpy ranking of the same vectors checks it.

    \b
    Example:
      clipsearch bench recall shapes/test.jsonl --model retrieval/model/data/reference.json \\
          --pretrained retrieval/model/data/reference.pt
      clipsearch bench recall dataset_coco.json --images-root ~/coco --split test --ann HNSW32 --json
    """
    from indexer.bench_recall import bench_recall
    from retrieval.quality.recall import DEFAULT_KS

    data = reader.load(captions)
    with ExitStack() as stack:
        library, encoder = _benchmark_library(stack, library_dir, model)
        report = bench_recall(library, encoder, data, ks=ks or DEFAULT_KS, ann=ann, workers=workers)
    if as_json:
        echo_json(report.to_json())
    else:
        print_recall(report)


@bench.command("attributes")
@click.argument("captions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-k", "ks", type=click.IntRange(min=1), multiple=True, help="Precision@k cut-offs [default: 1, 3, 10].")
@_benchmark_library_options
@click.option("--queries", "show_queries", is_flag=True, help="Also print every query's precision.")
@click.option("--json", "as_json", is_flag=True, help="Print the results (with every query's) as one JSON object.")
@model_options
def attributes(
    captions: Path,
    ks: tuple[int, ...],
    library_dir: Path | None,
    workers: int,
    show_queries: bool,
    as_json: bool,
    model: ModelChoice,
) -> None:
    """Precision@k of short queries per attribute on a generated split (shape, colour, count, ...).

    Each query names one attribute ("three circles", "something red", "a striped background") or colour
    and shape together ("a blue triangle"); a hit counts if the scene of the picture found has every
    attribute the query names. The split must come from generate-dataset (its records carry the scenes).

    \b
    Example:
      clipsearch bench attributes shapes/test.jsonl --model retrieval/model/data/reference.json \\
          --pretrained retrieval/model/data/reference.pt
    """
    from indexer.bench_attributes import bench_attributes
    from retrieval.quality.attributes import DEFAULT_PRECISION_KS

    with ExitStack() as stack:
        library, encoder = _benchmark_library(stack, library_dir, model)
        report = bench_attributes(library, encoder, captions, ks=ks or DEFAULT_PRECISION_KS, workers=workers)
    if as_json:
        echo_json(report.to_json())
        return
    click.echo(f"{report.dataset}: {report.images} images, {report.model}")
    if show_queries:
        for entry in report.precision.per_query:
            cells = "  ".join(f"P@{k} {entry[f'P@{k}']:6.2f}" for k in report.precision.ks)
            click.echo(f"  {entry['attribute']:<13} {entry['query']:<32} {cells}")
    print_attribute_table(report.precision)


def print_attribute_table(precision: AttributePrecision) -> None:
    """The attribute table: one row per attribute, mean precision@k over its queries, in percent."""
    header = " | ".join(f"P@{k}" for k in precision.ks)
    click.echo(f"| attribute | queries | {header} |")
    click.echo("|---|---|" + "---|" * len(precision.ks))
    for attribute, row in precision.table.items():
        cells = " | ".join(f"{row[f'P@{k}']:.1f}" for k in precision.ks)
        click.echo(f"| {attribute} | {int(row['queries'])} | {cells} |")
