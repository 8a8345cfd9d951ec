"""Tests of retrieval.thumbnails on a real library (tiny model, Pillow images): sizes, orientation and odd
modes; the cache on disk (reused without decoding, across moves, checked and remade when damaged, safe under
concurrent makers); prune; prepare; file modes; a library folder that cannot be written."""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from retrieval.config import THUMBNAIL_CACHE_ENV, THUMBNAIL_FOLDER, THUMBNAIL_SIZE
from retrieval.errors import FileNotServedError, InvalidQueryError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.served_files import served_path
from retrieval.storage.records import ImageRecord
from retrieval.thumbnails import ThumbnailCache
from tests import imagefactory
from tests.retrieval.storage.test_opening import _NOBODY, _as_nobody, read_only_library, shared_folder
from tests.servedlib import index

pytestmark = pytest.mark.usefixtures("one_torch_thread")
__all__ = ["read_only_library", "shared_folder"]  # fixtures shared with the read-only store tests


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A 4000x3000 JPEG, a PNG, an EXIF-rotated JPEG, odd modes, a panorama, and two unreadable files."""
    folder = tmp_path / "photos"
    imagefactory.large_jpeg(folder / "big.jpg", size=(4000, 3000))
    imagefactory.pattern_png(folder / "small.png", seed=1, size=(200, 100))
    imagefactory.jpeg_with_exif(folder / "rotated.jpg", orientation=6, size=(800, 400))
    imagefactory.cmyk_jpeg(folder / "cmyk.jpg", size=(400, 400))
    imagefactory.png_16bit_grey(folder / "grey16.png", value=32768, size=(400, 400))
    imagefactory.palette_png_with_transparency(folder / "palette.png", size=(400, 400))
    Image.new("LA", (400, 400), (0, 0)).save(folder / "clear.png")
    Image.new("RGB", (6000, 150), (0, 128, 0)).save(folder / "panorama.png")
    imagefactory.huge_dimensions_png(folder / "bomb.png")
    imagefactory.truncated_jpeg(folder / "broken.jpg")
    return folder


@pytest.fixture
def indexed(library: Library, tiny_encoder: Encoder, root: Path) -> dict[str, ImageRecord]:
    return index(library, tiny_encoder, root)


@pytest.fixture
def cache(library: Library, tmp_path: Path) -> Iterator[ThumbnailCache]:
    with ThumbnailCache(library.directory, library=library, fallback_dir=tmp_path / "user-cache") as made:
        yield made


def _thumbnail(cache: ThumbnailCache, library: Library, record: ImageRecord, size: int = THUMBNAIL_SIZE) -> Image.Image:
    path = cache.path_for(served_path(library, record.id)[0], size)
    with Image.open(path) as image:
        image.load()
        return image


def test_a_large_photo_becomes_a_320_pixel_jpeg_named_by_its_content(
    library: Library, indexed: dict[str, ImageRecord], cache: ThumbnailCache
) -> None:
    record = indexed["big.jpg"]
    path = cache.path_for(record)
    digest = record.content_hash or ""
    assert path == library.directory / THUMBNAIL_FOLDER / digest[:2] / f"{digest}-{THUMBNAIL_SIZE}.jpg"
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (320, 240))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_sizes_orientation_and_odd_modes(
    library: Library, indexed: dict[str, ImageRecord], cache: ThumbnailCache
) -> None:
    """Upright as a viewer shows it (red was stored on the left, orientation 6 turns it to the top); CMYK,
    16-bit grey, palette transparency and alpha come out as the decoder's RGB (transparency on white); a small
    image is not enlarged; a panorama keeps its shape."""
    rotated = _thumbnail(cache, library, indexed["rotated.jpg"])
    assert rotated.size == (160, 320)
    assert _near(rotated.getpixel((80, 40)), (255, 0, 0)) and _near(rotated.getpixel((80, 280)), (0, 0, 255))
    assert _near(_thumbnail(cache, library, indexed["cmyk.jpg"]).getpixel((100, 100)), (255, 0, 0))
    assert _near(_thumbnail(cache, library, indexed["grey16.png"]).getpixel((100, 100)), (128, 128, 128))
    palette = _thumbnail(cache, library, indexed["palette.png"])
    assert _near(palette.getpixel((40, 160)), (255, 255, 255)) and _near(palette.getpixel((280, 160)), (255, 0, 0))
    assert _near(_thumbnail(cache, library, indexed["clear.png"]).getpixel((5, 5)), (255, 255, 255))
    assert _thumbnail(cache, library, indexed["small.png"]).size == (200, 100)
    assert _thumbnail(cache, library, indexed["panorama.png"]).size == (320, 8)
    assert _thumbnail(cache, library, indexed["big.jpg"], size=64).size == (64, 48)


def _near(pixel: object, expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def test_a_cached_thumbnail_is_reused_without_reading_the_photo(
    indexed: dict[str, ImageRecord], cache: ThumbnailCache, root: Path, tmp_path: Path
) -> None:
    """The second call neither rewrites the file nor reads the photo (here gone: a read would fail), even from
    another cache (another server process)."""
    record = indexed["big.jpg"]
    first = cache.path_for(record)
    written = first.stat()
    (root / "big.jpg").unlink()
    for again in (cache, ThumbnailCache(first.parents[2], library=None, fallback_dir=tmp_path / "x")):
        assert again.path_for(record) == first
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_a_moved_photo_keeps_its_thumbnail_and_etag(
    library: Library,
    indexed: dict[str, ImageRecord],
    cache: ThumbnailCache,
    tiny_encoder: Encoder,
    root: Path,
) -> None:
    before = indexed["big.jpg"]
    path = cache.path_for(before)
    inode = path.stat().st_ino
    (root / "trip").mkdir()
    (root / "big.jpg").rename(root / "trip" / "moved.jpg")
    after = index(library, tiny_encoder, root)["trip/moved.jpg"]
    assert after.path != before.path and after.content_hash == before.content_hash
    assert cache.path_for(after) == path and path.stat().st_ino == inode
    assert cache.etag(after) == cache.etag(before) != cache.etag(before, 64)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "not ours"])
def test_a_damaged_cached_file_is_made_again(
    indexed: dict[str, ImageRecord], cache: ThumbnailCache, damage: str
) -> None:
    record = indexed["big.jpg"]
    path = cache.path_for(record)
    whole = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "flipped byte":
        middle = len(whole) // 2
        path.write_bytes(whole[:middle] + bytes([whole[middle] ^ 0xFF]) + whole[middle + 1 :])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a plain JPEG of another picture, without our stamp
        Image.new("RGB", (320, 240), (9, 9, 9)).save(path, "JPEG")
    assert cache.path_for(record) == path
    assert path.read_bytes() == whole


def test_concurrent_makers_leave_one_whole_file(indexed: dict[str, ImageRecord], library: Library) -> None:
    """Eight caches (as eight server processes would, each with its own locks) make the same thumbnail at
    once: every one gets the same whole file, and no temporary file is left behind."""
    record = indexed["big.jpg"]
    caches = [ThumbnailCache(library.directory, library=library) for _ in range(8)]
    start, found = threading.Barrier(len(caches)), []

    def make(cache: ThumbnailCache) -> None:
        start.wait()
        found.append(cache.path_for(record))

    threads = [threading.Thread(target=make, args=(cache,)) for cache in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found) == 8
    assert os.listdir(found[0].parent) == [found[0].name]
    with Image.open(found[0]) as image:
        image.load()
        assert image.size == (320, 240)


def test_prune_removes_thumbnails_no_image_has_any_more(
    library: Library,
    indexed: dict[str, ImageRecord],
    cache: ThumbnailCache,
    tiny_encoder: Encoder,
    root: Path,
) -> None:
    kept, gone = cache.path_for(indexed["big.jpg"]), cache.path_for(indexed["small.png"])
    other_size = cache.path_for(indexed["small.png"], 64)
    assert cache.prune(library.store) == 0
    (root / "small.png").unlink()
    index(library, tiny_encoder, root)
    assert cache.prune(library.store) == 2
    assert kept.exists() and not gone.exists() and not other_size.exists()
    assert cache.prune(library.store) == 0


def test_prepare_makes_the_missing_ones_and_names_the_failures(
    library: Library, indexed: dict[str, ImageRecord], cache: ThumbnailCache, root: Path
) -> None:
    ids = [indexed[name].id for name in ("big.jpg", "small.png", "cmyk.jpg", "broken.jpg")]
    cache.path_for(indexed["big.jpg"])
    (root / "cmyk.jpg").unlink()
    report = cache.prepare([*ids, 10**9], workers=2)
    assert (report.made, report.cached) == (1, 1)
    assert set(report.failed) == {indexed["cmyk.jpg"].id, indexed["broken.jpg"].id, 10**9}
    assert "it is gone" in report.failed[indexed["cmyk.jpg"].id]
    assert (report := cache.prepare(ids[:2])).cached == 2 and report.made == 0


def test_a_file_not_served_gets_no_thumbnail(
    indexed: dict[str, ImageRecord], cache: ThumbnailCache, root: Path
) -> None:
    (root / "small.png").unlink()
    (root / "small.png").symlink_to("/etc/passwd")
    with pytest.raises(FileNotServedError, match="outside the library's roots"):
        cache.path_for(indexed["small.png"])


@pytest.mark.parametrize("size", [0, 15, 1025, 10**9, -320, True])
def test_a_size_out_of_range_is_refused(indexed: dict[str, ImageRecord], cache: ThumbnailCache, size: int) -> None:
    with pytest.raises(InvalidQueryError, match="`size`") as caught:
        cache.path_for(indexed["big.jpg"], size)
    assert caught.value.parameters == ("size",)


def test_a_record_without_a_hash_is_named_by_its_bytes_and_a_malformed_hash_is_refused(
    library: Library, indexed: dict[str, ImageRecord], cache: ThumbnailCache, tmp_path: Path
) -> None:
    """A stored hash that is missing names the thumbnail by the file's own SHA-256; one that is not the file's
    hash (here a path) is refused, and never becomes part of a path."""
    record = indexed["small.png"]
    path = cache.path_for(dataclasses.replace(record, content_hash=None))
    assert path == cache.path_for(record)
    assert path.parent.parent == library.directory / THUMBNAIL_FOLDER
    before = sorted(tmp_path.rglob("*"))
    for stored_hash in ("../../../../escape", "ABCDEF0123456789"):
        with pytest.raises(FileNotServedError, match="changed since it was indexed"):
            cache.path_for(dataclasses.replace(record, content_hash=stored_hash))
    assert sorted(tmp_path.rglob("*")) == before


def test_a_file_swapped_with_its_size_and_mtime_kept_is_refused_and_a_bomb_is_not_decoded(
    library: Library, indexed: dict[str, ImageRecord], cache: ThumbnailCache, root: Path, tmp_path: Path
) -> None:
    """The photo becomes a decompression bomb (a PNG header claiming 20000x20000) padded to the same size,
    with the same mtime: the content hash refuses it; for a record without a hash the decoder's pixel limit
    refuses it, before any pixel is allocated."""
    record, path = indexed["big.jpg"], root / "big.jpg"
    mtime_ns = path.stat().st_mtime_ns
    bomb = imagefactory.huge_dimensions_png(tmp_path / "bomb.png").read_bytes()
    padding = b"x" * (record.size - len(bomb) - 12)
    chunk = struct.pack(">I", len(padding)) + b"clPd" + padding + struct.pack(">I", zlib.crc32(b"clPd" + padding))
    path.write_bytes(bomb[:-12] + chunk + bomb[-12:])
    os.utime(path, ns=(mtime_ns, mtime_ns))
    assert served_path(library, record.id)[0] == record  # size and mtime alone let it through
    with pytest.raises(FileNotServedError, match="changed since it was indexed"):
        cache.path_for(record)
    with pytest.raises(FileNotServedError, match="cannot be decoded: image too large"):
        cache.path_for(dataclasses.replace(record, content_hash=None))


def test_a_library_folder_that_cannot_hold_thumbnails_uses_the_fallback(
    library: Library, indexed: dict[str, ImageRecord], tmp_path: Path
) -> None:
    """The thumbnails folder cannot be made (a file is in its place): the per-user folder takes them, 0600 in
    0700; where that cannot be written either, a private temporary folder, removed by `close`."""
    (library.directory / THUMBNAIL_FOLDER).write_bytes(b"in the way")
    with ThumbnailCache(library.directory, library=library, fallback_dir=tmp_path / "user-cache") as cache:
        path = cache.path_for(indexed["big.jpg"])
        assert path.is_relative_to(tmp_path / "user-cache")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (tmp_path / "blocked").write_bytes(b"")
    with ThumbnailCache(library.directory, library=library, fallback_dir=tmp_path / "blocked") as cache:
        path = cache.path_for(indexed["big.jpg"])
        temporary = path.parents[1]
        assert temporary.name.startswith("clipsearch-thumbnails-")
        assert stat.S_IMODE(temporary.stat().st_mode) == 0o700
        assert cache.path_for(indexed["big.jpg"]) == path
    assert not temporary.exists()


@pytest.mark.slow
def test_a_read_only_library_keeps_its_thumbnails_in_the_users_cache(
    read_only_library: Path, shared_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user who may read the library but not write it (`nobody`; root ignores permission bits): the
    thumbnail is made into the per-user cache folder (`CLIPSEARCH_CACHE` here), private, found there again by
    a second cache; the library folder gains nothing."""
    home = shared_folder / "home"
    home.mkdir()
    os.chown(home, _NOBODY, _NOBODY)
    monkeypatch.setenv(THUMBNAIL_CACHE_ENV, str(home / "thumbnails"))
    before = sorted(p.name for p in read_only_library.iterdir())

    def as_reader() -> dict[str, object]:
        with Library(read_only_library) as library:
            record, _ = served_path(library, 1)
            with ThumbnailCache(library.directory, library=library) as cache:
                path = cache.path_for(record)
            with ThumbnailCache(library.directory, library=library) as again:
                same = again.path_for(record) == path
            modes = [stat.S_IMODE(p.stat().st_mode) for p in (path, path.parent, path.parent.parent)]
            return {"path": str(path), "same": same, "modes": modes, "owner": path.stat().st_uid}

    seen = _as_nobody(as_reader)
    assert Path(str(seen["path"])).is_relative_to(home / "thumbnails")
    assert seen["same"] and seen["modes"] == [0o600, 0o700, 0o700] and seen["owner"] == _NOBODY
    assert sorted(p.name for p in read_only_library.iterdir()) == before


