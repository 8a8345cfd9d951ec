"""Tests of indexer.scan (walking, filtering, planning) and indexer.reuse (touched, moved, copied files).

Everything runs on real folders in tmp_path and, for reuse, a real SQLite store filled through StoreWriter
with hand-made unit vectors and the files' real content hashes. find_reuse only ever reads bytes, so the
files it looks at hold chosen bytes of chosen sizes rather than decodable images.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path

import pytest

from indexer.reuse import Reuse, find_reuse, hash_bytes, hash_file
from indexer.scan import DiskFile, ScanOptions, ScanResult, check_roots, plan_changes, scan_root
from retrieval.errors import IndexRootError
from retrieval.library import Library
from retrieval.storage.records import FileMetadata, ImageRecord
from retrieval.storage.store import Store
from tests import imagefactory
from tests.deadline import within
from tests.libcheck import unit_vectors

DIM = 4
_TWICE = "folder already scanned (a symbolic link loop or a second link to it)"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _relative(result: ScanResult, root: Path) -> list[str]:
    return [os.path.relpath(f.path, root) for f in result.files]


def _scan(root: Path, **options: object) -> list[str]:
    """Relative paths scan_root lists under `root` with the given ScanOptions fields."""
    return _relative(scan_root(str(root), ScanOptions(**options)), root)  # type: ignore[arg-type]


# --- scan_root -------------------------------------------------------------------------------------


def test_extensions_are_case_insensitive_and_non_images_ignored(tmp_path: Path) -> None:
    """Upper- and mixed-case image extensions are listed; other files and extension-less names are not."""
    for name in ("a.JPG", "b.Png", "c.jpeg", "d.txt", "e.json", "README", "f.png.bak", "g.webp"):
        _touch(tmp_path / name)
    assert _scan(tmp_path) == ["a.JPG", "b.Png", "c.jpeg", "g.webp"]
    assert _scan(tmp_path, extensions=frozenset({".png"})) == ["b.Png"]


def test_hidden_files_and_folders_skipped_unless_asked(tmp_path: Path) -> None:
    """Dot-files and everything under dot-folders are skipped by default and listed with include_hidden."""
    for name in ("visible.png", ".hidden.png", ".thumbs/inside.png", "sub/.secret/deep.png", "sub/ok.png"):
        _touch(tmp_path / name)
    assert _scan(tmp_path) == ["visible.png", "sub/ok.png"]
    assert _scan(tmp_path, include_hidden=True) == [
        ".hidden.png",
        "visible.png",
        ".thumbs/inside.png",
        "sub/ok.png",
        "sub/.secret/deep.png",
    ]


def test_exclude_globs_on_relative_paths_and_names(tmp_path: Path) -> None:
    """Patterns match a file's or folder's path relative to the root, or its bare name."""
    for name in ("keep.png", "y.png", "raw/a.png", "trip/raw/c.png", "trip/x_thumb.png", "trip/y.png"):
        _touch(tmp_path / name)
    everything = ["keep.png", "y.png", "raw/a.png", "trip/x_thumb.png", "trip/y.png", "trip/raw/c.png"]
    assert _scan(tmp_path) == everything
    # a file name pattern, at any depth
    assert _scan(tmp_path, exclude=("*_thumb.png",)) == [p for p in everything if p != "trip/x_thumb.png"]
    # a file's relative path: the root's y.png (relative path and name "y.png") stays
    assert _scan(tmp_path, exclude=("trip/y.png",)) == [p for p in everything if p != "trip/y.png"]
    # a folder name: every folder called raw, at any depth
    assert _scan(tmp_path, exclude=("raw",)) == ["keep.png", "y.png", "trip/x_thumb.png", "trip/y.png"]
    # a folder's relative path: only trip/raw
    assert _scan(tmp_path, exclude=("trip/raw",)) == [p for p in everything if p != "trip/raw/c.png"]


def test_path_style_pattern_matches_folders_at_every_depth(tmp_path: Path) -> None:
    """`*/thumbs/*` (as in the README) skips a thumbs folder right under the root as well as deeper ones,
    because patterns are also tried on absolute paths; the folder is pruned, not only its files."""
    for name in ("keep.png", "thumbs/a.png", "trip/thumbs/b.png", "trip/c.png"):
        _touch(tmp_path / name)
    (tmp_path / "thumbs" / "loop").symlink_to(tmp_path / "thumbs", target_is_directory=True)
    result = scan_root(str(tmp_path), ScanOptions(exclude=("*/thumbs/*",), follow_symlinks=True))
    assert _relative(result, tmp_path) == ["keep.png", "trip/c.png"]
    assert _scan(tmp_path, exclude=(f"{tmp_path}/trip/*",)) == ["keep.png", "thumbs/a.png"]


def test_excluded_folder_is_not_descended(tmp_path: Path) -> None:
    """Files inside an excluded folder are not listed although their own names match no pattern, because
    the folder is never walked: a symlink loop inside it is not entered even with follow_symlinks."""
    _touch(tmp_path / "keep.png")
    _touch(tmp_path / "cache" / "a.png")
    (tmp_path / "cache" / "loop").symlink_to(tmp_path / "cache", target_is_directory=True)
    assert _scan(tmp_path, follow_symlinks=True)[:2] == ["keep.png", "cache/a.png"]
    result = scan_root(str(tmp_path), ScanOptions(exclude=("cache",), follow_symlinks=True))
    assert _relative(result, tmp_path) == ["keep.png"]
    assert result.unlisted == []


def test_output_is_sorted_and_deterministic(tmp_path: Path) -> None:
    """Files come out in a stable order: each folder's files sorted by name, then its subfolders in name order."""
    names = ["z.png", "a.png", "m/b.png", "m/a.png", "b/z.png", "b/c/d.png", "B.png"]
    for name in names:
        _touch(tmp_path / name)
    first = _scan(tmp_path)
    assert first == ["B.png", "a.png", "z.png", "b/z.png", "b/c/d.png", "m/a.png", "m/b.png"]
    assert _scan(tmp_path) == first


