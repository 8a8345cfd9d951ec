"""Images uploaded to search by: read with a size limit while they stream in, decoded by the indexer's safe
decoder, embedded once, and kept only as vectors, in memory, in a bounded least-recently-used table. Their
bytes are never written anywhere (not even to a temporary file, as a framework's upload spooling would)."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from python_multipart.multipart import MultipartParser, parse_options_header

from retrieval.config import UPLOAD_CACHE_SIZE
from retrieval.errors import InvalidQueryError, UnknownUploadError, UploadTooLargeError

UPLOAD_FIELD = "file"
"""The multipart field that carries the image."""
_MULTIPART_SLACK = 16 * 1024
"""Room in a request's body for the multipart framing and headers around the image itself."""


@dataclass(frozen=True)
class Upload:
    """An uploaded image, as kept: its vector and its size in pixels."""

    vector: np.ndarray
    width: int
    height: int


class Uploads:
    """At most `capacity` uploads by id; the least recently used goes when a new one comes. Thread-safe."""

    def __init__(self, capacity: int = UPLOAD_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, upload: Upload) -> str:
        upload_id = secrets.token_urlsafe(12)
        with self._lock:
            self._items[upload_id] = upload
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return upload_id

    def get(self, upload_id: str) -> Upload:
        with self._lock:
            upload = self._items.get(upload_id)
            if upload is None:
                raise UnknownUploadError(
                    f"`upload` {upload_id!r} is not held by this server (never uploaded, or expired): upload it again",
                    parameters=("upload",),
                )
            self._items.move_to_end(upload_id)
            return upload

    def vector(self, upload_id: str) -> np.ndarray:
        """The vector of `upload_id` (what `query_from_json` resolves an `upload` part with)."""
        return self.get(upload_id).vector

    def __len__(self) -> int:
        return len(self._items)


def body_limit(limit: int) -> int:
    """The most bytes a request's body may have for an image of at most `limit` bytes."""
    return limit + _MULTIPART_SLACK


def too_large(limit: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"the upload is larger than the server's limit of {limit} bytes (`upload_limit`)",
        parameters=("upload_limit",),
    )


async def read_upload(content_type: str | None, body: AsyncIterator[bytes], limit: int) -> bytes:
    """The bytes of the multipart field `file` in a request `body`, reading no more than `limit` bytes of
    image (and a little framing): a larger one is an `UploadTooLargeError` as soon as it passes the limit."""
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidQueryError(
            "an upload is a multipart/form-data body with the image in the field `file`", parameters=("file",)
        )
    collected = _FieldCollector(UPLOAD_FIELD, limit)
    parser = MultipartParser(boundary, collected.callbacks())
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > body_limit(limit):
            raise too_large(limit)
        parser.write(chunk)
    parser.finalize()
    return collected.result()


class _FieldCollector:
    """The multipart parser's callbacks, keeping the bytes of one field (bounded by `limit`)."""

    def __init__(self, field: str, limit: int) -> None:
        self.field, self.limit = field, limit
        self._header_name = b""
        self._header_value = b""
        self._current_is_field = False
        self._data = BytesIO()
        self._found = False

    def callbacks(self) -> Any:
        """The `MultipartCallbacks` (a TypedDict) of this collector."""
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
        }

    def _part_begin(self) -> None:
        self._current_is_field = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            _, options = parse_options_header(self._header_value)
            if options.get(b"name") == self.field.encode() and not self._found:
                self._current_is_field = self._found = True
        self._header_name = self._header_value = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._current_is_field:
            return
        if self._data.tell() + (end - start) > self.limit:
            raise too_large(self.limit)
        self._data.write(data[start:end])

    def result(self) -> bytes:
        if not self._found:
            raise InvalidQueryError("the upload has no field `file` holding an image", parameters=("file",))
        return self._data.getvalue()
