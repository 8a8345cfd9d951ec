"""Which model a library uses: resolving `--model`/`--pretrained` and naming the result unambiguously.

A model is an open_clip architecture (a built-in name or a config JSON file) plus weights (a pretrained
tag, a local checkpoint file, or `none` for seeded random weights). Its identity is what decides whether
two vectors are comparable: the architecture (name, or config content hash) and the weights (tag, or
checkpoint content hash), so a checkpoint that moved on disk is still the same model.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from retrieval.config import DEFAULT_PRETRAINED, RANDOM_WEIGHTS
from retrieval.errors import ModelUnavailableError

_HASH_CHUNK = 1 << 20
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for: `model` is an open_clip name or a config JSON path; `pretrained` is a
    tag, a checkpoint path, or "none"."""

    model: str
    pretrained: str

    @property
    def is_config_file(self) -> bool:
        return self.model.endswith(".json") or Path(self.model).is_file()

    @property
    def random_weights(self) -> bool:
        return self.pretrained.lower() == RANDOM_WEIGHTS

    @property
    def is_checkpoint_file(self) -> bool:
        return not self.random_weights and Path(self.pretrained).expanduser().is_file()

    @classmethod
    def for_training(cls, model: str, pretrained: str | None = None) -> ModelSpec:
        """The spec a training run starts from: with no `pretrained` named, a config file trains from
        scratch (random weights) and an open_clip name fine-tunes its default pretrained tag."""
        if pretrained is None:
            pretrained = RANDOM_WEIGHTS if cls(model, "").is_config_file else DEFAULT_PRETRAINED
        return cls(model, pretrained)

    def absolute(self) -> ModelSpec:
        """The same spec with file paths made absolute, so it can be stored and reused from any cwd."""
        model = str(Path(self.model).expanduser().resolve()) if self.is_config_file else self.model
        pretrained = self.pretrained
        if self.is_checkpoint_file:
            pretrained = str(Path(self.pretrained).expanduser().resolve())
        return ModelSpec(model, RANDOM_WEIGHTS if self.random_weights else pretrained)


@dataclass(frozen=True)
class ModelIdentity:
    """What makes vectors comparable. Two identities are the same model iff `key` is equal; `label`
    (a config file's name) is for people and not part of it, so renaming a file changes nothing."""

    architecture: str
    weights: str
    label: str = ""

    @property
    def key(self) -> str:
        return f"{self.architecture} | {self.weights}"

    @property
    def description(self) -> str:
        return f"{self.label}: {self.key}" if self.label else self.key

    @property
    def short_key(self) -> str:
        """A fixed-length digest of `key`, stored on every image row."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and check an open_clip model config JSON (the format of open_clip's model_configs/)."""
    config_path = Path(path).expanduser()
    if config_path.suffix.lower() in _CHECKPOINT_SUFFIXES:
        raise ModelUnavailableError(
            f"{config_path} is a checkpoint, not a model config: pass it as `pretrained`, and the model's "
            "name or config JSON as `model`",
            parameters=("model", "pretrained"),
        )
    if not config_path.is_file():
        raise ModelUnavailableError(f"model config file not found: {config_path}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"model config {config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelUnavailableError(f"model config {config_path} is not an open_clip config: not a JSON object")
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in config]
    if missing:
        raise ModelUnavailableError(
            f"model config {config_path} is not an open_clip config: missing {', '.join(missing)}"
        )
    return config


def _canonical(config: dict[str, Any]) -> str:
    """One text per config content, whatever its key order or spacing: what names and identities hash."""
    return json.dumps(config, sort_keys=True)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@cache
def _register_config(text: str, stem: str) -> str:
    """Register a config with open_clip under a name unique to its content; return that name."""
    import open_clip

    name = f"clipsearch-{stem}-{_digest(text)[:12]}"
    with tempfile.TemporaryDirectory(prefix="clipsearch-configs-") as folder:
        # open_clip reads the file now and keeps what it read when the file is gone (a later rescan skips a
        # missing path), so nothing is left behind: a folder per process had piled up in /tmp by the thousand.
        (Path(folder) / f"{name}.json").write_text(text)
        open_clip.add_model_config(Path(folder) / f"{name}.json")
    return name


def open_clip_name(spec: ModelSpec) -> str:
    """The name open_clip knows the architecture by, registering a config file when needed."""
    import open_clip

    if spec.is_config_file:
        config = load_config_file(spec.model)
        return _register_config(_canonical(config), Path(spec.model).stem)
    if spec.model not in open_clip.list_models():
        close = difflib.get_close_matches(spec.model, open_clip.list_models(), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See `open_clip.list_models()`."
        raise ModelUnavailableError(f"unknown open_clip model '{spec.model}'.{hint}")
    return spec.model


def embedding_dim(spec: ModelSpec) -> int:
    """The model's vector width; read from a config file without open_clip."""
    if spec.is_config_file:
        return int(load_config_file(spec.model)["embed_dim"])
    import open_clip

    config = open_clip.get_model_config(open_clip_name(spec))
    if config is None:
        raise ModelUnavailableError(f"no open_clip config for model '{spec.model}'")
    return int(config["embed_dim"])


def check_pretrained(spec: ModelSpec) -> None:
    """Fail early, with the fix, when the weights asked for cannot be had."""
    if spec.random_weights or spec.is_checkpoint_file:
        return
    if spec.is_config_file:
        raise ModelUnavailableError(
            f"'{spec.pretrained}' is neither a checkpoint file nor 'none'; a model given as a config file "
            "needs `pretrained` PATH (a checkpoint) or `pretrained` none.",
            parameters=("pretrained",),
        )
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(spec.model)
    if spec.pretrained not in tags:
        raise ModelUnavailableError(
            f"'{spec.pretrained}' is neither a checkpoint file nor a pretrained tag of {spec.model}. "
            f"Known tags: {', '.join(tags) or 'none'}; or pass `pretrained` PATH or `pretrained` none.",
            parameters=("pretrained",),
        )


def checkpoint_stamp(spec: ModelSpec) -> str | None:
    """`size mtime_ns` of the spec's checkpoint file; None when its weights are not a file."""
    if not spec.is_checkpoint_file:
        return None
    stat = Path(spec.pretrained).expanduser().stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def identity_of(spec: ModelSpec, *, checkpoint_weights: str | None = None) -> ModelIdentity:
    """The identity of `spec`. `checkpoint_weights` is the weights part already known for its checkpoint file
    (a library's record while the file keeps its stamp): hashing a large checkpoint on every query is avoided."""
    architecture, label = spec.model, ""
    if spec.is_config_file:
        config = load_config_file(spec.model)
        architecture = f"config sha256:{_digest(_canonical(config))[:16]}"
        label = Path(spec.model).name
    if spec.random_weights:
        weights = "random weights"
    elif spec.is_checkpoint_file:
        weights = checkpoint_weights or f"checkpoint sha256:{file_sha256(Path(spec.pretrained).expanduser())[:16]}"
    else:
        weights = f"pretrained {spec.pretrained}"
    return ModelIdentity(architecture, weights, label)
