"""The one progress bar: drawn on a terminal from (done, total, note) updates, silent otherwise."""

from __future__ import annotations

import os

from indexer.cli.output import ProgressBar
from tests.fresh import run_python

DRAW = """
from indexer.cli.output import ProgressBar
with ProgressBar("training") as bar:
    assert bar.enabled
    bar.update(5, 10, "loss 1.234")  # a resumed run starts part way
    bar.update(7, 10, "loss 0.987 val mean recall 50.0")
with ProgressBar("quiet", quiet=True) as quiet:
    assert not quiet.enabled
"""


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal's other end is closed: all is read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_bar_on_a_terminal_shows_position_and_note() -> None:
    """On a terminal the bar shows the label, the position reached and the latest note; a quiet bar is off."""
    terminal, child_end = os.openpty()
    try:
        result = run_python(DRAW, stderr=child_end)
    finally:
        os.close(child_end)
    drawn = _read_all(terminal)
    os.close(terminal)
    assert result.returncode == 0, drawn
    assert "training" in drawn and "quiet" not in drawn
    assert "5/10" in drawn and "loss 1.234" in drawn
    assert "7/10" in drawn and "loss 0.987 val mean recall 50.0" in drawn


def test_bar_off_a_terminal_is_disabled() -> None:
    """Under test capture stderr is no terminal: the bar is off, and updating it draws nothing there."""
    with ProgressBar("embedding") as bar:
        assert not bar.enabled
        assert bar.per_second(0) == 0.0
