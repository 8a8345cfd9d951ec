"""Tests of retrieval.export on real files: links, hard links and copies, clashing names, a user's files left
alone, re-runs adding nothing, originals gone since indexing, names that are not UTF-8, a bad folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrieval.errors import ExportError
from retrieval.export import ALREADY_THERE, MISSING, WRITTEN, export_files

NOT_UTF8 = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: what os.listdir gives for a name that is not UTF-8


@pytest.fixture
def originals(tmp_path: Path) -> list[str]:
    """Three files called beach.jpg in three folders (distinct bytes), and one other."""
    paths = []
    for number, folder in enumerate(["2019", "2020", "2021"]):
        path = tmp_path / "photos" / folder / "beach.jpg"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"beach %d" % number)
        paths.append(str(path))
    other = tmp_path / "photos" / "dog.png"
    other.write_bytes(b"dog")
    return [*paths, str(other)]


def _listing(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("mode", ["link", "hardlink", "copy"])
def test_each_mode_writes_every_file_with_clashes_numbered(tmp_path: Path, originals: list[str], mode: str) -> None:
    """Names are kept; the second and third beach.jpg become `beach (2).jpg`, `beach (3).jpg` in result order;
    each holds its own original's bytes, as a symlink, the same inode, or a separate copy."""
    report = export_files(originals, tmp_path / "out", mode=mode)
    out = tmp_path / "out"
    names = ["beach.jpg", "beach (2).jpg", "beach (3).jpg", "dog.png"]
    assert [item.destination for item in report.files] == [str(out / name) for name in names]
    assert [item.outcome for item in report.files] == [WRITTEN] * 4
    assert _listing(out) == {name: Path(source).read_bytes() for name, source in zip(names, originals, strict=True)}
    for name, source in zip(names, originals, strict=True):
        exported = out / name
        assert exported.is_symlink() == (mode == "link")
        if mode == "link":
            assert os.readlink(exported) == source
        assert os.path.samefile(exported, source) == (mode != "copy")
    if mode == "copy":
        assert os.stat(out / "dog.png").st_mtime_ns == os.stat(originals[3]).st_mtime_ns
        assert not [name for name in os.listdir(out) if name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize("mode", ["link", "hardlink", "copy"])
def test_a_rerun_adds_nothing_whatever_the_order(tmp_path: Path, originals: list[str], mode: str) -> None:
    """Running the export again, even with the results in another order, finds every file already there."""
    first = export_files(originals, tmp_path / "out", mode=mode)
    again = export_files(list(reversed(originals)), tmp_path / "out", mode=mode)
    assert [item.outcome for item in again.files] == [ALREADY_THERE] * 4
    assert {item.destination for item in again.files} == {item.destination for item in first.files}
    assert len(os.listdir(tmp_path / "out")) == 4
    assert (again.count(WRITTEN), again.count(ALREADY_THERE)) == (0, 4)


@pytest.mark.parametrize("mode", ["link", "copy"])
def test_a_users_files_are_never_overwritten(tmp_path: Path, originals: list[str], mode: str) -> None:
    """A user's own beach.jpg, a dangling link named `beach (2).jpg` and a folder named dog.png stay as they
    were; the results take the next free names."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "beach.jpg").write_bytes(b"my own beach")
    os.symlink(tmp_path / "nowhere", out / "beach (2).jpg")
    (out / "dog.png").mkdir()
    report = export_files(originals[:1] + originals[3:], out, mode=mode)
    assert [os.path.basename(item.destination or "") for item in report.files] == ["beach (3).jpg", "dog (2).png"]
    assert (out / "beach.jpg").read_bytes() == b"my own beach"
    assert os.readlink(out / "beach (2).jpg") == str(tmp_path / "nowhere")
    assert (out / "dog.png").is_dir()
    assert (out / "beach (3).jpg").read_bytes() == b"beach 0"


def test_a_copy_with_the_same_bytes_counts_as_exported(tmp_path: Path, originals: list[str]) -> None:
    """A file of the same name and bytes already in the folder is the export (not duplicated), in any mode."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "dog.png").write_bytes(b"dog")
    report = export_files(originals[3:], out, mode="link")
    assert [(item.outcome, item.destination) for item in report.files] == [(ALREADY_THERE, str(out / "dog.png"))]
    assert not (out / "dog.png").is_symlink()


def test_an_original_gone_since_indexing_is_reported_not_linked(tmp_path: Path, originals: list[str]) -> None:
    os.unlink(originals[0])
    report = export_files(originals[:2], tmp_path / "out")
    assert [(item.outcome, item.destination) for item in report.files] == [
        (MISSING, None),
        (WRITTEN, str(tmp_path / "out" / "beach.jpg")),
    ]
    assert report.to_json()[MISSING] == 1
    assert os.readlink(tmp_path / "out" / "beach.jpg") == originals[1]


@pytest.mark.parametrize("mode", ["link", "copy"])
def test_names_that_are_not_utf8_survive(tmp_path: Path, mode: str) -> None:
    """caf\\xe9.jpg twice (two folders): exported as the same bytes, the second as `caf\\xe9 (2).jpg`."""
    sources = []
    for folder in ("a", "b"):
        path = tmp_path / folder / NOT_UTF8
        path.parent.mkdir()
        path.write_bytes(folder.encode())
        sources.append(str(path))
    out = tmp_path / os.fsdecode(b"out\xff")
    report = export_files(sources, out, mode=mode)
    assert sorted(os.listdir(os.fsencode(out))) == [b"caf\xe9 (2).jpg", b"caf\xe9.jpg"]
    assert [Path(item.destination or "").read_bytes() for item in report.files] == [b"a", b"b"]


def test_a_folder_that_is_a_file_or_a_bad_mode_is_refused(tmp_path: Path, originals: list[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file")
    with pytest.raises(ExportError, match="`folder`") as caught:
        export_files(originals, taken)
    assert caught.value.parameters == ("folder",)
    assert taken.read_text() == "a file"
    with pytest.raises(ExportError, match="`mode`"):
        export_files(originals, tmp_path / "out", mode="move")
    assert not (tmp_path / "out").exists()


def test_hard_links_across_file_systems_are_refused_clearly(tmp_path: Path, originals: list[str]) -> None:
    """/dev/shm (tmpfs) and the test folder on different file systems: a clear ExportError naming `mode`."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test folder, to hard-link across them")
    out = shm / f"clipsearch-export-test-{os.getpid()}"
    try:
        with pytest.raises(ExportError, match="another file system") as caught:
            export_files(originals[:1], out, mode="hardlink")
        assert "mode" in caught.value.parameters
        assert os.listdir(out) == []
    finally:
        if out.exists():
            for name in os.listdir(out):
                os.unlink(out / name)
            out.rmdir()
