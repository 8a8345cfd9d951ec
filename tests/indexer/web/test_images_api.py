"""Images by id: the original, the thumbnail, the stored record and "more like this"; only files the library
indexed, unchanged, inside its roots, and never by a path."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.indexer.web.conftest import tiny_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ids(client: TestClient) -> dict[str, int]:
    """Each indexed image's id by file name (through a search of every image)."""
    found = client.post("/api/search", json={"parts": [{"text": "x"}], "k": 20, "min_relevance": 0}).json()
    return {Path(hit["path"]).name: hit["id"] for hit in found["results"]}


def _error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == kind
    return str(response.json()["error"]["message"])


@pytest.fixture
def served(own_library: tuple[Path, Path]) -> tuple[Path, TestClient]:
    photos, library = own_library
    return photos, tiny_client(library)


def test_the_original_is_served_with_its_type_etag_and_cache_headers(served: tuple[Path, TestClient]) -> None:
    photos, client = served
    image_id = _ids(client)["img01.png"]
    response = client.get(f"/api/images/{image_id}")
    assert response.status_code == 200
    assert response.content == (photos / "img01.png").read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"].startswith("private, max-age=")
    again = client.get(f"/api/images/{image_id}", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    jpeg = client.get(f"/api/images/{_ids(client)['camera.jpg']}")
    assert jpeg.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize("image_id", ["999999", "0", "-3", str(2**70)])
def test_an_unknown_id_is_a_404(served: tuple[Path, TestClient], image_id: str) -> None:
    _, client = served
    for suffix in ("", "/thumbnail", "/details", "/similar"):
        _error(client.get(f"/api/images/{image_id}{suffix}"), 404, "UnknownImageError")


@pytest.mark.parametrize("image_id", ["abc", "1.5", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"])
def test_an_id_not_a_number_is_refused_and_reads_nothing(served: tuple[Path, TestClient], image_id: str) -> None:
    _, client = served
    response = client.get(f"/api/images/{image_id}")
    assert response.status_code in (400, 404), response.text
    assert "root:" not in response.text and response.headers["content-type"] == "application/json"


def test_a_failed_row_has_details_but_no_file(served: tuple[Path, TestClient]) -> None:
    photos, client = served
    status = client.get("/api/status").json()
    assert status["failed"] == 1
    failed_id = max(_ids(client).values()) + 1  # not searchable: find it through the ids around it
    details = None
    for image_id in range(1, failed_id + 2):
        reply = client.get(f"/api/images/{image_id}/details")
        if reply.status_code == 200 and reply.json()["error"]:
            details = reply.json()
            break
    assert details is not None and details["path"] == str(photos / "broken.jpg") and details["has_vector"] is False
    _error(client.get(f"/api/images/{details['id']}"), 404, "UnknownImageError")


def test_details_are_the_stored_record(served: tuple[Path, TestClient]) -> None:
    photos, client = served
    image_id = _ids(client)["camera.jpg"]
    details = client.get(f"/api/images/{image_id}/details").json()
    assert details["path"] == str(photos / "camera.jpg")
    assert (details["camera_make"], details["camera_model"]) == ("Canon", "EOS 80D")
    assert details["taken_at"] == "2021-07-04T18:30:00"
    assert details["size"] == (photos / "camera.jpg").stat().st_size and details["has_vector"] is True
    assert len(details["content_hash"]) >= 16 and details["error"] is None
    assert details["image"] == f"/api/images/{image_id}" and "/thumbnail?v=" in details["thumbnail"]


def test_a_changed_file_or_a_link_out_of_roots_is_not_served(served: tuple[Path, TestClient], tmp_path: Path) -> None:
    photos, client = served
    ids = _ids(client)
    changed = photos / "img02.png"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    _error(client.get(f"/api/images/{ids['img02.png']}"), 404, "FileNotServedError")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0" + b"." * 10_000)
    linked = photos / "img03.png"
    stat = linked.stat()
    linked.unlink()
    linked.symlink_to(secret)
    os.utime(secret, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    response = client.get(f"/api/images/{ids['img03.png']}")
    _error(response, 404, "FileNotServedError")
    assert "root:x" not in response.text


def test_the_thumbnail_is_a_cached_jpeg_immutable_at_its_version(served: tuple[Path, TestClient]) -> None:
    _, client = served
    hit = client.post("/api/search", json={"parts": [{"text": "x"}], "k": 1, "min_relevance": 0}).json()["results"][0]
    response = client.get(hit["thumbnail"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "JPEG" and max(image.size) <= 320
    unversioned = client.get(f"/api/images/{hit['id']}/thumbnail")
    assert unversioned.headers["cache-control"] == "private, no-cache"
    assert unversioned.headers["etag"] == response.headers["etag"]
    again = client.get(hit["thumbnail"], headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_similar_finds_the_exact_copy_first_and_leaves_the_image_out(served: tuple[Path, TestClient]) -> None:
    _, client = served
    ids = _ids(client)
    reply = client.get(f"/api/images/{ids['img00.png']}/similar", params={"k": 3})
    assert reply.status_code == 200, reply.text
    found = [hit["id"] for hit in reply.json()["results"]]
    assert found[0] == ids["copy.png"] and ids["img00.png"] not in found and len(found) == 3
    only_jpegs = client.get(f"/api/images/{ids['img00.png']}/similar", params={"ext": "jpg"}).json()["results"]
    assert [Path(hit["path"]).name for hit in only_jpegs] == ["camera.jpg"]
    _error(client.get(f"/api/images/{ids['img00.png']}/similar", params={"k": 0}), 400, "InvalidQueryError")


def test_prepare_thumbnails_makes_every_thumbnail_in_the_background(own_library: tuple[Path, Path]) -> None:
    _, library = own_library
    with tiny_client(library, prepare_thumbnails=True) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list((library / "thumbnails").glob("*/*.jpg"))) < 5:
            time.sleep(0.1)
        made = sorted(path.name for path in (library / "thumbnails").glob("*/*.jpg"))
        # six indexed images, two of them the same content (copy.png): five thumbnails, one per content
        assert len(made) == 5
        hit = client.post("/api/search", json={"parts": [{"text": "x"}], "k": 1, "min_relevance": 0}).json()
        assert client.get(hit["results"][0]["thumbnail"]).status_code == 200
    assert sorted(path.name for path in (library / "thumbnails").glob("*/*.jpg")) == made


def test_threads_fetching_images_thumbnails_and_details_at_once(served: tuple[Path, TestClient]) -> None:
    """A page loads its thumbnails in parallel: request threads share the library's store (this crashed the
    server before the store's engine got a thread-safe pool)."""
    photos, client = served
    ids = _ids(client)
    problems: list[str] = []

    def fetch(name: str) -> None:
        for _ in range(5):
            for suffix in ("", "/thumbnail", "/details"):
                reply = client.get(f"/api/images/{ids[name]}{suffix}")
                if reply.status_code != 200:
                    problems.append(f"{name}{suffix}: {reply.status_code} {reply.text[:200]}")
            if client.get(f"/api/images/{ids[name]}").content != (photos / name).read_bytes():
                problems.append(f"{name}: other bytes")

    threads = [threading.Thread(target=fetch, args=(name,)) for name in sorted(ids) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
