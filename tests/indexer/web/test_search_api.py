"""`POST /api/search`, `GET /api/search` and `GET /api/status` against a real tiny library (random weights:
structure only, so every query here turns the relevance cutoff off)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retrieval.library import Library
from tests import imagefactory
from tests.indexer.web.conftest import build_library, tiny_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _search(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == kind
    return str(error["message"])


def test_status_names_the_library_and_its_counts_without_loading_the_model(tiny_library: tuple[Path, Path]) -> None:
    _, library = tiny_library
    client = tiny_client(library)  # no lifespan: nothing loaded
    status = client.get("/api/status").json()
    with Library(library, reading=True) as opened:
        assert status["library_id"] == opened.library_id() is not None
        assert status["store_generation"] == opened.reads.generation()
        assert status["model"] == opened.recorded_description()
        assert status["dim"] == 32
    assert status["ready"] is False and status["generation"] is None
    assert (status["images"], status["failed"]) == (15, 0)
    assert status["library"] == str(library.resolve())
    assert status["server"]["pid"] == os.getpid()
    assert client.app.state.service._encoder is None  # type: ignore[attr-defined]


def test_status_is_ready_once_started(client: TestClient) -> None:
    status = client.get("/api/status").json()
    assert status["ready"] is True
    assert status["generation"] == status["store_generation"]


def test_search_returns_a_page_of_results_with_image_and_thumbnail_urls(client: TestClient) -> None:
    reply = _search(client, parts=[{"text": "a red circle"}], k=5, min_relevance=0)
    assert (reply["offset"], reply["k"], reply["more"]) == (0, 5, True)
    assert [hit["rank"] for hit in reply["results"]] == [1, 2, 3, 4, 5]
    scores = [hit["score"] for hit in reply["results"]]
    assert scores == sorted(scores, reverse=True)
    hit = reply["results"][0]
    assert hit["image"] == f"/api/images/{hit['id']}"
    assert hit["thumbnail"].startswith(f"/api/images/{hit['id']}/thumbnail?v=")
    assert 0 <= hit["relevance"] <= 1
    assert reply["took_ms"] > 0 and reply["generation"] >= 1


def test_the_pages_of_a_search_are_disjoint_and_in_score_order(client: TestClient) -> None:
    whole = _search(client, parts=[{"text": "shapes"}], k=15, min_relevance=0)["results"]
    query = {"parts": [{"text": "shapes"}], "k": 4, "min_relevance": 0}
    pages = [_search(client, **query, offset=offset) for offset in (0, 4, 8, 12)]
    assert [page["more"] for page in pages] == [True, True, True, False]
    paged = [hit for page in pages for hit in page["results"]]
    assert [hit["id"] for hit in paged] == [hit["id"] for hit in whole]
    assert [hit["rank"] for hit in paged] == list(range(1, 16))


def test_an_image_part_finds_itself_first_only_with_include_self(client: TestClient) -> None:
    some = _search(client, parts=[{"text": "x"}], k=1, min_relevance=0)["results"][0]["id"]
    alone = _search(client, parts=[{"image_id": some}], k=3)["results"]
    assert some not in [hit["id"] for hit in alone] and alone[0]["relevance"] is None
    kept = _search(client, parts=[{"image_id": some}], k=3, include_self=True)["results"]
    assert kept[0]["id"] == some and kept[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_a_negative_part_pushes_its_image_to_the_bottom(client: TestClient) -> None:
    some = _search(client, parts=[{"text": "x"}], k=1, min_relevance=0)["results"][0]["id"]
    parts = [{"text": "a photo"}, {"image_id": some, "weight": -3.0}]
    ranked = _search(client, parts=parts, k=15, include_self=True)["results"]
    assert ranked[-1]["id"] == some


def test_filters_and_date_sort(client: TestClient, tiny_library: tuple[Path, Path]) -> None:
    photos, _ = tiny_library
    trip = str(photos / "trip")
    inside = _search(client, parts=[{"text": "x"}], k=10, min_relevance=0, filter={"within": [trip]})["results"]
    assert sorted(Path(hit["path"]).name for hit in inside) == ["camera.jpg", "img10.png", "img11.png"]
    jpegs = _search(client, parts=[{"text": "x"}], min_relevance=0, filter={"extensions": ["jpg"]})["results"]
    assert [Path(hit["path"]).name for hit in jpegs] == ["camera.jpg"]
    best = _search(client, parts=[{"text": "x"}], k=6, min_relevance=0)["results"]
    newest = _search(client, parts=[{"text": "x"}], k=6, min_relevance=0, sort="-date")["results"]
    assert sorted(hit["id"] for hit in newest) == sorted(hit["id"] for hit in best)  # the same 6, re-ordered
    dates = [_date(hit) for hit in newest]
    assert dates == sorted(dates, reverse=True) and [hit["rank"] for hit in newest] == list(range(1, 7))
    oldest = _search(client, parts=[{"text": "x"}], k=6, min_relevance=0, sort="date")["results"]
    assert [hit["id"] for hit in oldest] == [hit["id"] for hit in newest][::-1] or _ties(dates)


def _date(hit: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(hit["taken_at"]) if hit["taken_at"] else datetime.fromtimestamp(hit["mtime_ns"] / 1e9)


def _ties(dates: list[datetime]) -> bool:
    return len(set(dates)) < len(dates)


def test_get_search_takes_words_as_the_cli_does(client: TestClient) -> None:
    posted = _search(client, parts=[{"text": "red circle"}, {"text": "blue", "weight": -1.0}], k=4, min_relevance=0)
    got = client.get("/api/search", params={"q": ["red", "circle"], "not": "blue", "k": 4, "min_relevance": 0})
    assert got.status_code == 200, got.text
    assert [hit["id"] for hit in got.json()["results"]] == [hit["id"] for hit in posted["results"]]
    weighted = client.get("/api/search", params={"q": ["red circle", "-1:blue"], "k": 4, "min_relevance": 0}).json()
    assert [hit["id"] for hit in weighted["results"]] != []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"parts": []}, "parts"),
        ({"parts": [{"text": "a", "image_id": 1}]}, "parts[0]"),
        ({"parts": [{"text": "a", "weight": 0}]}, "parts[0].weight"),
        ({"parts": [{"text": "a"}], "k": 0}, "k"),
        ({"parts": [{"text": "a"}], "k": "ten"}, "k"),
        ({"parts": [{"text": "a"}], "offset": -1}, "offset"),
        ({"parts": [{"text": "a"}], "k": 900, "offset": 200}, "offset"),
        ({"parts": [{"text": "a"}], "filter": {"after": "June"}}, "after"),
        ({"parts": [{"text": "a"}], "filter": {"within": ["relative/folder"]}}, "within"),
        ({"parts": [{"text": "a"}], "sort": "size"}, "sort"),
        ({"parts": [{"text": "a"}], "min_relevance": 2}, "min_relevance"),
        ({"parts": [{"image_id": 1}], "min_relevance": 0.5}, "min_relevance"),
        ({"parts": [{"image_id": 999999}]}, "image_id"),
        ({"parts": [{"text": "a"}], "colour": "red"}, "colour"),
        ({"parts": [{"text": "a"}, {"text": "a", "weight": -1}]}, "weight"),
        ({"parts": [{"image_id": 10**30}]}, "parts[0].image_id"),  # these four were 500s (overflow, surrogates)
        ({"parts": [{"text": "a"}], "filter": {"exclude_ids": [10**30]}}, "exclude_ids"),
        ({"parts": [{"text": "a"}], "filter": {"min_width": 10**30}}, "min_width"),
        ({"parts": [{"text": "caf\udce9"}]}, "parts[0].text"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    kind = "InvalidDateError" if field == "after" else "InvalidQueryError"
    sent = json.dumps(body)  # escapes as `\\udcXX` what the client's own encoder would refuse to send
    message = _error(client.post("/api/search", content=sent, headers={"content-type": "application/json"}), 400, kind)
    assert field in message


def test_weights_near_the_float_limits_search_as_their_ratio(client: TestClient) -> None:
    huge = _search(client, parts=[{"text": "a", "weight": 1e308}, {"text": "b", "weight": 1e308}], min_relevance=0)
    plain = _search(client, parts=[{"text": "a"}, {"text": "b"}], min_relevance=0)
    assert [hit["id"] for hit in huge["results"]] == [hit["id"] for hit in plain["results"]]
    assert [hit["score"] for hit in huge["results"]] == pytest.approx([hit["score"] for hit in plain["results"]])


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    response = client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
    _error(response, 400, "InvalidQueryError")


def test_a_library_that_is_missing_or_damaged_is_a_503(tmp_path: Path) -> None:
    client = tiny_client(tmp_path / "nothing-here")
    _error(client.get("/api/status"), 503, "LibraryNotFoundError")
    _error(client.post("/api/search", json={"parts": [{"text": "a"}]}), 503, "LibraryNotFoundError")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "library.db").write_bytes(b"this is not a database at all" * 100)
    client = tiny_client(damaged)
    _error(client.get("/api/status"), 503, "DamagedLibraryError")
    _error(client.post("/api/search", json={"parts": [{"text": "a"}]}), 503, "DamagedLibraryError")


def test_unknown_routes_are_json_404s_and_there_is_no_docs_page(client: TestClient) -> None:
    _error(client.get("/api/nothing"), 404, "HTTPException")
    _error(client.get("/docs"), 404, "HTTPException")


def test_a_library_removed_while_served_is_a_503_until_it_is_back(
    own_library: tuple[Path, Path], tmp_path: Path
) -> None:
    _, library = own_library
    with tiny_client(library) as client:
        assert client.post("/api/search", json={"parts": [{"text": "a"}], "min_relevance": 0}).status_code == 200
        moved = tmp_path / "moved-away"
        library.rename(moved)
        _error(client.get("/api/status"), 503, "LibraryNotFoundError")
        _error(client.post("/api/search", json={"parts": [{"text": "a"}]}), 503, "LibraryNotFoundError")
        moved.rename(library)
        reply = client.post("/api/search", json={"parts": [{"text": "a"}], "k": 3, "min_relevance": 0})
        assert reply.status_code == 200 and len(reply.json()["results"]) == 3


def test_another_model_than_the_library_s_is_a_503_naming_both(
    tiny_library: tuple[Path, Path], other_spec: Any
) -> None:
    _, library = tiny_library
    client = tiny_client(library, model=other_spec.model, pretrained="none")
    assert client.get("/api/status").status_code == 200  # the status never loads a model
    message = _error(client.post("/api/search", json={"parts": [{"text": "a"}]}), 503, "ModelMismatchError")
    assert "`model`" in message


def test_a_file_name_that_is_not_utf8_comes_back_as_its_bytes(tmp_path: Path, tiny_encoder: Any) -> None:
    photos = tmp_path / "photos"
    name = os.fsdecode(b"caf\xe9.png")
    imagefactory.pattern_png(photos / name, seed=1)
    client = tiny_client(build_library(tmp_path / "library", tiny_encoder, [photos]))
    reply = client.post("/api/search", json={"parts": [{"text": "a"}], "min_relevance": 0})
    assert reply.status_code == 200, reply.text
    hit = reply.json()["results"][0]
    assert os.fsencode(hit["path"]) == os.fsencode(str(photos)) + b"/caf\xe9.png"
    assert b"\\udce9" in reply.content  # escaped as `clipsearch search --json` does
    assert client.get(hit["image"]).content == (photos / name).read_bytes()
