"""The real web server for tests that need one over a socket (a browser, a second process): the app from
`indexer.web.app.create_app` on uvicorn, in a thread of the test process, on a loopback port the OS picks.

The socket is bound before uvicorn starts, so the URL is known at once and no other process can take the port
in between; `serving` returns once the app's start-up (model and index loaded) has finished.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

START_TIMEOUT = 120.0
"""Seconds to wait for start-up: the reference model loads in a few seconds, but the test machines are shared."""


@contextmanager
def serving(library: Path, **options: Any) -> Iterator[str]:
    """Serves `library` (`create_app(library, **options)`) on 127.0.0.1; yields the base URL, e.g.
    `http://127.0.0.1:43127`, and stops the server on exit."""
    import uvicorn

    from indexer.web.app import create_app

    app = create_app(library, **options)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="test-webserver", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def _wait_started(server: Any, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test web server stopped during start-up (see the log above)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test web server did not start within {START_TIMEOUT:.0f} s")
        time.sleep(0.05)
