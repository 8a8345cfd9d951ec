"""Contrastive training of an open_clip model on captioned images (`clipsearch train`).

open_clip's symmetric InfoNCE (`ClipLoss`), AdamW without decay on gains, biases and the temperature,
linear warmup then cosine decay, gradient clipping, optional locked image or text tower, autocast on GPU.
Validation recall (exact, `retrieval.quality.recall`) is measured every `eval_every` steps and at the end; the
best weights go to `best.pt`, which loads anywhere with `--model <config> --pretrained best.pt`. The full
state (weights, optimizer, step, best so far) goes to `last.pt` at every evaluation, and a run started
again with `resume=True` continues from it exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from open_clip.loss import ClipLoss

from retrieval.decode import read_and_decode
from retrieval.errors import TrainingError, UnreadableImageError
from retrieval.model.devices import resolve_device
from retrieval.model.loading import LoadedModel, load_model
from retrieval.model.specs import ModelSpec, identity_of
from retrieval.quality.captions import CaptionedDataset
from retrieval.quality.recall import Recall, recall_at_k
from retrieval.training.batches import batches_per_epoch, dataset_digest, iterate_epoch

BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
RUN_LOG = "train.json"
_MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp on the learned temperature
_RUNTIME_FIELDS = ("workers", "device", "eval_every", "val_images", "fp16_weights", "max_steps")


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    lock_image: bool = False
    lock_text: bool = False
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many steps in total (the schedule still spans `epochs`)."""
    device: str = "auto"
    workers: int = 0
    eval_every: int = 0
    """Evaluate every this many steps; 0 = at the end of every epoch."""
    val_images: int = 1000
    fp16_weights: bool = False
    """Store best.pt in half precision (half the size; it loads into a float32 model unchanged)."""


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    val: Recall | None = None