def test_sizes_and_mtimes_come_from_stat(tmp_path: Path) -> None:
    """Each DiskFile carries the file's absolute path, byte size and nanosecond mtime."""
    image = imagefactory.pattern_png(tmp_path / "p.png", seed=3)
    os.utime(image, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    empty = _touch(tmp_path / "empty.png", b"")
    [empty_file, image_file] = scan_root(str(tmp_path), ScanOptions()).files
    assert image_file == DiskFile(str(image), image.stat().st_size, 1_600_000_000_123_456_789)
    assert image_file.size > 0
    assert empty_file == DiskFile(str(empty), 0, empty.stat().st_mtime_ns)


def test_symlinks_are_skipped_and_counted_unless_followed(tmp_path: Path) -> None:
    """By default no symbolic link is followed, file or folder, inside the root or out of it: a link out
    of the root (a private file renamed .jpg) must not be indexed, and one inside leads to files listed
    under their own path anyway. Each skipped link is counted; links to other files are not. With
    follow_symlinks every link is followed, under the link's own path."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    _touch(root / "own.png")
    _touch(root / "notes.txt")
    _touch(elsewhere / "far.png")
    _touch(elsewhere / "passwd")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "alias.png").symlink_to(root / "own.png")
    (root / "innocent.jpg").symlink_to(elsewhere / "passwd")
    (root / "readme.txt").symlink_to(root / "notes.txt")
    (root / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    result = scan_root(str(root), ScanOptions())
    assert _relative(result, root) == ["own.png"]
    assert (result.links_skipped, result.skipped, result.unlisted) == (4, [], [])

    followed = scan_root(str(root), ScanOptions(follow_symlinks=True))
    assert _relative(followed, root) == ["alias.png", "innocent.jpg", "own.png", "linked/far.png"]
    assert followed.links_skipped == 0
    assert [path for path, _ in followed.unlisted] == [str(root / "dangling.png")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifos_sockets_and_devices_are_skipped_with_their_reason(tmp_path: Path) -> None:
    """Only regular files are listed: a FIFO, a socket or a device named like an image would hang or flood
    the decoder. Each is recorded with what it is."""
    _touch(tmp_path / "real.png")
    os.mkfifo(tmp_path / "x.jpg")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.png"))
        (tmp_path / "zero.png").symlink_to("/dev/zero")
        plain = scan_root(str(tmp_path), ScanOptions())
        followed = scan_root(str(tmp_path), ScanOptions(follow_symlinks=True))
    finally:
        server.close()
    expected = [
        (str(tmp_path / "s.png"), "not a regular file (socket)"),
        (str(tmp_path / "x.jpg"), "not a regular file (FIFO)"),
    ]
    assert (_relative(plain, tmp_path), plain.skipped, plain.links_skipped) == (["real.png"], expected, 1)
    assert _relative(followed, tmp_path) == ["real.png"]
    assert followed.skipped == [*expected, (str(tmp_path / "zero.png"), "not a regular file (character device)")]


def test_folder_loop_is_walked_once(tmp_path: Path) -> None:
    """With follow_symlinks, a/up -> .. leads back to the root: each folder is walked once, known by its
    (device, inode), instead of once per path until the system's link limit (41 listings of one file)."""
    _touch(tmp_path / "a" / "p.png")
    (tmp_path / "a" / "up").symlink_to("..", target_is_directory=True)
    result = within(30, lambda: scan_root(str(tmp_path), ScanOptions(follow_symlinks=True)))
    assert _relative(result, tmp_path) == ["a/p.png"]
    assert result.skipped == [(str(tmp_path / "a" / "up"), _TWICE)]
    assert result.unlisted == []


def test_second_link_to_a_folder_is_walked_once(tmp_path: Path) -> None:
    """Two links to one outside folder: its files are listed under the first link in name order only."""
    _touch(tmp_path / "outside" / "o.png")
    root = tmp_path / "root"
    _touch(root / "r.png")
    for name in ("b", "c"):
        (root / name).symlink_to(tmp_path / "outside", target_is_directory=True)
    result = scan_root(str(root), ScanOptions(follow_symlinks=True))
    assert _relative(result, root) == ["r.png", "b/o.png"]
    assert result.skipped == [(str(root / "c"), _TWICE)]


def test_unlistable_root_is_reported_not_raised(tmp_path: Path) -> None:
    """A root that vanished (an unmounted drive) lists nothing and is reported as unlisted."""
    result = scan_root(str(tmp_path / "gone"), ScanOptions())
    assert result.files == []
    assert [path for path, _ in result.unlisted] == [str(tmp_path / "gone")]


# --- check_roots -----------------------------------------------------------------------------------


def test_missing_root_is_refused(tmp_path: Path) -> None:
    """A root that does not exist is refused, naming it."""
    with pytest.raises(IndexRootError, match="does not exist") as caught:
        check_roots([str(tmp_path / "nope")])
    assert str(tmp_path / "nope") in str(caught.value)


def test_file_root_is_refused(tmp_path: Path) -> None:
    """A root that is a file is refused as not a folder."""
    with pytest.raises(IndexRootError, match="is not a folder"):
        check_roots([str(_touch(tmp_path / "photo.png"))])


def test_roots_are_absolute_unique_and_nested_ones_folded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative roots become absolute, duplicates go, a root inside another is dropped, and a sibling whose
    name merely starts with another root's name is kept."""
    for folder in ("photos/2020/trip", "photos2", "other"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    roots = check_roots(["photos/2020", "photos", str(tmp_path / "photos") + "/", "photos2", "other", "other"])
    assert roots == [str(tmp_path / "other"), str(tmp_path / "photos"), str(tmp_path / "photos2")]


# --- plan_changes ----------------------------------------------------------------------------------


def _state(id_: int, path: str, size: int = 10, mtime_ns: int = 100, error: str | None = None) -> ImageRecord:
    return ImageRecord(
        path=path,
        size=size,
        mtime_ns=mtime_ns,
        content_hash="h" * 64,
        id=id_,
        has_vector=error is None,
        error=error,
        indexed_at=datetime(2024, 1, 1),
    )


def test_plan_classifies_new_changed_unchanged_gone() -> None:
    """Against stored states: unknown paths are new, a different size or mtime is changed, equal stat is
    unchanged, and stored paths missing from the disk are gone."""
    scan = ScanResult(
        files=[
            DiskFile("/r/new.png", 10, 100),
            DiskFile("/r/same.png", 10, 100),
            DiskFile("/r/mtime.png", 10, 200),
            DiskFile("/r/size.png", 11, 100),
        ]
    )
    known = {s.path: s for s in (_state(1, "/r/same.png"), _state(2, "/r/mtime.png"), _state(3, "/r/size.png"))}
    known["/r/deleted.png"] = _state(4, "/r/deleted.png")
    plan = plan_changes(scan, known)
    assert [d.path for d in plan.new] == ["/r/new.png"]
    assert [(d.path, s.id) for d, s in plan.changed] == [("/r/mtime.png", 2), ("/r/size.png", 3)]
    assert plan.unchanged == 1
    assert [s.id for s in plan.gone] == [4]


def test_failed_unchanged_files_are_retried_only_when_asked() -> None:
    """A file that failed before and did not change is left alone, unless retry_errors is set."""
    scan = ScanResult(files=[DiskFile("/r/broken.png", 10, 100), DiskFile("/r/good.png", 10, 100)])
    known = {"/r/broken.png": _state(1, "/r/broken.png", error="truncated"), "/r/good.png": _state(2, "/r/good.png")}
    quiet = plan_changes(scan, known)
    assert (quiet.changed, quiet.unchanged) == ([], 2)
    retry = plan_changes(scan, known, retry_errors=True)
    assert [(d.path, s.id) for d, s in retry.changed] == [("/r/broken.png", 1)]
    assert retry.unchanged == 1


def test_unlisted_folders_and_files_protect_their_rows() -> None:
    """Rows under a folder that could not be listed, or of a file that could not be stat'ed, are not gone;
    a sibling folder sharing the name's prefix is not protected."""
    scan = ScanResult(unlisted=[("/r/locked", "Permission denied"), ("/r/flaky.png", "Input/output error")])
    known = {
        path: _state(i, path)
        for i, path in enumerate(["/r/locked/a.png", "/r/locked/deep/b.png", "/r/flaky.png", "/r/locked2/c.png"])
    }
    plan = plan_changes(scan, known)
    assert [s.path for s in plan.gone] == ["/r/locked2/c.png"]


def test_vanished_root_does_not_empty_the_library(tmp_path: Path) -> None:
    """Scanning a root that disappeared plans no deletions for the rows stored under it."""
    root = tmp_path / "drive"
    known = {str(root / "a.png"): _state(1, str(root / "a.png"))}
    plan = plan_changes(scan_root(str(root), ScanOptions()), known)
    assert (plan.new, plan.changed, plan.gone) == ([], [], [])


# --- find_reuse against a real store ---------------------------------------------------------------


def _index(store: Store, *paths: Path) -> dict[str, int]:
    """Store each file as indexed: its real stat and content hash, and a hand-made unit vector."""
    ids = {}
    with store.writer() as writer:
        for seed, path in enumerate(paths):
            stat = path.stat()
            meta = FileMetadata(str(path), stat.st_size, stat.st_mtime_ns, hash_file(str(path)))
            ids[path.name] = writer.upsert_image(meta, unit_vectors(1, seed, DIM)[0], "test-model")
    return ids


def _reuse(root: Path, store: Store) -> Reuse:
    """Scan `root`, plan against the store's rows under it, and look for reusable vectors."""
    plan = plan_changes(scan_root(str(root), ScanOptions()), store.file_states_under(str(root)))
    return find_reuse(plan, store, workers=2)


def _paths(files: list[DiskFile]) -> list[str]:
    return [os.path.basename(f.path) for f in files]


def test_touched_file_keeps_its_vector_but_rewritten_one_is_embedded(tmp_path: Path, library: Library) -> None:
    """A file whose mtime changed but whose bytes did not is 'touched'; one rewritten with other bytes of
    the same size, or with another size, goes to embedding."""
    root = tmp_path / "photos"
    touched = _touch(root / "touched.png", b"A" * 100)
    rewritten = _touch(root / "rewritten.png", b"B" * 100)
    resized = _touch(root / "resized.png", b"C" * 100)
    ids = _index(library.store, touched, rewritten, resized)
    stored_mtime = {path: path.stat().st_mtime_ns for path in (touched, rewritten, resized)}
    touched.write_bytes(b"A" * 100)
    rewritten.write_bytes(b"b" * 100)
    resized.write_bytes(b"C" * 101)
    for path, mtime_ns in stored_mtime.items():  # a later mtime even where the clock is coarse
        os.utime(path, ns=(mtime_ns + 10**9, mtime_ns + 10**9))

    reuse = _reuse(root, library.store)
    assert [(d.path, s.id) for d, s in reuse.touched] == [(str(touched), ids["touched.png"])]
    assert reuse.touched[0][0].mtime_ns == touched.stat().st_mtime_ns
    assert _paths(reuse.to_embed) == ["resized.png", "rewritten.png"]
    assert (reuse.moved, reuse.copied, reuse.gone) == ([], [], [])


def test_moved_when_donor_vanished_copied_when_donor_remains(tmp_path: Path, library: Library) -> None:
    """A new file with the bytes of a stored file is a move when the stored path no longer exists (the
    donor leaves `gone`) and a copy when it still does (the donor stays)."""
    root = tmp_path / "photos"
    old = _touch(root / "old.png", b"M" * 64)
    original = _touch(root / "original.png", b"C" * 80)
    ids = _index(library.store, old, original)
    (root / "sub").mkdir()
    old.rename(root / "sub" / "renamed.png")
    duplicate = _touch(root / "duplicate.png", original.read_bytes())

    reuse = _reuse(root, library.store)
    assert [(d.path, s.id) for d, s in reuse.moved] == [(str(root / "sub" / "renamed.png"), ids["old.png"])]
    assert [(d.path, s.id, digest) for d, s, digest in reuse.copied] == [
        (str(duplicate), ids["original.png"], hash_file(str(original)))
    ]
    assert reuse.gone == []
    assert reuse.to_embed == []


def test_two_copies_of_one_vanished_file_give_one_move_and_one_copy(tmp_path: Path, library: Library) -> None:
    """When a stored file vanished and two new files carry its bytes, one takes the row over (moved) and
    the other copies its vector; the vanished row is not deleted."""
    root = tmp_path / "photos"
    vanished = _touch(root / "vanished.png", b"V" * 50)
    ids = _index(library.store, vanished)
    data = vanished.read_bytes()
    vanished.unlink()
    first, second = _touch(root / "a.png", data), _touch(root / "b.png", data)

    reuse = _reuse(root, library.store)
    assert [(d.path, s.id) for d, s in reuse.moved] == [(str(first), ids["vanished.png"])]
    assert [(d.path, s.id) for d, s, _ in reuse.copied] == [(str(second), ids["vanished.png"])]
    assert reuse.gone == []
    assert reuse.to_embed == []


def test_unclaimed_gone_rows_stay_gone(tmp_path: Path, library: Library) -> None:
    """Only gone rows that a move claimed leave `gone`; a deleted file with no successor stays there."""
    root = tmp_path / "photos"
    moved, deleted = _touch(root / "moved.png", b"1" * 30), _touch(root / "deleted.png", b"2" * 40)
    ids = _index(library.store, moved, deleted)
    moved.rename(root / "moved-again.png")
    deleted.unlink()

    reuse = _reuse(root, library.store)
    assert [s.id for _, s in reuse.moved] == [ids["moved.png"]]
    assert [s.id for s in reuse.gone] == [ids["deleted.png"]]


def test_new_files_without_a_matching_donor_are_embedded(tmp_path: Path, library: Library) -> None:
    """A new file whose size matches no stored row, one whose size matches but bytes differ, and one
    matching only a failed (vector-less) row all go to embedding, in path order."""
    root = tmp_path / "photos"
    stored = _touch(root / "stored.png", b"S" * 70)
    _index(library.store, stored)
    failed_hash = hash_file(str(_touch(tmp_path / "elsewhere.bin", b"F" * 90)))
    with library.store.writer() as writer:
        writer.record_failure(str(root / "failed.png"), 90, 1, "truncated", failed_hash)
    _touch(root / "c-other-size.png", b"S" * 71)
    _touch(root / "b-same-size.png", b"T" * 70)
    _touch(root / "a-like-failed.png", b"F" * 90)

    reuse = _reuse(root, library.store)
    assert _paths(reuse.to_embed) == ["a-like-failed.png", "b-same-size.png", "c-other-size.png"]
    assert (reuse.moved, reuse.copied, reuse.touched) == ([], [], [])
    assert [s.path for s in reuse.gone] == [str(root / "failed.png")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_hashing_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A file swapped for a FIFO or a device link after the scan gives no hash (the decoder then records
    why) instead of blocking forever or hashing /dev/zero without end; a link is refused when not followed."""
    os.mkfifo(tmp_path / "x.jpg")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "alias.png").symlink_to(_touch(tmp_path / "real.png", b"abc"))
    assert within(20, lambda: hash_file(str(tmp_path / "x.jpg")), unblock=[tmp_path / "x.jpg"]) is None
    assert within(20, lambda: hash_file(str(tmp_path / "zero.png"))) is None
    assert hash_file(str(tmp_path / "alias.png"), follow_symlinks=False) is None
    assert hash_file(str(tmp_path / "alias.png")) == hash_file(str(tmp_path / "real.png")) == hash_bytes(b"abc")
