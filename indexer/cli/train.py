"""`clipsearch generate-dataset` and `clipsearch train`: make captioned data, train a model on it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from indexer.cli.options import CaptionsChoice, captions_options
from indexer.cli.output import ProgressBar, echo_json
from retrieval import config
from retrieval.config import (
    DEFAULT_CAPTIONS_PER_IMAGE,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SPLIT_SIZES,
    DEFAULT_STYLE,
    STYLE_CHOICES,
)

if TYPE_CHECKING:
    from retrieval.training import TrainProgress, TrainReport


def _split_sizes(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, int] | None:
    """`--size SPLIT=N` (repeatable) as {split: N}; none given = the generator's defaults."""
    sizes = {}
    for item in values:
        split, _, count = item.partition("=")
        if not split or not count.isdigit():
            raise click.BadParameter(f"'{item}' is not SPLIT=N", param_hint="--size")
        sizes[split] = int(count)
    return sizes or None


@click.command("generate-dataset")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--size",
    "sizes",
    multiple=True,
    metavar="SPLIT=N",
    callback=_split_sizes,
    help=f"Images in a split (repeatable) [default: {', '.join(f'{s}={n}' for s, n in DEFAULT_SPLIT_SIZES.items())}].",
)
@click.option("--image-size", type=click.IntRange(min=16), default=DEFAULT_IMAGE_SIZE, show_default=True)
@click.option("--captions-per-image", type=click.IntRange(min=1), default=DEFAULT_CAPTIONS_PER_IMAGE, show_default=True)
@click.option(
    "--style",
    type=click.Choice(STYLE_CHOICES),
    default=DEFAULT_STYLE,
    show_default=True,
    help="v2: objects large enough to count, short captions in training splits; v1: the first reference "
    "model's data; sketch: a second renderer, for test splits only.",
)
def generate_dataset(
    folder: Path, seed: int, sizes: dict[str, int] | None, image_size: int, captions_per_image: int, style: str
) -> None:
    """Generate a captioned dataset of shapes on textured backgrounds (train/val/test/held-out splits).

    Each split is a JSONL captions file that `train` and `bench recall` read like your own data.

    \b
    Example:
      clipsearch generate-dataset ./shapes
      clipsearch generate-dataset ./small --size train=2000 --size val=200 --size test=500
      clipsearch generate-dataset ./shapes-v1 --style v1
      clipsearch generate-dataset ./sketch --style sketch --size test=1000
    """
    from retrieval.quality.scene_dataset import generate_dataset as generate

    dataset = generate(
        folder, seed=seed, sizes=sizes, image_size=image_size, captions_per_image=captions_per_image, style=style
    )
    for split, facts in dataset.manifest["splits"].items():
        click.echo(
            f"{split:>14}: {facts['images']} images, {facts['captions']} captions -> {dataset.split_file(split)}"
        )


