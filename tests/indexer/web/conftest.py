"""Libraries the web API tests serve: a tiny random-weight one (plumbing) built through the real pipeline, and
the app over it through FastAPI's test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.pipeline import index_folders
from indexer.web.app import create_app
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from tests import imagefactory


def build_library(folder: Path, encoder: Encoder, roots: list[Path]) -> Path:
    """A library at `folder` of `roots`, indexed by `encoder` through the real pipeline."""
    with Library(folder, create=True) as library:
        index_folders(library, encoder, [str(root) for root in roots], workers=1)
    return folder


@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Encoder) -> tuple[Path, Path]:
    """(photos, library): 15 tiny images (12 PNGs, two under trip/, one JPEG with EXIF) indexed by the tiny model."""
    base = tmp_path_factory.mktemp("web-tiny")
    photos = imagefactory.photo_folder(base / "photos", top=12)
    return photos, build_library(base / "library", tiny_encoder, [photos])


def tiny_client(library: Path, **options: object) -> TestClient:
    """A client of the app over `library` with the tiny model on torch (no ONNX export), started (lifespan)."""
    app = create_app(library, device="cpu", backend="torch", reload_interval=0.0, **options)  # type: ignore[arg-type]
    return TestClient(app)


@pytest.fixture(scope="module")
def client(tiny_library: tuple[Path, Path]) -> Iterator[TestClient]:
    with tiny_client(tiny_library[1]) as started:
        yield started


@pytest.fixture
def own_library(tmp_path: Path, tiny_encoder: Encoder) -> tuple[Path, Path]:
    """(photos, library) a test may change: four PNGs, an exact copy of one (copy.png), a JPEG with EXIF
    (Canon EOS 80D) and a truncated JPEG (a failed row)."""
    photos = tmp_path / "photos"
    for seed in range(4):
        imagefactory.pattern_png(photos / f"img{seed:02d}.png", seed=seed)
    (photos / "copy.png").write_bytes((photos / "img00.png").read_bytes())
    imagefactory.jpeg_with_exif(photos / "camera.jpg")
    imagefactory.truncated_jpeg(photos / "broken.jpg")
    return photos, build_library(tmp_path / "library", tiny_encoder, [photos])
