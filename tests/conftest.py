"""Shared fixtures: the network guard, a tiny open_clip config written here, libraries and photo folders."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests import imagefactory, netguard
from tests.postgres_server import library_url, postgres_server, postgres_url, store_backend, store_url  # noqa: F401

netguard.install()
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
if "CLIPSEARCH_ONNX_CACHE" not in os.environ:  # not ~/.cache; gone when the test run ends (it held 619 MB)
    _ONNX_CACHE = tempfile.mkdtemp(prefix="clipsearch-test-onnx-")
    os.environ["CLIPSEARCH_ONNX_CACHE"] = _ONNX_CACHE
    atexit.register(shutil.rmtree, _ONNX_CACHE, True)

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(autouse=True)
def _no_network_touched(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test that tried to reach the network (unless it uses `expect_network_attempt`)."""
    netguard.attempts.clear()
    yield
    if "expect_network_attempt" not in request.fixturenames and netguard.attempts:
        pytest.fail(f"test tried to use the network: {netguard.attempts}")


@pytest.fixture
def expect_network_attempt() -> list[str]:
    return netguard.attempts


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-test.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


@pytest.fixture(scope="session")
def tiny_spec(tiny_config: Path):  # type: ignore[no-untyped-def]
    from retrieval.model.specs import ModelSpec

    return ModelSpec(str(tiny_config), "none")


@pytest.fixture(scope="session")
def other_spec(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Another architecture: the tiny config with a 16-dimensional embedding (another identity and dim)."""
    from retrieval.model.specs import ModelSpec

    path = tmp_path_factory.mktemp("models") / "tiny-16.json"
    path.write_text(json.dumps(TINY_CONFIG | {"embed_dim": 16}))
    return ModelSpec(str(path), "none")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_spec):  # type: ignore[no-untyped-def]
    from retrieval.model.encoder import Encoder

    encoder = Encoder(tiny_spec, device="cpu", batch_size=8)
    encoder.load()
    return encoder


@pytest.fixture
def library(tmp_path: Path):  # type: ignore[no-untyped-def]
    from retrieval.library import Library

    with Library(tmp_path / "library", create=True) as lib:
        yield lib


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of 12 visually distinct PNGs (two in a subfolder) and one JPEG with EXIF."""
    return imagefactory.photo_folder(tmp_path / "photos")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: torch's second intra-op thread only spins against other
    processes (up to 100x slower forward passes), so a module that asks for this runs torch on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
