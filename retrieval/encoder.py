"""One `Encoder` over open_clip: lazy model load, batched image and text encoding to L2-normalised float32."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from retrieval.config import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, RANDOM_WEIGHTS_SEED
from retrieval.devices import resolve_device, resolve_precision
from retrieval.errors import InvalidQueryError, ModelUnavailableError
from retrieval.models import (
    ModelIdentity,
    ModelSpec,
    check_pretrained,
    embedding_dim,
    identity_of,
    open_clip_name,
)
from retrieval.weights import locate_pretrained


class RandomWeightsWarning(UserWarning):
    """The model has random weights: its results have no meaning beyond self-similarity."""


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
        if self.spec.random_weights:
            warnings.warn(
                f"{self.spec.model} has RANDOM weights (--pretrained none): results are meaningless "
                "beyond finding the same image again; use it for tests only.",
                RandomWeightsWarning,
                stacklevel=3,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_WEIGHTS_SEED)
                model, preprocess = self._create(None)
        elif self.spec.is_checkpoint_file:
            model, preprocess = self._create(self.spec.pretrained)
        else:
            source = locate_pretrained(self._name, self.spec.pretrained, self.cache_dir)
            model, preprocess = self._create(source.cached_file or self.spec.pretrained, **source.preprocess)
        self._tokenizer = _tokenizer_for(self._name, self.cache_dir)
        model.eval()
        self._preprocess = preprocess
        self._model = model

    def _create(self, pretrained: str | None, **preprocess: Any) -> tuple[Any, Any]:
        quick_gelu = bool(preprocess.pop("quick_gelu", False))
        overrides = {f"image_{key}": value for key, value in preprocess.items()}
        try:
            model, _, transform = open_clip.create_model_and_transforms(
                self._name,
                pretrained=pretrained,
                device=self.device,
                precision=self.precision,
                cache_dir=self.cache_dir,
                force_quick_gelu=quick_gelu,
                **overrides,
            )
        except Exception as exc:  # open_clip raises RuntimeError/FileNotFoundError/HTTP errors alike
            raise ModelUnavailableError(_weights_help(self.spec, exc)) from exc
        return model, transform

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


def _tokenizer_for(name: str, cache_dir: str | None) -> Any:
    try:
        return open_clip.get_tokenizer(name, cache_dir=cache_dir)
    except Exception as exc:
        raise ModelUnavailableError(f"cannot load the tokenizer of {name}: {exc}") from exc


def _weights_help(spec: ModelSpec, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if spec.random_weights or spec.is_checkpoint_file:
        return f"cannot build {spec.model} with weights '{spec.pretrained}': {reason}"
    from huggingface_hub import constants

    return (
        f"cannot get pretrained weights '{spec.pretrained}' for {spec.model}: {reason}\n"
        f"Tried open_clip's download (Hugging Face Hub, cache {constants.HF_HUB_CACHE}). If this machine is "
        "offline: download the checkpoint on a connected machine and pass its path with "
        "--pretrained /path/to/open_clip_model.safetensors (keep --model), or copy the Hugging Face cache "
        "folder to the path above. For a test run without weights, use --pretrained none."
    )
