"""A running server while index runs add and remove images: it reloads the new generation's index, never
returns a row that is gone, never comes back short, and answers threads searching at once without errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexer.pipeline import index_paths
from indexer.web.reloads import ReloadPolicy
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from tests import imagefactory
from tests.indexer.web.conftest import tiny_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _names(reply: dict[str, Any]) -> list[str]:
    return [Path(hit["path"]).name for hit in reply["results"]]


def _search(client: TestClient, k: int) -> dict[str, Any]:
    response = client.post("/api/search", json={"parts": [{"text": "x"}], "k": k, "min_relevance": 0})
    assert response.status_code == 200, response.text
    return response.json()


def _index(library: Path, encoder: Encoder, photos: Path, paths: list[Path]) -> None:
    with Library(library) as opened:
        index_paths(opened, encoder, str(photos), [str(path) for path in paths])


def test_an_index_run_is_seen_by_the_next_search(own_library: tuple[Path, Path], tiny_encoder: Encoder) -> None:
    photos, library = own_library
    with tiny_client(library) as client:
        before = _search(client, 20)
        assert sorted(_names(before)) == ["camera.jpg", "copy.png", "img00.png", "img01.png", "img02.png", "img03.png"]
        (photos / "img01.png").unlink()
        added = [imagefactory.pattern_png(photos / f"new{seed}.png", seed=seed) for seed in (40, 41)]
        _index(library, tiny_encoder, photos, [photos / "img01.png", *added])
        after = _search(client, 20)
        assert sorted(_names(after)) == [
            "camera.jpg",
            "copy.png",
            "img00.png",
            "img02.png",
            "img03.png",
            "new40.png",
            "new41.png",
        ]
        assert after["generation"] > before["generation"]
        status = client.get("/api/status").json()
        assert status["generation"] == status["store_generation"] == after["generation"]


def test_rows_deleted_before_a_reload_are_left_out_and_the_page_is_not_short(
    own_library: tuple[Path, Path], tiny_encoder: Encoder
) -> None:
    photos, library = own_library
    with tiny_client(library) as client:
        client.app.state.service.reloads.interval = 3600.0  # type: ignore[attr-defined]  # no reload by time
        first = _search(client, 6)
        assert len(first["results"]) == 6
        gone = [photos / "img01.png", photos / "img02.png"]
        for path in gone:
            path.unlink()
        _index(library, tiny_encoder, photos, gone)
        less = _search(client, 4)  # 4 of the old index's 6 remain: answered without a reload
        assert len(less["results"]) == 4 and not {"img01.png", "img02.png"} & set(_names(less))
        assert less["generation"] == first["generation"]
        added = [imagefactory.pattern_png(photos / f"new{seed}.png", seed=seed) for seed in (50, 51)]
        _index(library, tiny_encoder, photos, added)
        full = _search(client, 6)  # the old index has only 4 left: short, so it reloads and searches again
        assert len(full["results"]) == 6 and {"new50.png", "new51.png"} <= set(_names(full))
        assert full["generation"] > first["generation"]


@pytest.mark.slow
def test_threads_searching_during_index_runs_get_full_pages_of_live_rows(
    own_library: tuple[Path, Path], tiny_encoder: Encoder
) -> None:
    photos, library = own_library
    base = {"camera.jpg", "copy.png", "img00.png", "img01.png", "img02.png", "img03.png"}
    churn = [photos / f"churn{seed}.png" for seed in range(60, 64)]
    problems: list[str] = []
    seen: set[str] = set()
    generations: set[int] = set()
    done = threading.Event()
    with tiny_client(library) as client:

        def searcher() -> None:
            while not done.is_set():
                response = client.post("/api/search", json={"parts": [{"text": "x"}], "k": 6, "min_relevance": 0})
                if response.status_code != 200:
                    problems.append(response.text)
                    continue
                names = _names(response.json())
                seen.update(names)
                generations.add(response.json()["generation"])
                if len(names) != 6 or len(set(names)) != 6:
                    problems.append(f"a page of {names}")

        threads = [threading.Thread(target=searcher) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            for round_number in range(4):
                for path in churn:  # every other round adds the churn images, the next removes them
                    if round_number % 2 == 0:
                        imagefactory.pattern_png(path, seed=int(path.stem[5:]) + round_number)
                    else:
                        path.unlink()
                _index(library, tiny_encoder, photos, churn)
        finally:
            done.set()
            for thread in threads:
                thread.join()
        assert problems == []
        assert len(generations) >= 3  # the searches ran while the index runs committed
        assert seen <= base | {path.name for path in churn} and len(seen) >= 6
        final = _search(client, 20)
        assert set(_names(final)) == base  # the last round removed the churn images: none comes back


def test_the_status_catches_up_with_an_index_run_without_any_search(
    own_library: tuple[Path, Path], tiny_encoder: Encoder
) -> None:
    photos, library = own_library
    with tiny_client(library) as client:
        before = client.get("/api/status").json()
        _index(library, tiny_encoder, photos, [imagefactory.pattern_png(photos / "late.png", seed=77)])
        deadline = time.monotonic() + 20
        status = client.get("/api/status").json()
        while status["generation"] != status["store_generation"] and time.monotonic() < deadline:
            time.sleep(0.1)
            status = client.get("/api/status").json()
        assert status["generation"] == status["store_generation"] > before["generation"]
        assert status["images"] == before["images"] + 1


def test_a_generation_without_its_index_file_waits_to_settle_unless_forced(tmp_path: Path) -> None:
    policy = ReloadPolicy(lambda generation: tmp_path / f"index-{generation}.faiss", interval=0.0, settle=0.3)
    assert not policy.due(5, 5)
    assert not policy.due(5, 6)  # no file for 6 yet: an index run between two batches
    assert policy.due(5, 6, force=True)
    (tmp_path / "index-7.faiss").write_bytes(b"")
    assert policy.due(5, 7)  # the run wrote its file: at once
    assert not policy.due(5, 8)
    time.sleep(0.35)
    assert policy.due(5, 8)  # the store stayed at 8: rebuild it
    slow = ReloadPolicy(lambda generation: tmp_path / f"index-{generation}.faiss", interval=60.0, settle=0.0)
    slow.loaded()
    assert not slow.due(5, 7) and slow.due(5, 7, force=True)