@click.command("train")
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
    f"[default: none for a config file, {config.DEFAULT_PRETRAINED} for a name].",
)
@click.option("--epochs", type=click.IntRange(min=1), default=config.DEFAULT_TRAIN_EPOCHS, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=config.DEFAULT_TRAIN_BATCH_SIZE, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=config.DEFAULT_TRAIN_LR, show_default=True)
@click.option(
    "--weight-decay", type=click.FloatRange(min=0), default=config.DEFAULT_TRAIN_WEIGHT_DECAY, show_default=True
)
@click.option(
    "--warmup-steps", type=click.IntRange(min=0), default=config.DEFAULT_TRAIN_WARMUP_STEPS, show_default=True
)
@click.option(
    "--grad-clip",
    type=click.FloatRange(min=0, min_open=True),
    default=config.DEFAULT_TRAIN_GRAD_CLIP,
    show_default=True,
)
@click.option("--lock-image", is_flag=True, help="Freeze the image tower (train the text side only).")
@click.option("--lock-text", is_flag=True, help="Freeze the text tower (train the image side only).")
@click.option("--seed", type=int, default=config.DEFAULT_TRAIN_SEED, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps in all.")
@click.option("--eval-every", type=click.IntRange(min=0), default=0, help="Validate every N steps [0: each epoch].")
@click.option(
    "--val-images",
    type=click.IntRange(min=1),
    default=config.DEFAULT_TRAIN_VAL_IMAGES,
    show_default=True,
    help="Validate on at most this many images.",
)
@click.option("--fp16-weights", is_flag=True, help="Store best.pt in half precision (half the size).")
@click.option("--augment", is_flag=True, help="Photo-like distortions of training images (JPEG, blur, zoom, ...).")
@click.option(
    "--hard-negatives", is_flag=True, help="Batches with same-colour and same-shape look-alikes (generated data)."
)
@click.option(
    "--match-targets", is_flag=True, help="Count every caption true of an image as its match (generated data)."
)
@click.option(
    "--partial-target",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=0.0,
    show_default=True,
    help="With --match-targets: the target of a caption true of an image only loosely read (three blue "
    'triangles for "a blue triangle"); 0 counts it as a mismatch.',
)
@click.option(
    "--select-by",
    type=click.Choice(config.TRAIN_SELECT_BY_CHOICES),
    default="recall",
    show_default=True,
    help="Choose best.pt by mean validation recall, or by the mean attribute precision@3 and @10 of short "
    "queries on the --val images (generated data).",
)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="MINUTES",
    help="Train at most this long (wall clock, resumes included): the learning rate decays to zero by then "
    "and the run ends with a last validation; best.pt is still chosen on --val.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.option("--device", type=click.Choice(config.DEVICE_CHOICES), default=config.DEFAULT_DEVICE, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data loading processes.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@captions_options
def train(
    captions: Path,
    output: Path,
    val_captions: Path | None,
    model: str,
    pretrained: str | None,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    grad_clip: float,
    lock_image: bool,
    lock_text: bool,
    seed: int,
    max_steps: int | None,
    eval_every: int,
    val_images: int,
    fp16_weights: bool,
    augment: bool,
    hard_negatives: bool,
    match_targets: bool,
    partial_target: float,
    select_by: str,
    time_budget: float | None,
    resume: bool,
    device: str,
    workers: int,
    quiet: bool,
    as_json: bool,
    reader: CaptionsChoice,
) -> None:
    """Train or fine-tune a CLIP model contrastively on a captions file (CSV, JSONL, Karpathy JSON).

    The result loads everywhere with --model <same model> --pretrained OUTPUT/best.pt.

    \b
    Example:
      clipsearch train shapes/train.jsonl --val shapes/val.jsonl --model retrieval/model/data/reference.json -o run
      clipsearch train captions.csv --model ViT-B-32 --pretrained laion2b_s34b_b79k --lock-image --lr 1e-5 -o ft
      clipsearch train shapes/train.jsonl --model retrieval/model/data/reference.json -o run --resume   # after a kill
    """
    from retrieval.model.specs import ModelSpec
    from retrieval.training import TrainOptions
    from retrieval.training import train as run_training

    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        grad_clip=grad_clip, lock_image=lock_image, lock_text=lock_text, seed=seed, max_steps=max_steps,
        device=device, workers=workers, eval_every=eval_every, val_images=val_images, fp16_weights=fp16_weights,
        augment=augment, hard_negatives=hard_negatives, match_targets=match_targets,
        partial_target=partial_target, select_by=select_by,
        time_budget=time_budget * 60 if time_budget is not None else None,
    )  # fmt: skip
    train_data = reader.load(captions)
    val_data = reader.load(val_captions) if val_captions else None
    with ProgressBar("training", quiet=quiet or as_json) as bar:
        val_note = ""

        def progress(event: TrainProgress) -> None:
            nonlocal val_note
            if event.val is not None:
                val_note = f" val mean recall {event.val.mean:.1f}"
            bar.update(event.step, event.total_steps, f"loss {event.loss:.3f}{val_note}")

        report = run_training(
            ModelSpec.for_training(model, pretrained),
            train_data,
            output,
            options,
            val_data=val_data,
            resume=resume,
            progress=progress if bar.enabled else None,
        )
    _print_report(report, model, as_json=as_json)


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
        echo_json(summary)
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
