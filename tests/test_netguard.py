"""The suite's rule that tests never touch the network is enforced, not just hoped for."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import netguard


def test_outbound_connection_is_blocked_and_recorded(expect_network_attempt: list[str]) -> None:
    with pytest.raises(netguard.NetworkBlockedError):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    assert any("192.0.2.1" in attempt for attempt in expect_network_attempt)


def test_name_resolution_is_blocked(expect_network_attempt: list[str]) -> None:
    with pytest.raises(netguard.NetworkBlockedError):
        socket.getaddrinfo("huggingface.co", 443)
    assert expect_network_attempt == ["resolve huggingface.co"]


def test_loopback_still_works() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    assert netguard.attempts == []


@pytest.mark.slow
def test_a_test_that_touches_the_network_fails(tmp_path: Path) -> None:
    """Run a tiny suite in a child pytest: its only test tries to connect, and the run must fail."""
    (tmp_path / "test_offender.py").write_text(
        "import socket\n"
        "def test_offender():\n"
        "    try:\n"
        "        socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
        "    except OSError:\n"
        "        pass  # swallowing the error must not hide the attempt\n"
    )
    (tmp_path / "conftest.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from tests.conftest import _no_network_touched  # noqa: F401\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    assert "test tried to use the network" in result.stdout
