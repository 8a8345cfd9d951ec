"""`clipsearch train` and `clipsearch generate-dataset`, added to the `indexer.cli.app` group."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from indexer.cli.app import cli, stderr_progress_bar
from retrieval.config import DEFAULT_DEVICE, DEFAULT_PRETRAINED, DEVICE_CHOICES, RANDOM_WEIGHTS
from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import FORMATS, CaptionedDataset, load_captions
from retrieval.quality.scene_dataset import (
    DEFAULT_CAPTIONS_PER_IMAGE,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SPLIT_SIZES,
    generate_dataset,
)
from retrieval.training import TrainOptions, TrainProgress, TrainReport, train

_DEFAULTS = TrainOptions()


def captions_options(func: Any) -> Any:
    """How to read a captions file: shared by `train` and `bench recall`."""
    for option in reversed(
        [
            click.option(
                "--images-root",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help="Folder image paths are relative to [default: the captions file's folder].",
            ),
            click.option(
                "--format",
                "caption_format",
                type=click.Choice(FORMATS),
                default="auto",
                show_default=True,
                help="Captions file format.",
            ),
            click.option(
                "--split",
                default=None,
                help="Only this split (a CSV/JSONL `split` field; Karpathy JSON: default test).",
            ),
            click.option("--skip-missing", is_flag=True, help="Leave out listed images whose file is missing."),
        ]
    ):
        func = option(func)
    return func


def read_captions(path: Path, kwargs: dict[str, Any], split: str | None = None) -> CaptionedDataset:
    return load_captions(
        path,
        images_root=kwargs["images_root"],
        format=kwargs["caption_format"],
        split=split if split is not None else kwargs["split"],
        skip_missing=kwargs["skip_missing"],
    )


@cli.command("generate-dataset")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--size",
    "sizes",
    multiple=True,
    metavar="SPLIT=N",
    help=f"Images in a split (repeatable) [default: {', '.join(f'{s}={n}' for s, n in DEFAULT_SPLIT_SIZES.items())}].",
)
@click.option("--image-size", type=click.IntRange(min=16), default=DEFAULT_IMAGE_SIZE, show_default=True)
@click.option("--captions-per-image", type=click.IntRange(min=1), default=DEFAULT_CAPTIONS_PER_IMAGE, show_default=True)
def generate_dataset_command(
    folder: Path, seed: int, sizes: tuple[str, ...], image_size: int, captions_per_image: int
) -> None:
    """Generate a captioned dataset of shapes on textured backgrounds (train/val/test/held-out splits).

    Each split is a JSONL captions file that `train` and `bench recall` read like your own data.

    \b
    Example:
      clipsearch generate-dataset ./shapes
      clipsearch generate-dataset ./small --size train=2000 --size val=200 --size test=500
    """
    chosen = dict(DEFAULT_SPLIT_SIZES)
    if sizes:
        chosen = {}
        for item in sizes:
            split, _, count = item.partition("=")
            if not split or not count.isdigit():
                raise click.BadParameter(f"'{item}' is not SPLIT=N", param_hint="--size")
            chosen[split] = int(count)
    dataset = generate_dataset(
        folder, seed=seed, sizes=chosen, image_size=image_size, captions_per_image=captions_per_image
    )
    for split, facts in dataset.manifest["splits"].items():
        click.echo(
            f"{split:>14}: {facts['images']} images, {facts['captions']} captions -> {dataset.split_file(split)}"
        )


@cli.command("train")
@click.argument("captions", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: best.pt (weights), last.pt (resume state), train.json (log).",
)
@click.option(
    "--val",
    "val_captions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Validation captions file (recall measured on it picks best.pt).",
)
@click.option("--model", required=True, help="open_clip model name or config JSON path.")
@click.option(
    "--pretrained",
    default=None,
    help=f"Start from: a tag or checkpoint (fine-tune) or 'none' (from scratch) "
    f"[default: none for a config file, {DEFAULT_PRETRAINED} for a name].",
)
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=_DEFAULTS.batch_size, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS.lr, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=_DEFAULTS.weight_decay, show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=_DEFAULTS.warmup_steps, show_default=True)
@click.option(
    "--grad-clip", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS.grad_clip, show_default=True
)
@click.option("--lock-image", is_flag=True, help="Freeze the image tower (train the text side only).")
@click.option("--lock-text", is_flag=True, help="Freeze the text tower (train the image side only).")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps in all.")
@click.option("--eval-every", type=click.IntRange(min=0), default=0, help="Validate every N steps [0: each epoch].")
@click.option(
    "--val-images",
    type=click.IntRange(min=1),
    default=_DEFAULTS.val_images,
    show_default=True,
    help="Validate on at most this many images.",
)
@click.option("--fp16-weights", is_flag=True, help="Store best.pt in half precision (half the size).")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=DEFAULT_DEVICE, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data loading processes.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@captions_options
def train_command(captions: Path, **kwargs: Any) -> None:
    """Train or fine-tune a CLIP model contrastively on a captions file (CSV, JSONL, Karpathy JSON).

    The result loads everywhere with --model <same model> --pretrained OUTPUT/best.pt.

    \b
    Example:
      clipsearch train shapes/train.jsonl --val shapes/val.jsonl --model data/models/reference.json -o run
      clipsearch train captions.csv --model ViT-B-32 --pretrained laion2b_s34b_b79k --lock-image --lr 1e-5 -o ft
      clipsearch train shapes/train.jsonl --model data/models/reference.json -o run --resume   # after a kill
    """
    model = kwargs["model"]
    pretrained = kwargs["pretrained"]
    if pretrained is None:
        pretrained = RANDOM_WEIGHTS if ModelSpec(model, "").is_config_file else DEFAULT_PRETRAINED
    options = TrainOptions(**{name: kwargs[name] for name in TrainOptions.__dataclass_fields__ if name in kwargs})
    train_data = read_captions(captions, kwargs)
    val_data = read_captions(kwargs["val_captions"], kwargs) if kwargs["val_captions"] else None
    show = not kwargs["quiet"] and not kwargs["as_json"] and sys.stderr.isatty()
    with _TrainBar(show) as bar:
        report = train(
            ModelSpec(model, pretrained),
            train_data,
            kwargs["output"],
            options,
            val_data=val_data,
            resume=kwargs["resume"],
            progress=bar.update if show else None,
        )
    _print_report(report, model, as_json=kwargs["as_json"])


class _TrainBar:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.note = ""

    def __enter__(self) -> _TrainBar:
        return self

    def update(self, progress: TrainProgress) -> None:
        if self.bar is None:
            self.bar = stderr_progress_bar(progress.total_steps, "training")
            self.bar.update(progress.step - 1)
        if progress.val is not None:
            self.note = f" val mean recall {progress.val.mean:.1f}"
        self.bar.update(1, current_item=f"loss {progress.loss:.3f}{self.note}")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _print_report(report: TrainReport, model: str, *, as_json: bool) -> None:
    summary = {
        "output": str(report.output),
        "steps": report.steps,
        "total_steps": report.total_steps,
        "resumed_from": report.resumed_from,
        "seconds": round(report.seconds, 1),
        "final_loss": report.final_loss,
        "best_step": report.best_step,
        "best_val": report.best_val.to_json() if report.best_val else None,
        "skipped_images": len(report.skipped_images),
        "use_with": f"--model {model} --pretrained {report.best_checkpoint}",
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"trained {report.steps - report.resumed_from} steps (now {report.steps}/{report.total_steps}) "
        f"in {report.seconds:.0f}s; final loss {report.final_loss:.3f}"
    )
    if report.best_val is not None:
        t2i, i2t = report.best_val.text_to_image, report.best_val.image_to_text
        click.echo(
            f"best validation (step {report.best_step}): text->image "
            + " ".join(f"R@{k} {v:.1f}" for k, v in t2i.items())
            + " | image->text "
            + " ".join(f"R@{k} {v:.1f}" for k, v in i2t.items())
        )
    for path, reason in report.skipped_images[:10]:
        click.echo(f"  skipped {path}: {reason}", err=True)
    click.echo(f"use it with: {summary['use_with']}")
