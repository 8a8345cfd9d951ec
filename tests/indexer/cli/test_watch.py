"""`clipsearch watch` as a user runs it: a subprocess that catches up, applies a change, and stops cleanly on
SIGINT or SIGTERM (exit status 0, no traceback, the library whole); the next start catches up with what
changed while it was stopped."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from retrieval.library import Library
from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke
from tests.indexer.cli.test_cli import model_args
from tests.libcheck import assert_index_matches_store, stored_rows

REPO = Path(__file__).resolve().parents[3]


class WatchProcess:
    """`clipsearch watch` in a child process, its stdout read line by line in a thread."""

    def __init__(self, *args: str | Path) -> None:
        env = os.environ | {"PYTHONPATH": str(REPO)}
        command = [sys.executable, "-c", "from indexer.cli import main; main()", "watch", *map(str, args)]
        self.child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.child.stdout is not None
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.child.stdout], daemon=True).start()  # type: ignore[union-attr]

    def line_with(self, text: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.child.kill()
                pytest.fail(f"no line with {text!r} within {timeout}s; stderr: {self.child.communicate()[1]}")
            if text in line:
                return line

    def stop(self, signum: int) -> tuple[int, str]:
        self.child.send_signal(signum)
        _out, err = self.child.communicate(timeout=60)
        return self.child.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_watch_applies_changes_and_stops_cleanly_on_a_signal(tmp_path: Path, tiny_config: Path, signum: int) -> None:
    photos, library = tmp_path / "photos", tmp_path / "library"
    for seed in range(3):
        factory.pattern_png(photos / f"p{seed}.png", seed=seed)
    args = (photos, "--library", library, "--quiet-seconds", "0.3", "--workers", "1", *model_args(tiny_config))

    watch = WatchProcess(*args)
    assert ": 3 embedded" in watch.line_with("caught up with")
    factory.pattern_png(photos / "added.png", seed=50)
    assert "1 embedded" in watch.line_with("changed paths under")
    code, err = watch.stop(signum)
    assert code == 0, err
    assert "Traceback" not in err and "stopped" in err

    factory.pattern_png(photos / "while-stopped.png", seed=51)  # seen by the next start's catch-up
    again = WatchProcess(*args)
    assert ": 1 embedded" in again.line_with("caught up with")
    assert again.stop(signal.SIGINT)[0] == 0
    with Library(library) as opened:
        assert sorted(stored_rows(opened)) == sorted(str(p) for p in photos.iterdir())
        assert_index_matches_store(opened)


def test_watch_refuses_a_missing_root_before_creating_a_library(tmp_path: Path, tiny_config: Path) -> None:
    result = invoke("watch", tmp_path / "nowhere", "--library", tmp_path / "lib", *model_args(tiny_config))
    assert "cannot index" in assert_clean_failure(result)
    assert not (tmp_path / "lib").exists()


def test_watch_without_watchdog_says_which_extra_to_install(
    tmp_path: Path, tiny_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With watchdog not importable (None in sys.modules, and indexer.watch not imported yet): one message."""
    monkeypatch.delitem(sys.modules, "indexer.watch", raising=False)
    monkeypatch.setitem(sys.modules, "watchdog", None)
    monkeypatch.setitem(sys.modules, "watchdog.events", None)
    (tmp_path / "photos").mkdir()
    result = invoke("watch", tmp_path / "photos", "--library", tmp_path / "lib", *model_args(tiny_config))
    assert "pip install 'clipsearch[watch]'" in assert_clean_failure(result)
