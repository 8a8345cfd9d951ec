"""Blocks every network connection except loopback and Unix sockets, and records each attempt.

Installed for the whole test session by conftest.py, and by the child processes tests start. A blocked
attempt raises `NetworkBlockedError` (an OSError, as a real outage would) and fails the test that made it,
unless that test declares it expects one (the offline-download tests).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

attempts: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


class NetworkBlockedError(OSError):
    pass


def _is_local(host: Any) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _check(family: int, address: Any) -> None:
    if family == getattr(socket, "AF_UNIX", object()):
        return
    host = address[0] if isinstance(address, tuple) else address
    if not _is_local(host):
        attempts.append(str(address))
        raise NetworkBlockedError(f"network access is blocked in tests: {address}")


def _connect(self: socket.socket, address: Any) -> None:
    _check(self.family, address)
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check(self.family, address)
    return _real_connect_ex(self, address)


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_local(host):
        attempts.append(f"resolve {host}")
        raise NetworkBlockedError(f"name resolution is blocked in tests: {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo
