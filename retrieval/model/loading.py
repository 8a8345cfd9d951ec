"""Build an open_clip model with its weights, transforms and tokenizer: shared by encoding and training."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from retrieval.config import RANDOM_WEIGHTS_SEED
from retrieval.errors import ModelUnavailableError
from retrieval.model.specs import ModelSpec, check_pretrained, open_clip_name


class RandomWeightsWarning(UserWarning):
    """The model has random weights: its results have no meaning beyond self-similarity."""


@dataclass
class LoadedModel:
    """An open_clip model (in whatever mode open_clip left it) with its own preprocessing and tokenizer."""

    model: Any
    train_transform: Any
    eval_transform: Any
    tokenizer: Any


def load_model(
    spec: ModelSpec,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
    warn_random: bool = True,
) -> LoadedModel:
    """The model `spec` names, on `device`. Random weights are seeded, so every load is the same model;
    pretrained tags are looked up in the local caches first and fail with the fix when offline."""
    import torch

    from retrieval.model.weights import locate_pretrained

    name = open_clip_name(spec)
    check_pretrained(spec)
    if spec.random_weights:
        if warn_random:
            warnings.warn(
                f"{spec.model} has RANDOM weights (`pretrained` none): results are meaningless "
                "beyond finding the same image again; use it for tests only.",
                RandomWeightsWarning,
                stacklevel=4,
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            loaded = _create(spec, name, None, device, precision, cache_dir)
    elif spec.is_checkpoint_file:
        loaded = _create(spec, name, spec.pretrained, device, precision, cache_dir)
    else:
        source = locate_pretrained(name, spec.pretrained, cache_dir)
        loaded = _create(
            spec, name, source.cached_file or spec.pretrained, device, precision, cache_dir, **source.preprocess
        )
    return loaded


def _create(
    spec: ModelSpec,
    name: str,
    pretrained: str | None,
    device: str,
    precision: str,
    cache_dir: str | None,
    **preprocess: Any,
) -> LoadedModel:
    import open_clip

    quick_gelu = bool(preprocess.pop("quick_gelu", False))
    overrides = {f"image_{key}": value for key, value in preprocess.items()}
    try:
        model, train_transform, eval_transform = open_clip.create_model_and_transforms(
            name,
            pretrained=pretrained,
            device=device,
            precision=precision,
            cache_dir=cache_dir,
            force_quick_gelu=quick_gelu,
            **overrides,
        )
    except Exception as exc:  # open_clip raises RuntimeError/FileNotFoundError/HTTP errors alike
        raise ModelUnavailableError(_weights_help(spec, exc), parameters=("model", "pretrained")) from exc
    try:
        tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    except Exception as exc:
        raise ModelUnavailableError(f"cannot load the tokenizer of {name}: {exc}") from exc
    return LoadedModel(model, train_transform, eval_transform, tokenizer)


def _weights_help(spec: ModelSpec, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if spec.random_weights or spec.is_checkpoint_file:
        return f"cannot build {spec.model} with weights '{spec.pretrained}': {reason}"
    from huggingface_hub import constants

    return (
        f"cannot get pretrained weights '{spec.pretrained}' for {spec.model}: {reason}\n"
        f"Tried open_clip's download (Hugging Face Hub, cache {constants.HF_HUB_CACHE}). If this machine is "
        "offline: download the checkpoint on a connected machine and pass its path with "
        "`pretrained` /path/to/open_clip_model.safetensors (keep `model`), or copy the Hugging Face cache "
        "folder to the path above. For a test run without weights, use `pretrained` none."
    )
