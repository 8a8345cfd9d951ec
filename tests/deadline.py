"""Run work that might hang (opening a FIFO, reading a device) under a deadline, without hanging the suite."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def within(seconds: float, work: Callable[[], T], *, unblock: Iterable[Path] = ()) -> T:
    """`work()`'s result (or its exception), failing the test if it is still running after `seconds`.

    A thread blocked opening one of the FIFOs in `unblock` is released afterwards (a writer opens and closes
    it), so a test that found a hang leaves no stuck thread behind; work stuck elsewhere is a daemon thread.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="deadline-work")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in unblock:
            _release(fifo)
        pytest.fail(f"still running after {seconds} s (hung)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _release(fifo: Path) -> None:
    """Open `fifo` for writing without blocking (this works only while a reader waits), then close it."""
    with contextlib.suppress(OSError):  # no reader waiting: nothing to release
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
