"""`clipsearch serve`: the web page and JSON API of `indexer.web` on uvicorn, over one warm model and index.

The command binds its socket itself (a port in use is one line naming --port; `--port 0` picks a free one),
lets the app load the model and the index, then, once its own `GET /api/status` answers through that socket,
writes the library's discovery file (`retrieval.server_file`) and says where it serves. Ctrl-C or SIGTERM
stops it cleanly: requests in flight finish, the discovery file goes, and the exit status is 0. FastAPI and
uvicorn are imported inside the command only, so that the other commands never load them.
"""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from indexer.cli.options import LibraryChoice, ModelChoice, library_options, model_options
from retrieval.config import (
    DEFAULT_SERVE_HOST,
    DEFAULT_SERVE_PORT,
    DEFAULT_UPLOAD_LIMIT,
    SERVER_STOP_GRACE,
    default_library_dir,
)

if TYPE_CHECKING:
    import uvicorn

_LISTEN_BACKLOG = 128
_READY_WAIT_SECONDS = 30.0
"""How long the command waits for its own server's status once uvicorn has started (the model and index are
loaded by then: this is one request over loopback)."""
_POLL_SECONDS = 0.05


@click.command()
@click.option(
    "--host",
    default=DEFAULT_SERVE_HOST,
    show_default=True,
    help="Address to listen on. Anything but loopback makes the library's paths and photos readable by anyone "
    "who can reach it (a warning says so).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_SERVE_PORT,
    show_default=True,
    help="TCP port; 0 picks a free one (printed).",
)
@click.option(
    "--upload-limit",
    type=click.IntRange(min=1),
    default=DEFAULT_UPLOAD_LIMIT,
    show_default=True,
    help="Largest image upload accepted, in bytes (a larger one is refused with 413).",
)
@click.option(
    "--prepare-thumbnails",
    is_flag=True,
    help="Make every image's thumbnail in the background from the start (else each on its first request).",
)
@click.option("--access-log", is_flag=True, help="Print one line per HTTP request.")
@model_options
@library_options
def serve(
    host: str,
    port: int,
    upload_limit: int,
    prepare_thumbnails: bool,
    access_log: bool,
    model: ModelChoice,
    library: LibraryChoice,
) -> None:
    """Serve the library's search page and JSON API, with the model and index loaded once and kept warm.

    Open the printed URL in a browser: a search box (words, an image, parts to avoid), thumbnails, filters,
    "more like this", duplicates. While it runs, `clipsearch search` on the same library asks it instead of
    loading the model (add --local to search in the process itself).

    \b
    Example:
      clipsearch serve
      clipsearch serve --library ~/photos-lib --port 8080
      clipsearch serve --port 0 --access-log       # any free port, one line per request
    """
    uvicorn_module, create_app = _web_stack()
    directory = Path(library.directory or default_library_dir()).expanduser().resolve()
    if not is_loopback(host):
        click.secho(
            f"warning: serving on {host}, not loopback: anyone who can reach this address can search the library "
            "and read its paths and photos (there is no login); use --host 127.0.0.1 to keep it to this machine",
            err=True,
            fg="yellow",
        )
    _refuse_second_server(directory)
    sock = listen(host, port)
    try:
        app = _warm_app(create_app, directory, model, library, upload_limit, prepare_thumbnails)
        config = uvicorn_module.Config(
            app,
            log_level="info" if access_log else "warning",
            access_log=access_log,
            timeout_graceful_shutdown=SERVER_STOP_GRACE,
        )
        server = uvicorn_module.Server(config)
    except BaseException:
        sock.close()
        raise
    _run(server, sock, directory)


def _warm_app(
    create_app: Any,
    directory: Path,
    model: ModelChoice,
    library: LibraryChoice,
    upload_limit: int,
    prepare_thumbnails: bool,
) -> Any:
    """The app over the library, its model and index loaded now: a library that cannot be served is the
    command's error, before the server is announced."""
    click.echo(f"loading the model and the index of {directory} ...", err=True)
    started = time.perf_counter()
    app = create_app(
        directory,
        model=model.model,
        pretrained=model.pretrained,
        upload_limit=upload_limit,
        prepare_thumbnails=prepare_thumbnails,
        database_url=library.database_url,
        device=model.device,
        backend=model.backend,
        precision=model.precision,
        warm=False,
    )
    warm = app.state.service.warm()
    images = len(warm.searcher.index)
    click.echo(f"loaded the model and {images} images in {time.perf_counter() - started:.1f} s", err=True)
    return app


def _web_stack() -> tuple[Any, Any]:
    """(uvicorn, `create_app`), or the one line saying how to install them."""
    try:
        import fastapi  # noqa: F401
        import uvicorn

        from indexer.web.app import create_app
    except ImportError as exc:
        raise click.ClickException(
            f'clipsearch serve needs FastAPI and uvicorn ({exc.name} is missing): pip install "clipsearch[serve]"'
        ) from exc
    return uvicorn, create_app


