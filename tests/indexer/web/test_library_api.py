"""`GET /api/info`, `GET /api/duplicates`, the OpenAPI description and the page's routes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.web import routes_images, routes_library, routes_search, routes_uploads
from indexer.web.app import create_app
from retrieval.library import Library
from tests.indexer.web.conftest import tiny_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_info_is_the_library_facts_with_cameras_and_roots(client: TestClient, tiny_library: tuple[Path, Path]) -> None:
    photos, library = tiny_library
    info = client.get("/api/info")
    assert info.status_code == 200, info.text
    with Library(library, reading=True) as opened:
        facts = opened.facts().to_json()
    body = info.json()
    assert {key: body[key] for key in ("library", "model", "indexed", "failed", "generation", "dim")} == {
        key: facts[key] for key in ("library", "model", "indexed", "failed", "generation", "dim")
    }
    assert body["cameras"] == ["Canon EOS 80D"]
    assert body["roots"] == [str(photos)]


def test_duplicates_groups_the_exact_copy_and_is_kept_per_generation_and_threshold(
    own_library: tuple[Path, Path],
) -> None:
    photos, library = own_library
    client = tiny_client(library)
    reply = client.get("/api/duplicates")
    assert reply.status_code == 200, reply.text
    groups, summary = reply.json()["groups"], reply.json()["summary"]
    assert len(groups) == 1 and summary["groups"] == 1 and summary["images"] == 2 and summary["shown"] == 1
    assert sorted(Path(member["path"]).name for member in groups[0]["members"]) == ["copy.png", "img00.png"]
    assert summary["reclaimable_bytes"] == (photos / "copy.png").stat().st_size
    service = client.app.state.service  # type: ignore[attr-defined]
    kept = dict(service._duplicates)
    assert client.get("/api/duplicates").json() == reply.json()
    assert service._duplicates == kept and len(kept) == 1  # the same report, not computed again
    assert client.get("/api/duplicates", params={"threshold": 0.999, "limit": 0}).json()["groups"] == []
    assert len(service._duplicates) == 2
    outside = client.get("/api/duplicates", params={"within": str(photos / "nothing-here")})
    assert outside.status_code == 400 and "`within`" in outside.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"threshold": 0.1}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"limit": -1}, "limit"),
        ({"within": "relative"}, "within"),
    ],
)
def test_bad_duplicate_parameters_are_400s(client: TestClient, params: dict[str, object], field: str) -> None:
    reply = client.get("/api/duplicates", params=params)
    assert reply.status_code == 400, reply.text
    assert f"`{field}`" in reply.json()["error"]["message"]


def test_openapi_describes_every_route_with_a_summary(tmp_path: Path) -> None:
    app = create_app(tmp_path / "no-library", warm=False)
    described = TestClient(app).get("/openapi.json").json()
    routes = {
        ("get", "/api/status"),
        ("get", "/api/info"),
        ("get", "/api/duplicates"),
        ("post", "/api/search"),
        ("get", "/api/search"),
        ("post", "/api/uploads"),
        ("get", "/api/images/{image_id}"),
        ("get", "/api/images/{image_id}/thumbnail"),
        ("get", "/api/images/{image_id}/details"),
        ("get", "/api/images/{image_id}/similar"),
    }
    listed = {(method, path) for path, methods in described["paths"].items() for method in methods}
    assert listed == routes
    for path, methods in described["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), (method, path)
    schemas = described["components"]["schemas"]
    assert {"SearchIn", "SearchOut", "StatusOut", "ErrorOut", "PartIn", "FilterIn"} <= set(schemas)
    declared = {
        (method.lower(), route.path)
        for module in (routes_images, routes_library, routes_search, routes_uploads)
        for route in module.router.routes
        for method in getattr(route, "methods", ())
    }
    assert declared == routes  # every route the app declares is described


def test_the_page_is_served_and_there_is_no_docs_page(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/static/index.html").content == page.content
    for gone in ("/docs", "/redoc", "/static/../app.py", "/static/nothing.js"):
        reply = client.get(gone)
        assert reply.status_code == 404, gone
