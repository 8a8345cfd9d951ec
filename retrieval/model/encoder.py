"""One `Encoder` over open_clip: lazy model load, batched image and text encoding to L2-normalised float32."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from retrieval.config import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE
from retrieval.errors import InvalidQueryError
from retrieval.model.devices import resolve_device, resolve_precision
from retrieval.model.loading import RandomWeightsWarning, load_model
from retrieval.model.specs import ModelIdentity, ModelSpec, check_pretrained, embedding_dim, identity_of, open_clip_name

__all__ = ["Encoder", "RandomWeightsWarning"]


class Encoder:
    """Turns images and texts into comparable unit vectors with one open_clip model.

    The model is loaded on first use, so asking for `dim` or `identity` is cheap. Encoding runs under
    `torch.inference_mode`, in half precision on CUDA unless told otherwise.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = DEFAULT_DEVICE,
        precision: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_dir: str | None = None,
    ) -> None:
        self.spec = spec.absolute()
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._name = open_clip_name(self.spec)
        check_pretrained(self.spec)
        self._lock = threading.Lock()
        self._model: Any = None
        self._preprocess: Callable[[Image.Image], torch.Tensor] | None = None
        self._tokenizer: Any = None
        self._identity: ModelIdentity | None = None

    @property
    def dim(self) -> int:
        return embedding_dim(self.spec)

    @property
    def identity(self) -> ModelIdentity:
        if self._identity is None:
            self._identity = identity_of(self.spec)
        return self._identity

    @property
    def random_weights(self) -> bool:
        return self.spec.random_weights

    def load(self) -> None:
        """Load the model now (otherwise the first encode does)."""
        with self._lock:
            if self._model is None:
                self._load_locked()

    def _load_locked(self) -> None:
        loaded = load_model(self.spec, device=self.device, precision=self.precision, cache_dir=self.cache_dir)
        loaded.model.eval()
        self._tokenizer = loaded.tokenizer
        self._preprocess = loaded.eval_transform
        self._model = loaded.model

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model's own resize/crop/normalise of one RGB image; safe to call from worker threads."""
        if self._preprocess is None:
            self.load()
        assert self._preprocess is not None
        return self._preprocess(image)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_image_tensors(torch.stack([self.preprocess(image) for image in images]))

    def encode_image_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode a preprocessed batch (N, 3, H, W) in chunks of `batch_size`."""
        self.load()
        chunks = [
            self._run(self._model.encode_image, pixels[start : start + self.batch_size])
            for start in range(0, len(pixels), self.batch_size)
        ]
        return _concat(chunks, self.dim)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if any(not text.strip() for text in texts):
            raise InvalidQueryError("a text query is empty")
        self.load()
        chunks = [
            self._run(self._model.encode_text, self._tokenizer(list(texts[start : start + self.batch_size])))
            for start in range(0, len(texts), self.batch_size)
        ]
        return _concat(chunks, self.dim)

    def _run(self, encode: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> np.ndarray:
        batch = batch.to(self.device)
        if batch.is_floating_point():
            batch = batch.to(next(self._model.parameters()).dtype)
        with torch.inference_mode():
            features = encode(batch).float()
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)


def _concat(chunks: list[np.ndarray], dim: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
