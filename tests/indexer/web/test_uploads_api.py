"""`POST /api/uploads`: an image to search by, refused past the size limit while it streams, decoded by the
safe decoder, kept as a vector only."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer.web.uploads import Upload, Uploads, read_upload
from retrieval.errors import UnknownUploadError, UploadTooLargeError
from tests import imagefactory
from tests.indexer.web.conftest import tiny_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _files(*folders: Path) -> dict[str, tuple[int, int]]:
    return {
        os.path.join(root, name): (
            os.stat(os.path.join(root, name)).st_size,
            os.stat(os.path.join(root, name)).st_mtime_ns,
        )
        for folder in folders
        for root, _, names in os.walk(folder)
        for name in names
    }


def test_an_uploaded_image_finds_its_indexed_twin_and_leaves_no_file(
    client: TestClient, tiny_library: tuple[Path, Path]
) -> None:
    photos, library = tiny_library
    before = _files(photos, library)
    data = (photos / "img03.png").read_bytes()
    reply = client.post("/api/uploads", files={"file": ("mine.png", data, "image/png")})
    assert reply.status_code == 200, reply.text
    upload = reply.json()
    assert (upload["width"], upload["height"]) == (64, 64) and len(upload["upload"]) >= 16
    found = client.post("/api/search", json={"parts": [{"upload": upload["upload"]}], "k": 2}).json()["results"]
    assert Path(found[0]["path"]).name == "img03.png" and found[0]["score"] > 0.99
    assert found[0]["relevance"] is None
    fused = [{"text": "x"}, {"upload": upload["upload"], "weight": -1.0}]
    assert client.post("/api/search", json={"parts": fused, "k": 2}).status_code == 200
    assert _files(photos, library) == before  # nothing written into the photos or the library


def test_garbage_is_a_400_and_an_unknown_upload_a_404(client: TestClient) -> None:
    reply = client.post("/api/uploads", files={"file": ("x.jpg", b"GIF89a not really an image" * 10, "image/jpeg")})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "UnreadableImageError"
    missing = client.post("/api/search", json={"parts": [{"upload": "no-such-upload"}]})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "UnknownUploadError"
    assert "`upload`" in missing.json()["error"]["message"]


def test_a_request_without_the_file_field_is_a_400(client: TestClient) -> None:
    reply = client.post("/api/uploads", files={"other": ("x.png", b"123", "image/png")})
    assert reply.status_code == 400 and "`file`" in reply.json()["error"]["message"]
    plain = client.post("/api/uploads", content=b"123", headers={"content-type": "image/png"})
    assert plain.status_code == 400 and plain.json()["error"]["type"] == "InvalidQueryError"


def test_an_upload_past_the_limit_is_a_413(tiny_library: tuple[Path, Path], tmp_path: Path) -> None:
    _, library = tiny_library
    big = imagefactory.large_jpeg(tmp_path / "big.jpg", size=(600, 400)).read_bytes()
    client = tiny_client(library, upload_limit=len(big) - 1)
    reply = client.post("/api/uploads", files={"file": ("big.jpg", big, "image/jpeg")})
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["type"] == "UploadTooLargeError"
    assert "upload_limit" in reply.json()["error"]["message"]
    fits = tiny_client(library, upload_limit=len(big))
    assert fits.post("/api/uploads", files={"file": ("big.jpg", big, "image/jpeg")}).status_code == 200


def test_the_limit_stops_reading_the_body_as_soon_as_it_is_passed() -> None:
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        for _ in range(10_000):  # 640 MB if it were all read
            sent.append(1)
            yield b"\0" * 65536

    with pytest.raises(UploadTooLargeError):
        asyncio.run(read_upload("multipart/form-data; boundary=b", body(), 1_000_000))
    assert len(sent) <= 20


def test_uploads_keep_the_most_recent_ones() -> None:
    uploads = Uploads(capacity=2)
    first, second = (uploads.add(Upload(np.ones(4, dtype=np.float32), 1, 1)) for _ in range(2))
    uploads.vector(first)  # used: now the most recent
    third = uploads.add(Upload(np.zeros(4, dtype=np.float32), 1, 1))
    assert len(uploads) == 2
    assert uploads.vector(first) is not None and uploads.vector(third) is not None
    with pytest.raises(UnknownUploadError):
        uploads.vector(second)
