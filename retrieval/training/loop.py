"""Contrastive training of an open_clip model on captioned images (`clipsearch train`).

open_clip's symmetric InfoNCE (`ClipLoss`), AdamW without decay on gains, biases and the temperature,
linear warmup then cosine decay (`schedule`), gradient clipping, optional locked image or text tower,
autocast on GPU. Validation recall (`evaluation`) is measured every `eval_every` steps and at the end; the
best weights go to `best.pt`, which loads anywhere with `--model <config> --pretrained best.pt`. The full
state goes to `last.pt` at every evaluation (`checkpoint`), with the run log `train.json` (`runlog`), and a
run started again with `resume=True` continues from it exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from open_clip.loss import ClipLoss

from retrieval.errors import TrainingError
from retrieval.model.devices import resolve_device
from retrieval.model.loading import LoadedModel, load_model
from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import CaptionedDataset
from retrieval.quality.recall import Recall, recall_at_k
from retrieval.training.augment import augmenting
from retrieval.training.batches import Batch, batches_per_epoch, iterate_steps
from retrieval.training.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    Checkpoint,
    RunIdentity,
    RunState,
    open_run,
    save_checkpoint,
    save_weights,
)
from retrieval.training.evaluation import attribute_scores, encode_split
from retrieval.training.options import RunSetup, TrainOptions
from retrieval.training.parameters import lock_towers, make_optimizer
from retrieval.training.report import StepCallback, TrainProgress, TrainReport
from retrieval.training.runlog import write_run_log
from retrieval.training.scene_batches import SceneLabels, soft_clip_loss
from retrieval.training.schedule import lr_at

_MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp on the learned temperature
LOSS_SYNC_STEPS = 50
"""Without a progress callback, the loss is read off the device (and checked) only every this many steps."""
_DEFAULT_OPTIONS = TrainOptions()


def train(
    spec: ModelSpec,
    train_data: CaptionedDataset,
    output: str | Path,
    options: TrainOptions = _DEFAULT_OPTIONS,
    *,
    val_data: CaptionedDataset | None = None,
    resume: bool = False,
    progress: StepCallback | None = None,
) -> TrainReport:
    """Train `spec` (a config with `none` weights = from scratch; a tag or checkpoint = fine-tuning)."""
    if options.lock_image and options.lock_text:
        raise TrainingError("locking both towers leaves nothing to train; lock at most one")
    folder = Path(output).expanduser()
    spec = spec.absolute()
    device = resolve_device(options.device)
    val_data = val_data.head(options.val_images) if val_data is not None else None
    setup = RunSetup(spec, options, train_data, val_data, folder, device)
    torch.manual_seed(options.seed)
    loaded = load_model(spec, device=device, warn_random=False)
    lock_towers(loaded.model, options)
    optimizer = make_optimizer(loaded.model, options)
    state = open_run(setup, loaded.model, optimizer, resume=resume)
    return Trainer(setup, loaded, optimizer, state, progress).execute()


class Trainer:
    """One training run from its current step to the end; holds what every step needs."""

    def __init__(
        self,
        setup: RunSetup,
        loaded: LoadedModel,
        optimizer: torch.optim.Optimizer,
        state: RunState,
        on_step: StepCallback | None,
    ) -> None:
        self.setup, self.options = setup, setup.options
        self.loaded, self.model, self.optimizer = loaded, loaded.model, optimizer
        self.state, self.on_step = state, on_step
        self.identity = RunIdentity.of(setup)
        self.per_epoch = batches_per_epoch(len(setup.train_data), self.options.batch_size)
        self.total = self.options.epochs * self.per_epoch
        max_steps = self.options.max_steps
        self.stop_at = min(self.total, max_steps) if max_steps is not None else self.total
        self.loss_fn = ClipLoss()
        wants_labels = self.options.hard_negatives or self.options.match_targets
        self.labels = SceneLabels.of(setup.train_data, self.options.partial_target) if wants_labels else None
        self.transform = augmenting(loaded.eval_transform) if self.options.augment else loaded.train_transform
        self.amp = setup.device == "cuda"
        self.autocast_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        fp16_amp = self.amp and self.autocast_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if fp16_amp else None
        self.skipped: list[tuple[str, str]] = []  # each unreadable image once, however many epochs met it
        self._skipped_paths: set[str] = set()
        self.last_loss = float("nan")
        self._pending: torch.Tensor | None = None  # the latest step's loss, not yet read off the device
        self._clock = (time.perf_counter(), state.seconds)  # (when this process started, seconds before it)
        if self.amp:
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels

    def execute(self) -> TrainReport:
        started, resumed_from = time.perf_counter(), self.state.step
        self._clock = (started, self.state.seconds)
        self.model.train()
        batches = iterate_steps(
            self.setup.train_data,
            batch_size=self.options.batch_size,
            seed=self.options.seed,
            first_step=self.state.step,
            stop_step=self.stop_at,
            transform=self.transform,
            tokenizer=self.loaded.tokenizer,
            workers=self.options.workers,
            labels=self.labels,
            hard_negatives=self.options.hard_negatives,
            pin_memory=self.setup.device == "cuda",
        )
        try:
            for batch in batches:
                if self._time_spent() >= 1.0:
                    break  # the budget is spent (a resumed run's too): end with the usual last evaluation
                self._run_step(batch)
        finally:
            batches.close()  # ends the loader's worker processes now, also after a budget stop or an error
        if self.state.step > resumed_from and math.isnan(self.last_loss) and self._pending is None:
            raise TrainingError(
                f"no batch had 2 readable images in {self.state.step - resumed_from} steps; "
                "check the images (clipsearch index reports why each one fails)"
            )
        if not self.state.history or self.state.history[-1]["step"] != self.state.step:
            self._evaluate_and_save()
        return self._report(time.perf_counter() - started, resumed_from)

    def _run_step(self, batch: Batch) -> None:
        """One training step, then its evaluation (when due) and its progress event."""
        for path, reason in batch.skipped:
            if path not in self._skipped_paths:
                self._skipped_paths.add(path)
                self.skipped.append((path, reason))
        if len(batch.pixels):
            self._pending = self._step(batch)
        self.state.step += 1
        step = self.state.step
        val = self._evaluate_and_save() if self._is_eval_step() else None
        if self.on_step is not None or step % LOSS_SYNC_STEPS == 0:
            self._sync_loss()  # a GPU waits for the host only here, not at every step
        if self.on_step is not None:
            lr = lr_at(step - 1, self.options, self.total, self._time_spent())
            epoch = (step - 1) // self.per_epoch
            self.on_step(TrainProgress(step, self.stop_at, epoch, self.last_loss, lr, val))

    def _time_spent(self) -> float:
        """The share of `time_budget` used so far (0 without one)."""
        budget = self.options.time_budget
        if budget is None:
            return 0.0
        started, before = self._clock
        self.state.seconds = before + time.perf_counter() - started
        return self.state.seconds / budget if budget > 0 else 1.0

    def _sync_loss(self) -> None:
        """Read the latest step's loss off the device, and stop the run if it is no longer finite."""
        if self._pending is None:
            return
        loss, self._pending = float(self._pending.item()), None
        if not math.isfinite(loss):
            raise TrainingError(f"the loss became {loss} by step {self.state.step}; lower `lr`", parameters=("lr",))
        self.last_loss = loss

    def _is_eval_step(self) -> bool:
        step = self.state.step
        if self.options.eval_every > 0:
            return step % self.options.eval_every == 0 or step == self.stop_at
        return step % self.per_epoch == 0 or step == self.stop_at

    def _step(self, batch: Batch) -> torch.Tensor:
        """Forward, backward and update on one batch; returns the loss, still on the device."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.state.step, self.options, self.total, self._time_spent())
        device = self.setup.device
        pixels, tokens = batch.pixels.to(device, non_blocking=True), batch.tokens.to(device, non_blocking=True)
        targets = batch.targets.to(device, non_blocking=True) if batch.targets is not None else None
        use_targets = self.options.match_targets and targets is not None
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=self.autocast_dtype, enabled=self.amp):
            image_features, text_features, logit_scale = self.model(pixels, tokens)[:3]
            if use_targets and targets is not None:
                loss = soft_clip_loss(image_features.float(), text_features.float(), logit_scale.float(), targets)
            else:
                loss = self.loss_fn(image_features, text_features, logit_scale)
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
        return loss.detach()

    def _evaluate_and_save(self) -> Recall | None:
        """Evaluate, record it, and write best.pt (if this is the best so far), last.pt and train.json."""
        self._sync_loss()  # a loss gone to NaN stops the run before its weights are saved
        self._time_spent()
        val_data, folder = self.setup.val_data, self.setup.folder
        entry: dict[str, Any] = {"step": self.state.step, "loss": self.last_loss}
        val, score = None, float(self.state.step)  # no validation: the latest is best
        if val_data is not None:
            images, texts = encode_split(self.loaded, val_data, self.setup.device)
            val = recall_at_k(images, texts, val_data.caption_image)
            entry["val"] = val.to_json() | {"mean": val.mean}
            score = val.mean
            if self.options.select_by == "attributes":
                precision = attribute_scores(self.loaded, val_data, images, self.setup.device)
                if not precision:
                    raise TrainingError(
                        "`select_by` attributes needs validation data from generate_dataset (scene captions)",
                        parameters=("select_by",),
                    )
                for k, by_attribute in precision.items():
                    entry["val"][f"attributes_p{k}"] = by_attribute
                values = [value for by_attribute in precision.values() for value in by_attribute.values()]
                score = sum(values) / len(values)
        self.model.train()
        self.state.history.append(entry)
        if score > self.state.best_score:
            self.state.best_score, self.state.best_step = score, self.state.step
            self.state.best_val = entry.get("val")
            save_weights(self.model, folder / BEST_CHECKPOINT, half=self.options.fp16_weights)
        full = Checkpoint(self.model.state_dict(), self.optimizer.state_dict(), self.state, self.identity)
        save_checkpoint(full, folder / LAST_CHECKPOINT)
        write_run_log(self.setup, self.state)
        return val

    def _report(self, seconds: float, resumed_from: int) -> TrainReport:
        best = self.state.best_val
        return TrainReport(
            output=self.setup.folder,
            steps=self.state.step,
            total_steps=self.total,
            seconds=seconds,
            resumed_from=resumed_from,
            best_step=self.state.best_step,
            best_val=Recall.from_json(best) if best is not None else None,
            final_loss=self.last_loss,
            skipped_images=self.skipped,
            history=self.state.history,
        )
