"""`create_app`: the FastAPI app of `clipsearch serve` over one library: the page (`static/`, served at `/` and
`/static`), the JSON API (`routes_*.py`), and one error shape for everything (`errors.py`). The model and the
index load once, at start-up (or on the first query when the app runs without its lifespan), then stay warm
(`service.py`)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from indexer.web import errors, routes_images, routes_library, routes_search, routes_uploads
from indexer.web.service import Service, server_version
from indexer.web.uploads import Uploads
from retrieval.config import (
    DEFAULT_BACKEND,
    DEFAULT_DEVICE,
    DEFAULT_UPLOAD_LIMIT,
    SERVE_RELOAD_INTERVAL,
    SERVE_RELOAD_SETTLE,
)
from retrieval.errors import ClipsearchError

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("clipsearch.serve")
REFRESH_MIN_PERIOD = 0.2
"""The background look at the store's generation happens at most this often, whatever the reload interval."""


class _Static(StaticFiles):
    """The page's assets, revalidated by their ETag on each load (a new version is seen at once)."""

    async def get_response(self, path: str, scope: Scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def create_app(
    library: Path,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    prepare_thumbnails: bool = False,
    database_url: str | None = None,
    device: str = DEFAULT_DEVICE,
    backend: str = DEFAULT_BACKEND,
    precision: str = "auto",
    reload_interval: float = SERVE_RELOAD_INTERVAL,
    reload_settle: float = SERVE_RELOAD_SETTLE,
    warm: bool = True,
) -> FastAPI:
    """The app serving `library` with `model`/`pretrained` (None: the library's recorded model). With `warm`,
    its lifespan start-up loads the model and index (a failure is logged and each request then answers 503
    until the library can be read); `app.state.service.warm()` does it on demand, raising the typed error."""
    service = Service(
        Path(library),
        model=model,
        pretrained=pretrained,
        database_url=database_url,
        device=device,
        backend=backend,
        precision=precision,
        reload_interval=reload_interval,
        reload_settle=reload_settle,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if warm:
            try:
                await run_in_threadpool(service.warm)
            except ClipsearchError as exc:
                log.warning("clipsearch: the library cannot be served yet: %s", exc)
        stop = threading.Event()
        helpers = [threading.Thread(target=_refresh, args=(service, stop), name="reloads", daemon=True)]
        if prepare_thumbnails:
            helpers.append(threading.Thread(target=_prepare, args=(service, stop), name="thumbnails", daemon=True))
        for helper in helpers:
            helper.start()
        yield
        stop.set()
        for helper in helpers:
            helper.join()
        service.close()

    app = FastAPI(
        title="clipsearch",
        version=server_version(),
        summary="Search a photo library by text, by example image, or both; images and thumbnails by id.",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN, which an offline user cannot reach
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=errors.Json,
    )
    app.state.service = service
    app.state.uploads = Uploads()
    app.state.upload_limit = upload_limit
    errors.install(app)
    for module in (routes_library, routes_search, routes_uploads, routes_images):
        app.include_router(module.router)
    _mount_page(app)
    return app


def _refresh(service: Service, stop: threading.Event) -> None:
    """Look at the store's generation every reload interval, and reload when due (`Service.refresh`)."""
    while not stop.wait(max(service.reloads.interval, REFRESH_MIN_PERIOD)):
        try:
            service.refresh()
        except (ClipsearchError, sqlite3.Error) as exc:  # the requests say it, as 503s; the next look retries
            log.debug("clipsearch: no reload: %s", exc)


def _prepare(service: Service, stop: threading.Event) -> None:
    try:
        service.prepare_thumbnails(stop)
    except ClipsearchError as exc:  # the library cannot be read: thumbnails are then made on request
        log.warning("clipsearch: thumbnails not prepared: %s", exc)


def _mount_page(app: FastAPI) -> None:
    app.mount("/static", _Static(directory=STATIC, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
