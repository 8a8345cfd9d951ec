"""What runs on a Ray cluster's workers when indexing there: decode tasks, encode actors, and how much of the
cluster each asks for.

Plain Python with no Ray import: Ray ships these by reference (every node has clipsearch installed), and the
tests call them directly. Rows travel as pickled objects in one binary column (`ITEM`), because a path is a
`str` that may hold surrogate escapes (a name that is not UTF-8), which Arrow's strings cannot.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.pipeline import Failed, Prepared, Reading, prepare
from retrieval.config import RAY_CPUS_PER_ENCODE_ACTOR
from retrieval.errors import DeviceUnavailableError
from retrieval.membudget import MemoryBudget
from retrieval.model.devices import resolve_precision
from retrieval.model.encoder import Encoder, ImageTransform, RandomWeightsWarning
from retrieval.model.specs import ModelIdentity, ModelSpec
from retrieval.storage.records import FileMetadata

ITEM = "item"
"""The one column of every stage: a pickled `DiskFile`, then `Prepared | Failed`, then `Encoded | Failed`."""

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Encoded:
    """One image's row facts and its vector (float32, as the encoder gave it)."""

    meta: FileMetadata
    vector: np.ndarray


def to_batch(items: list[Any]) -> Batch:
    column = np.empty(len(items), dtype=object)
    column[:] = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
    return {ITEM: column}


def from_batch(batch: Mapping[str, Any]) -> list[Any]:
    return [pickle.loads(blob) for blob in batch[ITEM]]


@dataclass(frozen=True)
class DecodeArgs:
    """What every decode task needs: the model's preprocessing (pickled once) and how files are read."""

    transform: ImageTransform
    follow_symlinks: bool
    memory_budget: int


def decode_batch(batch: Batch, args: DecodeArgs) -> Batch:
    """A decode task: read, hash, decode and preprocess each file, as a local run's threads do (`prepare`)."""
    reading = Reading(args.follow_symlinks, MemoryBudget(args.memory_budget))
    return to_batch([prepare(disk, args.transform, reading) for disk in from_batch(batch)])


@dataclass(frozen=True)
class EncoderRecipe:
    """How an encode actor builds its `Encoder`: the driver's model, on the actor's device."""

    spec: ModelSpec
    identity: ModelIdentity
    device: str
    backend: str
    precision: str
    batch_size: int
    onnx_dir: str

    @property
    def made_by(self) -> str:
        """What the library records of these vectors (`Encoder.made_by`)."""
        return f"{self.backend} {self.precision}"

    def build(self) -> Encoder:
        return Encoder(
            self.spec,
            device=self.device,
            precision=self.precision,
            batch_size=self.batch_size,
            backend=self.backend,
            onnx_dir=self.onnx_dir,
            identity=self.identity,
        )


class EncodeActor:
    """An encode actor: loads the model once, then turns decoded batches into vectors (failures pass through)."""

    def __init__(self, recipe: EncoderRecipe) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # the driver warned the user once already
            self.encoder = recipe.build()
            self.encoder.load()

    def __call__(self, batch: Batch) -> Batch:
        import torch

        items: list[Prepared | Failed] = from_batch(batch)
        good = [item for item in items if isinstance(item, Prepared)]
        pixels = torch.stack([item.pixels for item in good]) if good else None
        vectors = self.encoder.encode_image_tensors(pixels) if pixels is not None else np.zeros((0, 0), np.float32)
        encoded = iter(Encoded(item.meta, vector) for item, vector in zip(good, vectors, strict=True))
        return to_batch([next(encoded) if isinstance(item, Prepared) else item for item in items])


@dataclass(frozen=True)
class EncodePlacement:
    """Where the encode actors run: how many, and what each asks of the cluster."""

    actors: int
    num_cpus: float
    num_gpus: float

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus else "cpu"


def place_encoders(resources: Mapping[str, float], device: str, actors: int | None = None) -> EncodePlacement:
    """One actor per GPU, each holding one, when the cluster has GPUs and `device` allows them (auto or cuda);
    otherwise CPU actors, one per RAY_CPUS_PER_ENCODE_ACTOR CPUs of the cluster (at least one). `actors`
    overrides the count."""
    gpus = int(resources.get("GPU", 0))
    if device == "cuda" and not gpus:
        raise DeviceUnavailableError(
            "`device` cuda asked for, but the Ray cluster has no GPU; use `device` auto or cpu",
            parameters=("device",),
        )
    if gpus and device in ("auto", "cuda"):
        return EncodePlacement(actors or gpus, num_cpus=1, num_gpus=1)
    if device not in ("auto", "cpu"):
        raise DeviceUnavailableError(
            f"`device` {device} cannot run on a Ray cluster; use auto, cpu or cuda", parameters=("device",)
        )
    cpus = int(resources.get("CPU", 1))
    return EncodePlacement(actors or max(1, cpus // RAY_CPUS_PER_ENCODE_ACTOR), num_cpus=1, num_gpus=0)


def recipe_for(encoder: Encoder, placement: EncodePlacement, precision: str, onnx_dir: Path) -> EncoderRecipe:
    """The encode actors' recipe. On CPU actors, the driver's own backend and precision, so that the vectors are
    those of a local run (an ONNX export the driver made is reused); on GPU actors, torch on cuda at `precision`
    (auto: fp16; int8, which only ONNX on the CPU runs, becomes fp16)."""
    if placement.device == "cuda":
        backend, chosen = "torch", resolve_precision("auto" if precision == "int8" else precision, "cuda", "torch")
    elif encoder.device == "cpu":
        backend, chosen = encoder.backend, encoder.precision
    else:  # a driver with a GPU, actors without one
        backend, chosen = "torch", "fp32"
    return EncoderRecipe(
        spec=encoder.spec,
        identity=encoder.identity,
        device=placement.device,
        backend=backend,
        precision=chosen,
        batch_size=encoder.batch_size,
        onnx_dir=str(onnx_dir),
    )


def decode_remote_args(memory_budget: int) -> dict[str, Any]:
    """Decode tasks: one CPU each, and the decode memory budget reserved on the node. That they ask for other
    resources than the encode actors matters: Ray Data fuses a task stage into the actor stage after it when
    their arguments match, which would decode inside the encode actors, one file after another."""
    return {"num_cpus": 1, "memory": memory_budget}


def encode_remote_args(placement: EncodePlacement) -> dict[str, Any]:
    """Encode actors: one CPU, or a CPU and a GPU; Ray Data restarts them when their worker dies and retries
    their batches."""
    return {"num_cpus": placement.num_cpus, "num_gpus": placement.num_gpus}
