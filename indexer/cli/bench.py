"""`clipsearch bench recall`: recall@k of the engine on a captioned dataset."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import click

from indexer.cli.options import CaptionsChoice, ModelChoice, captions_options, model_options
from indexer.cli.output import echo_json, print_recall
from retrieval.config import DEFAULT_DECODE_WORKERS


@click.group()
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
    from retrieval.library import Library
    from retrieval.quality.recall import DEFAULT_KS

    data = reader.load(captions)
    with ExitStack() as stack:
        folder = library_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clipsearch-")))
        library = stack.enter_context(Library(folder, create=True))
        encoder = model.encoder_for(library, or_default=True)
        report = bench_recall(library, encoder, data, ks=ks or DEFAULT_KS, ann=ann, workers=workers)
    if as_json:
        echo_json(report.to_json())
    else:
        print_recall(report)