@dataclass
class TrainReport:
    output: Path
    steps: int
    total_steps: int
    seconds: float
    resumed_from: int
    best_step: int | None
    best_val: Recall | None
    final_loss: float
    skipped_images: list[tuple[str, str]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_checkpoint(self) -> Path:
        return self.output / BEST_CHECKPOINT


ProgressCallback = Callable[[TrainProgress], None]


@dataclass
class _State:
    step: int = 0
    best_score: float = -1.0
    best_step: int | None = None
    best_val: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    spec: ModelSpec,
    train_data: CaptionedDataset,
    output: str | Path,
    options: TrainOptions = TrainOptions(),
    *,
    val_data: CaptionedDataset | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainReport:
    """Train `spec` (a config with `none` weights = from scratch; a tag or checkpoint = fine-tuning)."""
    if options.lock_image and options.lock_text:
        raise TrainingError("locking both towers leaves nothing to train; lock at most one")
    folder = Path(output).expanduser()
    spec = spec.absolute()
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    loaded = load_model(spec, device=device, warn_random=False)
    model = loaded.model
    if options.lock_image:
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    if options.lock_text:
        model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    optimizer = torch.optim.AdamW(_param_groups(model, options.weight_decay), lr=options.lr)
    state = _start(folder, spec, train_data, options, model, optimizer, resume, device)
    run = _Run(loaded, optimizer, options, device, train_data, val_data, folder, spec, state, progress)
    return run.execute()


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's rule: no weight decay on gains, biases, norms and the temperature."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def lr_at(step: int, options: TrainOptions, total_steps: int) -> float:
    """Linear warmup to `lr`, then cosine decay to zero at `total_steps`."""
    warmup = min(options.warmup_steps, max(0, total_steps - 1))
    if step < warmup:
        return options.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * options.lr


def _start(
    folder: Path,
    spec: ModelSpec,
    data: CaptionedDataset,
    options: TrainOptions,
    model: Any,
    optimizer: torch.optim.Optimizer,
    resume: bool,
    device: str,
) -> _State:
    last = folder / LAST_CHECKPOINT
    if not resume:
        if last.exists() or (folder / BEST_CHECKPOINT).exists():
            raise TrainingError(
                f"{folder} already holds a training run; pass --resume to continue it, or choose another --output"
            )
        folder.mkdir(parents=True, exist_ok=True)
        return _State()
    if not last.is_file():
        raise TrainingError(f"nothing to resume: {last} does not exist (drop --resume to start a new run)")
    saved = torch.load(last, map_location=device, weights_only=True)
    _check_same_run(saved, spec, data, options)
    model.load_state_dict(saved["state_dict"])
    optimizer.load_state_dict(saved["optimizer"])
    return _State(
        step=int(saved["step"]),
        best_score=float(saved["best_score"]),
        best_step=saved["best_step"],
        best_val=saved["best_val"],
        history=list(saved["history"]),
    )


def _check_same_run(saved: dict[str, Any], spec: ModelSpec, data: CaptionedDataset, options: TrainOptions) -> None:
    differences = [
        f"{name}={saved['options'][name]!r} (now {value!r})"
        for name, value in asdict(options).items()
        if name not in _RUNTIME_FIELDS and saved["options"].get(name) != value
    ]
    if saved["base_model"] != identity_of(spec).key:
        differences.append(f"model {saved['base_model']} (now {identity_of(spec).key})")
    if saved["data"] != dataset_digest(data):
        differences.append("training data (images or captions changed)")
    if differences:
        raise TrainingError(
            "cannot resume: the run in this folder was started with "
            + "; ".join(differences)
            + ". Resume with the same options and data, or start a new --output."
        )


class _Run:
    """One training run from its current step to the end; holds what every step needs."""

    def __init__(
        self,
        loaded: LoadedModel,
        optimizer: torch.optim.Optimizer,
        options: TrainOptions,
        device: str,
        train_data: CaptionedDataset,
        val_data: CaptionedDataset | None,
        folder: Path,
        spec: ModelSpec,
        state: _State,
        progress: ProgressCallback | None,
    ) -> None:
        self.loaded, self.model, self.optimizer = loaded, loaded.model, optimizer
        self.options, self.device, self.folder, self.spec = options, device, folder, spec
        self.train_data = train_data
        self.val_data = val_data.head(options.val_images) if val_data is not None else None
        self.state, self.progress = state, progress
        self.per_epoch = batches_per_epoch(len(train_data), options.batch_size)
        self.total = options.epochs * self.per_epoch
        self.stop_at = min(self.total, options.max_steps) if options.max_steps is not None else self.total
        self.loss_fn = ClipLoss()
        amp = device == "cuda"
        self.autocast_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda") if amp and self.autocast_dtype == torch.float16 else None
        self.skipped: list[tuple[str, str]] = []  # each unreadable image once, however many epochs met it
        self._skipped_paths: set[str] = set()
        self.last_loss = float("nan")

    def execute(self) -> TrainReport:
        started, resumed_from = time.perf_counter(), self.state.step
        self.model.train()
        while self.state.step < self.stop_at:
            epoch, start_batch = divmod(self.state.step, self.per_epoch)
            for batch in iterate_epoch(
                self.train_data,
                batch_size=self.options.batch_size,
                seed=self.options.seed,
                epoch=epoch,
                start_batch=start_batch,
                transform=self.loaded.train_transform,
                tokenizer=self.loaded.tokenizer,
                workers=self.options.workers,
            ):
                for path, reason in batch.skipped:
                    if path not in self._skipped_paths:
                        self._skipped_paths.add(path)
                        self.skipped.append((path, reason))
                loss = self._step(batch.pixels, batch.tokens) if len(batch.pixels) else self.last_loss
                self.state.step += 1
                at_eval = self._is_eval_step()
                val = self._evaluate_and_save() if at_eval else None
                if self.progress is not None:
                    lr = lr_at(self.state.step - 1, self.options, self.total)
                    self.progress(TrainProgress(self.state.step, self.stop_at, epoch, loss, lr, val))
                if self.state.step >= self.stop_at:
                    break
        if self.state.step > resumed_from and math.isnan(self.last_loss):
            raise TrainingError(
                f"no batch had 2 readable images in {self.state.step - resumed_from} steps; "
                "check the images (clipsearch index reports why each one fails)"
            )
        if not self.state.history or self.state.history[-1]["step"] != self.state.step:
            self._evaluate_and_save()
        return self._report(time.perf_counter() - started, resumed_from)

    def _is_eval_step(self) -> bool:
        step = self.state.step
        if self.options.eval_every > 0:
            return step % self.options.eval_every == 0 or step == self.stop_at
        return step % self.per_epoch == 0 or step == self.stop_at

    def _step(self, pixels: torch.Tensor, tokens: torch.Tensor) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.state.step, self.options, self.total)
        pixels, tokens = pixels.to(self.device, non_blocking=True), tokens.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=self.autocast_dtype, enabled=self.amp):
            image_features, text_features, logit_scale = self.model(pixels, tokens)[:3]
            loss = self.loss_fn(image_features, text_features, logit_scale)
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at step {self.state.step}; lower --lr")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
            self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, _MAX_LOGIT_SCALE)
        self.last_loss = float(loss.item())
        return self.last_loss

    def _evaluate_and_save(self) -> Recall | None:
        val = evaluate(self.loaded, self.val_data, self.device) if self.val_data is not None else None
        self.model.train()
        entry: dict[str, Any] = {"step": self.state.step, "loss": self.last_loss}
        if val is not None:
            entry["val"] = val.to_json() | {"mean": val.mean}
        self.state.history.append(entry)
        score = val.mean if val is not None else float(self.state.step)  # no validation: the latest is best
        if score > self.state.best_score:
            self.state.best_score, self.state.best_step = score, self.state.step
            self.state.best_val = entry.get("val")
            self._save_weights()
        self._save_state()
        return val

    def _save_weights(self) -> None:
        weights = {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}
        if self.options.fp16_weights:
            weights = {name: t.half() if t.is_floating_point() else t for name, t in weights.items()}
        _atomic_save({"state_dict": weights}, self.folder / BEST_CHECKPOINT)

    def _save_state(self) -> None:
        state = {
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.state.step,
            "best_score": self.state.best_score,
            "best_step": self.state.best_step,
            "best_val": self.state.best_val,
            "history": self.state.history,
            "options": asdict(self.options),
            "base_model": identity_of(self.spec).key,
            "data": dataset_digest(self.train_data),
        }
        _atomic_save(state, self.folder / LAST_CHECKPOINT)
        log = {
            "model": self.spec.model,
            "base_weights": self.spec.pretrained,
            "options": asdict(self.options),
            "train_images": len(self.train_data),
            "train_captions": len(self.train_data.captions),
            "val_images": len(self.val_data) if self.val_data is not None else 0,
            "best_step": self.state.best_step,
            "best_val": self.state.best_val,
            "history": self.state.history,
            "use_with": f"--model {self.spec.model} --pretrained {self.folder.resolve() / BEST_CHECKPOINT}",
        }
        (self.folder / RUN_LOG).write_text(json.dumps(log, indent=2) + "\n")

    def _report(self, seconds: float, resumed_from: int) -> TrainReport:
        best = self.state.best_val
        best_val = Recall.from_json(best) if best is not None else None
        return TrainReport(
            output=self.folder,
            steps=self.state.step,
            total_steps=self.total,
            seconds=seconds,
            resumed_from=resumed_from,
            best_step=self.state.best_step,
            best_val=best_val,
            final_loss=self.last_loss,
            skipped_images=self.skipped,
            history=self.state.history,
        )


