"""A model on ONNX Runtime: its verified exports, made from the torch model the first time they are needed.

`OnnxModel` hands out the towers, the query tokenizer and the image preprocessing of one model. When every
file it needs is on disk and verified, it imports neither torch nor open_clip for text (the image
preprocessing is open_clip's own transform, so images still need torch's tensors). Otherwise it asks for
the torch model once, exports both fp32 towers (so an index run leaves the text tower ready for a light
query), verifies them, and for `int8` quantises the image tower.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import OnnxExportError
from retrieval.model.loading import LoadedModel
from retrieval.model.onnx_backend import OnnxTower
from retrieval.model.onnx_files import ExportFolder, file_stamp, warn_stale
from retrieval.model.tokenizer import ClipTokenizer

_VERSIONED = ("torch", "open_clip_torch", "onnx", "onnxruntime")


class OnnxModel:
    """The towers of one model, from `folder`. Only when an export is needed: `torch_model` loads the torch
    model, `name` gives open_clip's name of the architecture and `dim` the embedding width."""

    def __init__(
        self,
        folder: ExportFolder,
        *,
        image_precision: str,
        torch_model: Callable[[], LoadedModel],
        name: Callable[[], str],
        dim: Callable[[], int],
    ) -> None:
        self.folder = folder
        self.image_tower_name = "image-int8" if image_precision == "int8" else "image"
        self._torch_model = torch_model
        self._name = name
        self._dim = dim
        self._lock = threading.Lock()
        self._towers: dict[str, OnnxTower] = {}
        self._verified: dict[str, Path] = {}  # checked by `ready`: hashing a large tower once is enough
        self._tokenizer: Callable[[list[str]], np.ndarray] | None = None

    def ready(self, tower: str) -> bool:
        """Whether `tower` ("text" or "image") can run from verified files, with no export."""
        name = self.image_tower_name if tower == "image" else "text"
        path = self.folder.verified(name)
        if path is None or (tower == "text" and not self._vocab_intact()):
            return False
        self._verified[name] = path
        return True

    def manifest(self) -> dict[str, Any]:
        return self.folder.manifest() or {}

    def text(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            tower = self._tower("text")
            tokenizer = self._query_tokenizer()
        return tower(tokenizer(list(texts)))

    def image(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            tower = self._tower(self.image_tower_name)
        return tower(pixels)

    def preprocess(self) -> Callable[[Any], Any]:
        """open_clip's eval transform for this model, built from the preprocessing the export recorded."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        with self._lock:
            self._tower(self.image_tower_name)
        return image_transform_v2(PreprocessCfg(**self.manifest()["preprocess"]), is_train=False)

    def _tower(self, name: str) -> OnnxTower:
        if name not in self._towers:
            path = self._verified.get(name) or self.folder.verified(name)
            if path is None or (name == "text" and name not in self._verified and not self._vocab_intact()):
                self._export(name)
                path = self.folder.tower_path(name)
            self._towers[name] = OnnxTower(path)
        return self._towers[name]

    def _query_tokenizer(self) -> Callable[[list[str]], np.ndarray]:
        if self._tokenizer is None:
            facts = dict(self.manifest()["tokenizer"])
            if facts.pop("kind") == "clip-bpe":
                vocab = self.folder.path / facts.pop("vocab")
                facts.pop("vocab_sha256", None)
                facts.pop("vocab_stamp", None)
                self._tokenizer = ClipTokenizer(vocab, **facts)
            else:  # a tokenizer the port does not reproduce: open_clip's own, which needs torch
                from open_clip import get_tokenizer

                tokenizer = get_tokenizer(self._name())
                self._tokenizer = lambda texts: tokenizer(texts).numpy()
        return self._tokenizer

    def _vocab_intact(self) -> bool:
        facts = self.manifest().get("tokenizer", {})
        if facts.get("kind") != "clip-bpe":
            return True
        vocab = self.folder.path / facts["vocab"]
        record = facts.get("vocab_stamp") or {"file": facts["vocab"], "sha256": facts.get("vocab_sha256")}
        if vocab.is_file() and self.folder.intact(vocab, record):
            return True
        warn_stale(f"the tokenizer vocab {vocab} is missing or changed")
        return False

    def _export(self, wanted: str) -> None:
        """Export and verify every fp32 tower that is not verified yet, then `wanted` if it is the int8 one."""
        loaded = self._torch_model()
        try:
            self._export_from(loaded, wanted)
        except OSError as exc:
            raise OnnxExportError(
                f"cannot write the ONNX export of {self.folder.identity.description} to {self.folder.path}: {exc}. "
                "Make the folder writable, or use `backend` torch",
                parameters=("backend",),
            ) from exc

    def _export_from(self, loaded: LoadedModel, wanted: str) -> None:
        from retrieval.model import onnx_export
        from retrieval.storage.opening import private_folder

        # private (0700 whatever the umask), the library folder too when this creates it: exports carry the weights
        for folder in (self.folder.root.parent, self.folder.root, self.folder.path):
            private_folder(folder)
        base = self._base_facts(loaded)
        for tower in ("image", "text"):
            if self.folder.verified(tower) is None or (tower == "text" and wanted == "text"):
                self.folder.forget(tower)
                facts = onnx_export.export_fp32(loaded.model, tower, self.folder, loaded.tokenizer)
                self.folder.record(tower, facts, base)
        if wanted == "image-int8":
            self.folder.forget(wanted)
            self.folder.record(wanted, onnx_export.quantize_image(loaded.model, self.folder), base)

    def _base_facts(self, loaded: LoadedModel) -> dict[str, Any]:
        from retrieval.model import onnx_export

        tokenizer = onnx_export.tokenizer_facts(self._name(), loaded.tokenizer, self.folder)
        if tokenizer["kind"] == "clip-bpe":
            tokenizer["vocab_stamp"] = {"file": tokenizer["vocab"], **file_stamp(self.folder.path / tokenizer["vocab"])}
        return {
            "description": self.folder.identity.description,
            "dim": self._dim(),
            "preprocess": json.loads(json.dumps(dict(loaded.model.visual.preprocess_cfg))),
            "tokenizer": tokenizer,
            "versions": {package: _version(package) for package in _VERSIONED},
        }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
