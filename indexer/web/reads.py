"""The store's reads shared by a server's request threads: one lock around each read.

`StoreReader` keeps one SQLite connection and opens a read transaction per call, which two threads must not
interleave; each call is short (one indexed query or a few), so taking turns costs little, and every call
still sees one committed state of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from retrieval.storage.reader import StoreReads


class LockedReads:
    """`inner`'s reads (a `StoreReads`), one call at a time across threads."""

    def __init__(self, inner: StoreReads) -> None:
        self._inner = inner
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value
        method = cast(Callable[..., Any], value)

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return locked


def locked(reads: StoreReads) -> StoreReads:
    """`reads`, safe to share between threads (idempotent)."""
    return reads if isinstance(reads, LockedReads) else cast(StoreReads, LockedReads(reads))
