"""One `Encoder` over open_clip: lazy model load, batched image and text encoding to L2-normalised float32,
run by torch or by ONNX Runtime (`backend`).

Nothing heavy is imported here at module level: on the ONNX backend, with the model's text tower already
exported and verified, a text query imports neither torch nor open_clip (see `onnx_model`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from retrieval.config import DEFAULT_BACKEND, DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, default_onnx_cache_dir
from retrieval.errors import InvalidQueryError, OnnxExportError
from retrieval.model.devices import resolve_backend, resolve_precision
from retrieval.model.loading import LoadedModel, RandomWeightsWarning, load_model
from retrieval.model.onnx_files import ExportFolder
from retrieval.model.onnx_model import OnnxModel
from retrieval.model.specs import ModelIdentity, ModelSpec, check_pretrained, embedding_dim, identity_of, open_clip_name

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["Encoder", "ImageTransform", "OnnxFallbackWarning", "RandomWeightsWarning"]
T = TypeVar("T")
ImageTransform = Callable[["Image.Image"], "torch.Tensor"]


class OnnxFallbackWarning(UserWarning):
    """`backend` auto could not export the model to ONNX and runs it with torch instead."""


class Encoder:
    """Turns images and texts into comparable unit vectors with one open_clip model.

    The model is loaded on first use, so asking for `dim` or `identity` is cheap. `backend` `auto` runs
    ONNX Runtime on the CPU when onnxruntime is installed and torch on a GPU (fp16 unless told otherwise).
    ONNX exports are kept in `onnx_dir` (a library passes its own folder; default: the user's cache) and
    made, and verified against torch, the first time they are needed. `precision` int8 quantises the image
    tower (ONNX on the CPU only); text always runs in fp32.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = DEFAULT_DEVICE,
        precision: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_dir: str | None = None,
        backend: str = DEFAULT_BACKEND,
        onnx_dir: str | Path | None = None,
        identity: ModelIdentity | None = None,
    ) -> None:
        self.spec = spec.absolute()
        self.backend, self.device = resolve_backend(backend, device, precision)
        self._may_fall_back = backend == DEFAULT_BACKEND and precision != "int8"  # torch can run what auto chose
        self.precision = resolve_precision(precision, self.device, self.backend)
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._model: Any = None
        self._loaded: LoadedModel | None = None
        self._preprocess: Callable[[Image.Image], torch.Tensor] | None = None
        self._identity = identity  # None: worked out from `spec` when first asked
        self._dim: int | None = None
        self._warned = False
        self.onnx: OnnxModel | None = None
        if self.backend == "onnx":
            folder = ExportFolder(Path(onnx_dir) if onnx_dir else default_onnx_cache_dir(), self.identity)
            self.onnx = OnnxModel(
                folder,
                image_precision=self.precision,
                torch_model=self._torch_model,
                name=lambda: open_clip_name(self.spec),
                dim=lambda: embedding_dim(self.spec),
            )
        if self.onnx is None or not self.onnx.ready("text"):
            open_clip_name(self.spec)  # a verified export vouches for the model; otherwise check it now
            check_pretrained(self.spec)

    @property
    def dim(self) -> int:
        if self._dim is None:
            recorded = self.onnx.manifest().get("dim") if self.onnx is not None else None
            self._dim = int(recorded) if recorded else embedding_dim(self.spec)
        return self._dim

    @property
    def identity(self) -> ModelIdentity:
        if self._identity is None:
            self._identity = identity_of(self.spec)
        return self._identity

    @property
    def made_by(self) -> str:
        """What makes this encoder's image vectors, `backend precision` (`onnx int8`, `torch fp16`): what a
        library records of its vectors. Settled once the model is loaded (`backend` auto may fall back)."""
        return f"{self.backend} {self.precision}"

    @property
    def random_weights(self) -> bool:
        return self.spec.random_weights

    def load(self) -> None:
        """Load the model now (otherwise the first encode does): on ONNX, export it first if need be."""
        if self.onnx is not None and self._preprocess is None:
            self._warn_random()
            self._preprocess = self._on_onnx(lambda onnx: onnx.preprocess())
        if self.onnx is not None:
            return
        with self._lock:
            if self._model is None:
                self._model = self._torch_model().model

    def _torch_model(self) -> LoadedModel:
        """The open_clip model in torch: the torch backend's model (kept), or the source of an ONNX export
        (not kept: once exported, its weights would only take memory)."""
        if self._loaded is not None:
            return self._loaded
        with warnings.catch_warnings():
            if self.onnx is not None:  # the ONNX path warns on its own, once, whether or not it exports
                warnings.simplefilter("ignore", RandomWeightsWarning)
            precision = "fp32" if self.onnx is not None else self.precision
            loaded = load_model(self.spec, device=self.device, precision=precision, cache_dir=self.cache_dir)
        loaded.model.eval()
        if self.onnx is None:
            self._loaded = loaded
            self._preprocess = loaded.eval_transform
        return loaded

    def _on_onnx(self, call: Callable[[OnnxModel], T]) -> T | None:
        """`call` on the ONNX model; when `backend` auto cannot export it, warn and switch to torch (None)."""
        assert self.onnx is not None
        try:
            return call(self.onnx)
        except OnnxExportError as exc:
            if not self._may_fall_back:
                raise
            warnings.warn(f"{exc} `backend` auto runs it with torch instead.", OnnxFallbackWarning, stacklevel=3)
            self.onnx, self.backend = None, "torch"
            return None

    def _warn_random(self) -> None:
        if self.spec.random_weights and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.spec.model} has RANDOM weights (`pretrained` none): results are meaningless "
                "beyond finding the same image again; use it for tests only.",
                RandomWeightsWarning,
                stacklevel=3,
            )

    @property
    def image_transform(self) -> ImageTransform:
        """The model's preprocessing on its own (open_clip's eval transform, loading the model if need be): a
        picklable callable for decoding in other processes (`indexer.ray_index`), unlike the encoder."""
        if self._preprocess is None:
            self.load()
        assert self._preprocess is not None
        return self._preprocess

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model's own resize/crop/normalise of one RGB image; safe to call from worker threads."""
        if self._preprocess is None:
            self.load()
        assert self._preprocess is not None
        return self._preprocess(image)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        return self.encode_image_tensors(torch.stack([self.preprocess(image) for image in images]))

    def encode_image_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode a preprocessed batch (N, 3, H, W) in chunks of `batch_size`."""
        self.load()
        starts = range(0, len(pixels), self.batch_size)
        chunks = [self._images(pixels[start : start + self.batch_size]) for start in starts]
        return _concat(chunks, self.dim)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if any(not text.strip() for text in texts):
            raise InvalidQueryError("a text query is empty")
        starts = range(0, len(texts), self.batch_size)
        chunks = [self._texts(texts[start : start + self.batch_size]) for start in starts]
        return _concat(chunks, self.dim)

    def _images(self, pixels: torch.Tensor) -> np.ndarray:
        if self.onnx is not None:
            vectors = self._on_onnx(lambda onnx: onnx.image(pixels.numpy()))
            if vectors is not None:
                return vectors
        self.load()
        return self._run(self._model.encode_image, pixels)

    def _texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.onnx is not None:
            self._warn_random()
            vectors = self._on_onnx(lambda onnx: onnx.text(texts))
            if vectors is not None:
                return vectors
        self.load()
        assert self._loaded is not None
        return self._run(self._model.encode_text, self._loaded.tokenizer(list(texts)))

    def _run(self, encode: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> np.ndarray:
        import torch

        batch = batch.to(self.device, non_blocking=True)
        if batch.is_floating_point():
            # The precision's dtype, not a parameter's: open_clip's fp16 keeps some parameters (embeddings,
            # LayerNormFp32) in fp32, so the first parameter's dtype can differ from what conv1 expects.
            batch = batch.to({"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32))
        with torch.inference_mode():
            features = encode(batch).float()
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)


def _concat(chunks: list[np.ndarray], dim: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
