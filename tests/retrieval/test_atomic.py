"""Tests of retrieval.atomic: the one atomic file write, on real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from retrieval.atomic import atomic_path, write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_replaces_the_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "index.faiss"
    target.write_text("old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert _leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_target_untouched_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    target.write_text("committed")
    with pytest.raises(RuntimeError, match="writer died"), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "committed"
    assert _leftovers(tmp_path) == []


def test_the_temporary_lies_beside_the_target_and_any_writer_may_fill_it(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "train.json"
    target.parent.mkdir()
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent
        assert temporary != target and temporary.exists()
        with open(temporary, "w") as handle:  # as faiss.write_index / torch.save would
            handle.write("{}")
        assert not target.exists()  # nothing is visible before the block ends
    assert target.read_text() == "{}"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_private_files_are_0600_and_plain_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "private", "x", private=True)
        write_atomic(tmp_path / "plain", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private") == 0o600
    assert _mode(tmp_path / "plain") == 0o644