_MAKER = """
import sys, time
from pathlib import Path
from retrieval.library import Library
from retrieval.served_files import served_path
from retrieval.thumbnails import ThumbnailCache
folder, image_id, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
with Library(folder) as library, ThumbnailCache(folder, library=library) as cache:
    record, _ = served_path(library, image_id)
    while not go.exists():
        time.sleep(0.005)
    print(cache.path_for(record))
"""


@pytest.mark.slow
def test_processes_making_the_same_thumbnail_at_once_leave_one_whole_file(
    library: Library, indexed: dict[str, ImageRecord], tmp_path: Path
) -> None:
    """Four processes, started together once each has its record, make one thumbnail: each renames a whole
    file into place, all name the same path, and it is one whole thumbnail with no temporary file beside it."""
    go = tmp_path / "go"
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    arguments = [sys.executable, "-c", _MAKER, str(library.directory), str(indexed["big.jpg"].id), str(go)]
    makers = [subprocess.Popen(arguments, stdout=subprocess.PIPE, text=True, env=environment) for _ in range(4)]
    time.sleep(0.5)
    go.touch()
    paths = {maker.communicate(timeout=120)[0].strip() for maker in makers}
    assert [maker.returncode for maker in makers] == [0, 0, 0, 0]
    assert len(paths) == 1
    made = Path(paths.pop())
    assert os.listdir(made.parent) == [made.name]
    with Image.open(made) as image:
        image.load()
        assert image.size == (320, 240)
