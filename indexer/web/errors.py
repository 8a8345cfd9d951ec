"""Every error as JSON, `{"error": {"type": "<ErrorClass>", "message": "..."}}`, with a status that fits: 400 a
bad query or parameter, 404 an unknown id or upload, 413 an upload too large, 503 while the library cannot be
read. Bad input never gets a 500 or an HTML page."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from retrieval import errors


class Json(JSONResponse):
    """JSON as `clipsearch search --json` writes it: a path's undecodable bytes (surrogate escapes) as `\\udcXX`
    escapes, where FastAPI's default would fail to encode them."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (errors.InvalidQueryError, 400),
    (errors.UnreadableImageError, 400),
    (errors.UnknownUploadError, 404),
    (errors.UploadTooLargeError, 413),
)
"""The first class an error is an instance of gives its status; any other library error is 503 (the library
or the model cannot be served as it is: missing, damaged, busy, unavailable, another model than the library's)."""


def status_of(error: errors.ClipsearchError) -> int:
    for kind, status in _STATUS + _not_found():
        if isinstance(error, kind):
            return status
    return 503


def _not_found() -> tuple[tuple[type[Exception], int], ...]:
    """404s: thumbs's `UnknownImageError` and `FileNotServedError` (retrieval/errors.py, thumbs's block)."""
    names = ("UnknownImageError", "FileNotServedError")
    return tuple((kind, 404) for name in names if (kind := getattr(errors, name, None)) is not None)


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return Json({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """The app's exception handlers: library errors, FastAPI's validation errors, HTTP errors, the database's."""

    @app.exception_handler(errors.ClipsearchError)
    async def library_error(_request: Request, exc: errors.ClipsearchError) -> JSONResponse:
        return error_response(status_of(exc), type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "InvalidQueryError", validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, "HTTPException", str(exc.detail), getattr(exc, "headers", None))

    from sqlalchemy.exc import DBAPIError

    @app.exception_handler(sqlite3.Error)
    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(503, "DatabaseUnavailableError", f"the library's database cannot be read now: {exc}")


def validation_message(problems: Any) -> str:
    """FastAPI's validation errors as one sentence naming each field in backticks (`parts.0.weight`)."""
    said = []
    for problem in problems:
        where = ".".join(str(part) for part in problem.get("loc", ()) if part not in ("body", "query", "path"))
        said.append(f"`{where or 'body'}`: {problem.get('msg', 'invalid')}")
    return "; ".join(said) or "the request is not valid"