def _refuse_second_server(directory: Path) -> None:
    """One server per library: its discovery file can name only one. A stale file (its process gone, or its
    URL answering for another library) is no server: the new one replaces it."""
    from indexer.server_client import server_for

    running = server_for(directory)
    if running is not None:
        raise click.ClickException(
            f"a clipsearch server already serves {directory} at {running.url} (pid {running.pid}): "
            "use it, or stop it first"
        )


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or `localhost` (what a browser on another machine cannot reach)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` and listening; a port in use or a host that is no address of this
    machine is one line naming its option."""
    family, address = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by each accepted connection: without it a reply's head and body, written apart, wait on
        # the client's delayed ACK (Nagle), 40 ms a request (asyncio sets it only on sockets it binds itself).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(_LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"port {port} on {host} is in use: choose another with --port (0 picks a free one)"
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise click.ClickException(
                f"port {port} needs privileges this user lacks: choose one from 1024 up with --port"
            ) from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise click.BadParameter(f"{host!r} is no address of this machine", param_hint="--host") from exc
        raise
    return sock


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The socket family and address of `host`:`port`: an IP address as written, a name as resolved."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            family, _kind, _proto, _name, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        except socket.gaierror as exc:
            raise click.BadParameter(
                f"{host!r} is no address of this machine ({exc.strerror})", param_hint="--host"
            ) from exc
        return family, address
    if ip.version == 6:
        return socket.AF_INET6, (str(ip), port, 0, 0)
    return socket.AF_INET, (str(ip), port)


class _Stopped(Exception):
    """SIGINT or SIGTERM after uvicorn's graceful shutdown (it re-raises the signals it caught)."""


def _stop(_signal: int, _frame: FrameType | None) -> None:
    raise _Stopped


def _run(server: uvicorn.Server, sock: socket.socket, directory: Path) -> None:
    """Serve on `sock` until stopped, announced by `_Announcer`; the discovery file is removed however the
    server ends. Exit status 0 after Ctrl-C or SIGTERM."""
    announcer = _Announcer(server, sock, directory)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        announcer.start()
        server.run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        announcer.withdraw()
        sock.close()
    if announcer.failure is not None:
        raise click.ClickException(announcer.failure)
    click.echo("stopped", err=True)


class _Announcer(threading.Thread):
    """Beside the server: once uvicorn has started (the app has loaded its model and index) and the app answers
    `GET /api/status` through the socket, writes the library's discovery file and says where it serves; as
    soon as the server begins to stop, removes the file (before requests in flight finish: no new client
    should come). A server that cannot answer itself is stopped, `failure` saying why."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, directory: Path) -> None:
        super().__init__(name="clipsearch-announce", daemon=True)
        self.server, self.directory = server, directory
        self.failure: str | None = None
        self.host, self.port = sock.getsockname()[:2]
        self._written = False
        self._lock = threading.Lock()

    def run(self) -> None:
        if not self._wait(lambda: self.server.started):
            return
        try:
            self._announce()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.failure = f"the server started but does not answer its own status request: {exc}"
            self.server.should_exit = True
            return
        self._wait(lambda: False)
        self.withdraw()

    def _wait(self, condition: Callable[[], bool]) -> bool:
        """Poll until `condition()` (True) or the server is stopping (False)."""
        while not self.server.should_exit:
            if condition():
                return True
            time.sleep(_POLL_SECONDS)
        return False

    def _announce(self) -> None:
        from retrieval.server_file import ServerInfo, write_server_file

        status = own_status(self.host, self.port)
        info = ServerInfo.now(
            host=self.host,
            port=self.port,
            library_id=str(status["library_id"]),
            version=str(status["server"]["version"]),
        )
        with self._lock:
            if self.server.should_exit:
                return
            write_server_file(self.directory, info)
            self._written = True
        click.echo(f"serving {self.directory} at {info.url} (Ctrl-C stops)")

    def withdraw(self) -> None:
        """Remove the discovery file if this process wrote it (another server's is left alone)."""
        from retrieval.server_file import remove_server_file

        with self._lock:
            if self._written:
                remove_server_file(self.directory)
                self._written = False


def own_status(host: str, port: int) -> dict[str, Any]:
    """The server's `GET /api/status` through its own socket (a wildcard address asked on loopback)."""
    import http.client
    import json

    from retrieval.server_file import reachable_host

    connection = http.client.HTTPConnection(reachable_host(host), port, timeout=_READY_WAIT_SECONDS)
    try:
        connection.request("GET", "/api/status", headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise ValueError(f"GET /api/status answered {response.status}: {body[:200]!r}")
    status = json.loads(body)
    if not isinstance(status, dict):
        raise ValueError("GET /api/status answered no JSON object")
    return status
