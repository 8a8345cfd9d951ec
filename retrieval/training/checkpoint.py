"""Training checkpoints: `last.pt`, everything a run resumes from, and `best.pt`, the best weights only.

`last.pt` is one flat dict of `CHECKPOINT_KEYS`: the model's and the optimizer's state, where the run stands
(`RunState`) and what the run learns from (`RunIdentity`, which a resumed run must match). `best.pt` holds
`{"state_dict": ...}`, the layout open_clip loads with `--pretrained best.pt`. `open_run` starts a run in a
folder holding neither, or resumes the one whose `last.pt` is there.

Both are written atomically through an open file, not a path: torch.save names the archive inside after the
path it is given, and the temporary file's random name would make equal checkpoints differ byte for byte
(and so in the content hash that names a checkpoint's weights).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from retrieval.atomic import atomic_path
from retrieval.errors import TrainingError
from retrieval.model.specs import identity_of
from retrieval.training.batches import dataset_digest
from retrieval.training.options import RUNTIME_OPTIONS, RunSetup

BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"


@dataclass
class RunState:
    """Where a run stands: steps done, the best evaluation so far, and every evaluation."""

    step: int = 0
    best_score: float = -1.0
    best_step: int | None = None
    best_val: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    """Wall-clock seconds trained so far, over every resume (what a `time_budget` counts)."""


@dataclass(frozen=True)
class RunIdentity:
    """What a run learns from: its options, base model and training data."""

    options: dict[str, Any]
    base_model: str
    data: str

    @classmethod
    def of(cls, setup: RunSetup) -> RunIdentity:
        return cls(asdict(setup.options), identity_of(setup.spec).key, dataset_digest(setup.train_data))

    def check_resumable_as(self, current: RunIdentity) -> None:
        """Refuse to continue this saved run as `current` if they differ in anything but runtime options;
        the message names every difference, old and new value."""
        differences = [
            f"{name}={self.options[name]!r} (now {value!r})"
            for name, value in current.options.items()
            if name not in RUNTIME_OPTIONS and self.options.get(name) != value
        ]
        if self.base_model != current.base_model:
            differences.append(f"model {self.base_model} (now {current.base_model})")
        if self.data != current.data:
            differences.append("training data (images or captions changed)")
        if differences:
            raise TrainingError(
                "cannot resume: the run in this folder was started with "
                + "; ".join(differences)
                + ". Resume with the same options and data, or start a new `output`.",
                parameters=("output",),
            )


@dataclass
class Checkpoint:
    """What `last.pt` holds, grouped; the file itself is flat (`CHECKPOINT_KEYS`)."""

    state_dict: dict[str, Any]
    optimizer: dict[str, Any]
    state: RunState
    run: RunIdentity


def _names(group: type[RunState] | type[RunIdentity]) -> tuple[str, ...]:
    return tuple(item.name for item in fields(group))


CHECKPOINT_KEYS = ("state_dict", "optimizer", *_names(RunState), *_names(RunIdentity))
"""Every key of a full checkpoint, in the order it is written."""
OPTIONAL_KEYS = frozenset({"seconds"})
"""Keys a last.pt may lack: written since the time budget came (an older run starts its clock at 0)."""


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write the full state to `path` (replacing it atomically)."""
    flat = {"state_dict": checkpoint.state_dict, "optimizer": checkpoint.optimizer}
    flat |= {name: getattr(checkpoint.state, name) for name in _names(RunState)}
    flat |= {name: getattr(checkpoint.run, name) for name in _names(RunIdentity)}
    _save(flat, path)


def load_checkpoint(path: Path, device: str) -> Checkpoint:
    """Read a full checkpoint written by `save_checkpoint`; one lacking any key is refused by name."""
    saved = torch.load(path, map_location=device, weights_only=True)
    missing = [
        key for key in CHECKPOINT_KEYS if key not in OPTIONAL_KEYS and (not isinstance(saved, dict) or key not in saved)
    ]
    if missing:
        raise TrainingError(
            f"{path} is not a full training checkpoint: it lacks {', '.join(missing)}; "
            "only a last.pt written by clipsearch train can be resumed"
        )
    return Checkpoint(
        state_dict=saved["state_dict"],
        optimizer=saved["optimizer"],
        state=RunState(**{name: saved[name] for name in _names(RunState) if name in saved}),
        run=RunIdentity(**{name: saved[name] for name in _names(RunIdentity)}),
    )


def open_run(setup: RunSetup, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, resume: bool) -> RunState:
    """A new run in an empty folder, or (`resume`) the saved run's state, loaded into model and optimizer."""
    folder = setup.folder
    last = folder / LAST_CHECKPOINT
    if not resume:
        if last.exists() or (folder / BEST_CHECKPOINT).exists():
            raise TrainingError(
                f"{folder} already holds a training run; pass `resume` to continue it, or choose another `output`",
                parameters=("resume", "output"),
            )
        folder.mkdir(parents=True, exist_ok=True)
        return RunState()
    if not last.is_file():
        raise TrainingError(
            f"nothing to resume: {last} does not exist (drop `resume` to start a new run)", parameters=("resume",)
        )
    saved = load_checkpoint(last, setup.device)
    saved.run.check_resumable_as(RunIdentity.of(setup))
    model.load_state_dict(saved.state_dict)
    optimizer.load_state_dict(saved.optimizer)
    return saved.state


def save_weights(model: torch.nn.Module, path: Path, *, half: bool) -> None:
    """Write the model's weights alone, on the CPU, optionally as float16, as an open_clip checkpoint."""
    weights = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    if half:
        weights = {name: t.half() if t.is_floating_point() else t for name, t in weights.items()}
    _save({"state_dict": weights}, path)


def _save(obj: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        torch.save(obj, file)