def evaluate(loaded: LoadedModel, data: CaptionedDataset, device: str, batch_size: int = 256) -> Recall:
    """Exact recall@k of the model on `data`. An unreadable image gets an all-zero vector, which scores 0
    against every caption: it is almost never found, and its captions almost never match it."""
    model = loaded.model
    model.eval()
    image_vectors, text_vectors = [], []
    unreadable: list[int] = []
    with torch.no_grad():
        for start in range(0, len(data.images), batch_size):
            pixels = []
            for position, path in enumerate(data.images[start : start + batch_size], start=start):
                try:
                    pixels.append(loaded.eval_transform(read_and_decode(str(path), min_side=64)[1].image))
                except UnreadableImageError:
                    unreadable.append(position)
                    pixels.append(torch.zeros(3, *_input_size(model)))
            image_vectors.append(_unit(model.encode_image(torch.stack(pixels).to(device))))
        for start in range(0, len(data.captions), batch_size):
            tokens = loaded.tokenizer(list(data.captions[start : start + batch_size])).to(device)
            text_vectors.append(_unit(model.encode_text(tokens)))
    images = np.concatenate(image_vectors)
    images[unreadable] = 0.0
    return recall_at_k(images, np.concatenate(text_vectors), data.caption_image)


def _unit(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _input_size(model: Any) -> tuple[int, int]:
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, temporary)
    temporary.replace(path)
