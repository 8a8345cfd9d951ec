"""The model files clipsearch ships as package data: the reference model and the tiny architecture.

They live in retrieval/model/data/ (declared in pyproject's package-data), so a wheel install, an
editable install and a clone find them the same way, through importlib.resources.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from retrieval.config import REFERENCE_CHECKPOINT_FILE, REFERENCE_CONFIG_FILE
from retrieval.errors import ModelUnavailableError
from retrieval.model.specs import ModelSpec

PACKAGE = "retrieval.model"
FOLDER = "data"


def model_file(name: str) -> Path:
    """The real path of a model file shipped with the package (`reference.json`, `reference.pt`, `tiny.json`).

    The path must outlive this call: a library records its model's config path and loads it again in
    later runs. So this returns the resource itself, never `importlib.resources.as_file`'s temporary copy
    (which a zipped install would need and which is deleted when its context ends). Every install pip
    makes, editable or not, and a clone put the package on the file system, where the resource is a
    plain `Path`; anything else is refused with the fix.
    """
    resource = files(PACKAGE) / FOLDER / name
    if not isinstance(resource, Path) or not resource.is_file():
        raise ModelUnavailableError(
            f"the model file {name} is not in clipsearch's package data ({resource}): the installed package is "
            "incomplete; reinstall it from a clone with pip install . (or pip install -e . to develop)"
        )
    return resource


def reference_files() -> tuple[Path, Path]:
    """The reference model's config and checkpoint (see README, "The reference model")."""
    return model_file(REFERENCE_CONFIG_FILE), model_file(REFERENCE_CHECKPOINT_FILE)


def reference_spec() -> ModelSpec:
    """The project's own small model, which needs no download: what the demo and the semantic tests use."""
    config, checkpoint = reference_files()
    return ModelSpec(str(config), str(checkpoint))
