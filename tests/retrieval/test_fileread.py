"""Tests of retrieval.fileread on real files: regular files read whole or in pieces, bounded by their size;
FIFOs, sockets and devices refused by what is open; files that change while read reported."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from retrieval.errors import UnreadableImageError
from retrieval.fileread import file_kind, iter_regular_file, read_regular_file
from tests.deadline import within

CONTENT = bytes(range(10))


def _file(tmp_path: Path, data: bytes = CONTENT) -> Path:
    path = tmp_path / "f.png"
    path.write_bytes(data)
    return path


def _reason(work: object) -> str:
    with pytest.raises(UnreadableImageError) as caught:
        within(20, work)  # type: ignore[arg-type]
    return caught.value.reason


def test_pieces_are_at_most_a_chunk_and_add_up_to_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert [len(piece) for piece in iter_regular_file(str(path), chunk=4)] == [4, 4, 2]
    assert b"".join(iter_regular_file(str(path), chunk=3)) == read_regular_file(str(path)) == CONTENT
    assert read_regular_file(str(_file(tmp_path, b""))) == b""


def test_file_that_shrinks_while_read_is_reported(tmp_path: Path) -> None:
    """Cut to 6 bytes after the first piece: the read ends short of the size seen at open."""
    path = _file(tmp_path)
    pieces = iter_regular_file(str(path), chunk=4)
    assert next(pieces) == CONTENT[:4]
    os.truncate(path, 6)
    assert _reason(lambda: list(pieces)) == "file changed while reading: it shrank from 10 to 6 bytes"


def test_file_that_grows_while_read_is_read_only_to_its_size_plus_one(tmp_path: Path) -> None:
    """Bytes appended after the open are not read beyond one: the growth is reported instead."""
    path = _file(tmp_path)
    pieces = iter_regular_file(str(path), chunk=4)
    assert next(pieces) == CONTENT[:4]
    with path.open("ab") as handle:
        handle.write(b"x" * 1_000_000)
    assert _reason(lambda: list(pieces)) == "file changed while reading: it grew past 10 bytes"


def test_size_cap_is_checked_before_reading(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert _reason(lambda: read_regular_file(str(path), max_bytes=9)) == "file too large: 10 bytes exceeds limit of 9"
    assert read_regular_file(str(path), max_bytes=10) == CONTENT


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets on this system")
def test_socket_folder_and_missing_file_are_refused(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.png"))
        assert _reason(lambda: read_regular_file(str(tmp_path / "s.png"))).startswith("cannot read file: ")
    finally:
        server.close()
    assert _reason(lambda: read_regular_file(str(tmp_path))) == "cannot read file: not a regular file (folder)"
    missing = str(tmp_path / "none.png")
    assert _reason(lambda: read_regular_file(missing)) == "cannot read file: No such file or directory"


def test_dangling_and_followed_links(tmp_path: Path) -> None:
    """Without follow_symlinks any link is refused, dangling or not; with it, the target is read."""
    real = _file(tmp_path)
    (tmp_path / "good.png").symlink_to(real)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere")
    refused = "cannot read file: symbolic link not followed"
    assert _reason(lambda: read_regular_file(str(tmp_path / "good.png"), follow_symlinks=False)) == refused
    assert _reason(lambda: read_regular_file(str(tmp_path / "dangling.png"), follow_symlinks=False)) == refused
    assert read_regular_file(str(tmp_path / "good.png")) == CONTENT


def test_file_kinds_are_named() -> None:
    assert file_kind(stat.S_IFREG) == "regular file"
    assert file_kind(stat.S_IFIFO) == "FIFO"
    assert file_kind(stat.S_IFSOCK) == "socket"
    assert file_kind(stat.S_IFCHR) == "character device"
    assert file_kind(stat.S_IFBLK) == "block device"
    assert file_kind(stat.S_IFDIR) == "folder"
