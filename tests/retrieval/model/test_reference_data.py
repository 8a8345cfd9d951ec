"""The model files ship as package data: the lookup finds them, and a wheel built from this tree carries them.

The wheel is built from a copy of the tree (so the repository gets no build/ or egg-info), with the
running environment's setuptools and no index, so the test never touches the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import retrieval
from retrieval.errors import ModelUnavailableError
from retrieval.model.reference import model_file, reference_files, reference_spec
from retrieval.model.specs import load_config_file

ROOT = Path(__file__).resolve().parents[3]
SITE = Path(retrieval.__file__).resolve().parent.parent  # where the `retrieval` package sits
SHIPPED = ("reference.json", "reference.pt", "tiny.json")
REFERENCE_CHECKPOINT_SHA256 = "e8df7727e07303eaf8e0e237f48f65b7c9d77d07957d489b9c64cc303372fc82"
"""sha256 of reference.pt as trained and committed (v5; v4 was 953a8718c445874c..., v3 27c56780fb294d6e...,
v1 dcebde22c8b22723...)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lookup_returns_the_committed_reference_model() -> None:
    config, checkpoint = reference_files()
    assert config.is_absolute() and config.is_file() and config.name == "reference.json"
    assert checkpoint.is_absolute() and checkpoint.is_file() and checkpoint.name == "reference.pt"
    assert _sha256(checkpoint.read_bytes()) == REFERENCE_CHECKPOINT_SHA256
    assert load_config_file(str(config))["embed_dim"] == 64
    spec = reference_spec()
    assert (spec.model, spec.pretrained) == (str(config), str(checkpoint))
    assert spec.is_config_file and spec.is_checkpoint_file


def test_every_shipped_file_is_found_next_to_the_package_code() -> None:
    for name in SHIPPED:
        path = model_file(name)
        assert path.is_file()
        assert path.relative_to(SITE).as_posix() == f"retrieval/model/data/{name}"


def test_a_missing_model_file_is_a_model_unavailable_error_with_the_fix() -> None:
    with pytest.raises(ModelUnavailableError, match=r"not in clipsearch's package data .*pip install \."):
        model_file("no-such-model.json")


def _copy_of_tree(target: Path) -> Path:
    """The files a build reads (pyproject, README, licence: the top-level files) and the packages, not the
    rest of a working clone (virtual environments, generated datasets, runs)."""
    target.mkdir()
    for entry in ROOT.iterdir():
        if entry.is_file():
            shutil.copy2(entry, target)
    for package in ("retrieval", "indexer"):  # pyproject's packages.find
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.mark.slow
def test_the_wheel_carries_the_model_files_where_the_lookup_finds_them(tmp_path: Path) -> None:
    source = _copy_of_tree(tmp_path / "source")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(tmp_path / "wheels"), str(source)], check=True, env=env, timeout=240)
    (wheel,) = (tmp_path / "wheels").glob("clipsearch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in SHIPPED:
            inside = model_file(name).relative_to(SITE).as_posix()
            assert inside in names, f"{inside} is not in {wheel.name}: declare it in pyproject's package-data"
            assert archive.read(inside) == model_file(name).read_bytes()
        assert _sha256(archive.read("retrieval/model/data/reference.pt")) == REFERENCE_CHECKPOINT_SHA256
