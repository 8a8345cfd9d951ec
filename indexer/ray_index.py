"""`index_folders` on a Ray cluster: the same scan, plan and reuse on the driver, then decoding as Ray Data
tasks on CPU workers and encoding on actors (a GPU each where the cluster has GPUs), the results streamed back
to the driver, which commits them batch by batch through the local run's `BatchCommitter`.

Crash semantics are a local run's: every batch the driver receives is one transaction, so a worker that dies
costs a retry (Ray reruns its tasks and restarts its actors), and a driver that dies costs at most the batches
in flight: the next run's plan skips every committed file. Ray is imported only here, and only when called.

Every node must have clipsearch (and the model's files, and the images, at the same paths) installed: tasks and
actors are shipped by reference to this package's modules, and the files are read where they are decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

import numpy as np

from indexer.pipeline import BatchCommitter, Failed, IndexReport, Reading, index_folders
from indexer.ray_stages import (
    ITEM,
    DecodeArgs,
    EncodeActor,
    Encoded,
    EncoderRecipe,
    decode_batch,
    decode_remote_args,
    encode_remote_args,
    from_batch,
    place_encoders,
    recipe_for,
    to_batch,
)
from indexer.scan import DiskFile, ScanOptions
from retrieval.config import (
    DECODE_MEMORY_BUDGET,
    DEFAULT_DECODE_WORKERS,
    ONNX_FOLDER,
    RAY_ADDRESS_AUTO,
    RAY_DECODE_BATCH_SIZE,
    RAY_EXTRA,
)
from retrieval.errors import RayUnavailableError
from retrieval.library import Library
from retrieval.model.encoder import Encoder, ImageTransform
from retrieval.progress import ProgressCallback

if TYPE_CHECKING:
    import ray.data


@dataclass(frozen=True)
class RayOptions:
    """How a run uses the cluster. `address`: auto (RAY_ADDRESS, or a cluster `ray start` runs on this machine,
    else a new local one) or a head's `host:port`. `device`: where the encode actors run (auto: a GPU each when
    the cluster has GPUs); `precision`: the GPU actors' precision (auto: fp16). `decode_batch_size`: files per
    decode task; the encoder's `batch_size` is the encode actors' batch. `encode_actors`: how many (default: one
    per GPU, or one per RAY_CPUS_PER_ENCODE_ACTOR CPUs)."""

    address: str = RAY_ADDRESS_AUTO
    device: str = "auto"
    precision: str = "auto"
    decode_batch_size: int = RAY_DECODE_BATCH_SIZE
    encode_actors: int | None = None


def index_folders_on_ray(
    library: Library,
    encoder: Encoder,
    roots: Iterable[str],
    *,
    ray_options: RayOptions | None = None,
    options: ScanOptions | None = None,
    workers: int = DEFAULT_DECODE_WORKERS,
    retry_errors: bool = False,
    progress: ProgressCallback | None = None,
    memory_budget: int = DECODE_MEMORY_BUDGET,
) -> IndexReport:
    """`index_folders` with decoding and encoding on a Ray cluster; the other arguments mean what they mean
    there (`workers` hash the candidates for moved and copied files on the driver; `memory_budget` bounds each
    decode task)."""
    chosen = ray_options or RayOptions()
    with ray_session(chosen.address) as ray:
        stage = RayStage(ray, chosen, library.directory / ONNX_FOLDER)
        return index_folders(
            library,
            encoder,
            roots,
            options=options,
            workers=workers,
            retry_errors=retry_errors,
            progress=progress,
            memory_budget=memory_budget,
            embed=stage,
        )


def import_ray() -> ModuleType:
    """Ray and Ray Data, or a `RayUnavailableError` saying how to install them."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            f"indexing on Ray needs Ray Data, which is not installed ({exc}); {RAY_EXTRA}"
        ) from exc
    return ray


@contextmanager
def ray_session(address: str) -> Iterator[ModuleType]:
    """Ray connected to the cluster at `address` for the block (disconnected after it, if connected here)."""
    ray = import_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        try:
            ray.init(
                address=None if address == RAY_ADDRESS_AUTO else address,
                include_dashboard=False,
                log_to_driver=False,  # the library never prints: workers' output stays in the cluster's logs
                logging_level=logging.ERROR,  # not its notes (token authentication, ...)
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailableError(
                f"cannot connect to the Ray cluster at `ray_address` {address}: {exc}", parameters=("ray_address",)
            ) from exc
    _quiet_ray_data(ray)
    try:
        yield ray
    finally:
        if connected_here:
            ray.shutdown()


def _quiet_ray_data(ray: ModuleType) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


class RayStage:
    """The `EmbedStage` on Ray: decode tasks, then encode actors; each result block is committed as it comes."""

    def __init__(self, ray: ModuleType, options: RayOptions, onnx_dir: Path) -> None:
        self.ray, self.options, self.onnx_dir = ray, options, onnx_dir

    def __call__(self, files: list[DiskFile], batches: BatchCommitter, reading: Reading) -> None:
        encoder = batches.encoder
        placement = place_encoders(self.ray.cluster_resources(), self.options.device, self.options.encode_actors)
        recipe = recipe_for(encoder, placement, self.options.precision, self.onnx_dir)
        _record_made_by(batches.library, encoder, recipe)
        dataset = self._decoded(files, reading, encoder.image_transform).map_batches(
            EncodeActor,
            fn_constructor_kwargs={"recipe": recipe},
            batch_size=recipe.batch_size,
            batch_format="numpy",
            compute=self.ray.data.ActorPoolStrategy(size=placement.actors),
            **encode_remote_args(placement),
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            items = from_batch(batch)
            encoded = [item for item in items if isinstance(item, Encoded)]
            vectors = np.stack([item.vector for item in encoded]) if encoded else None
            failed = [item for item in items if isinstance(item, Failed)]
            batches.write([item.meta for item in encoded], vectors, failed)

    def _decoded(self, files: list[DiskFile], reading: Reading, transform: ImageTransform) -> ray.data.Dataset:
        """The files through the decode tasks, `decode_batch_size` files each."""
        decode_size = self.options.decode_batch_size
        rows = [{ITEM: blob} for blob in to_batch(files)[ITEM]]
        args = DecodeArgs(transform, reading.follow_symlinks, reading.budget.capacity)
        dataset = self.ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // decode_size)))
        return dataset.map_batches(
            decode_batch,
            fn_kwargs={"args": args},
            batch_size=decode_size,
            batch_format="numpy",
            **decode_remote_args(reading.budget.capacity),
        )


@dataclass(frozen=True)
class _MadeBy:
    """What `Library.record_precision` reads of an encoder, for actors whose encoder is not the driver's."""

    made_by: str
    precision: str


def _record_made_by(library: Library, encoder: Encoder, recipe: EncoderRecipe) -> None:
    """Record what makes this run's vectors: the actors' encoder (on GPU actors another than the driver's)."""
    if recipe.made_by == encoder.made_by:
        library.record_precision(encoder)
    else:
        library.record_precision(cast(Encoder, _MadeBy(recipe.made_by, recipe.precision)))
