"""The library's state: `GET /api/status` (cheap, never loads the model) and `GET /api/info`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from indexer.web.schemas import StatusOut, errors
from indexer.web.service import Service

router = APIRouter(prefix="/api", tags=["library"])


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


@router.get(
    "/status",
    summary="Whether the server is ready, and which library and generation it serves",
    response_model=StatusOut,
    responses=errors(503),
)
def status(request: Request) -> dict[str, Any]:
    return service_of(request).status()
