"""Tests of retrieval.served_files on a real library (tiny model, Pillow images): an id's file is handed out
only while it is the indexed file, a regular file, inside the resolved roots; the attacks a server meets
(ids that do not exist, links out of the roots, a FIFO, files gone or changed, a forgotten root) are refused
with typed errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from indexer.roots import forget_folder
from retrieval.errors import FileNotServedError, UnknownImageError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.served_files import checked_file, read_served, served_path
from retrieval.storage import roots as roots_table
from retrieval.storage.records import ImageRecord
from tests import imagefactory
from tests.servedlib import index, same_stat_copy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two PNGs at the top, one in trip/, and a truncated JPEG that the indexer records as failed."""
    folder = tmp_path / "photos"
    imagefactory.pattern_png(folder / "a.png", seed=1)
    imagefactory.pattern_png(folder / "b.png", seed=2)
    imagefactory.pattern_png(folder / "trip" / "c.png", seed=3)
    imagefactory.truncated_jpeg(folder / "broken.jpg")
    return folder


@pytest.fixture
def indexed(library: Library, tiny_encoder: Encoder, root: Path) -> dict[str, ImageRecord]:
    return index(library, tiny_encoder, root)


def test_an_indexed_file_is_served_at_its_resolved_path(library: Library, indexed: dict[str, ImageRecord]) -> None:
    record, path = served_path(library, indexed["trip/c.png"].id)
    assert record == indexed["trip/c.png"]
    assert path == Path(os.path.realpath(record.path))
    assert path.read_bytes() == Path(record.path).read_bytes()


@pytest.mark.parametrize("image_id", [0, -1, -(2**63), 10**6, 2**63, 2**70, True])
def test_ids_that_no_image_has_are_unknown(library: Library, indexed: dict[str, ImageRecord], image_id: int) -> None:
    with pytest.raises(UnknownImageError, match="`image_id`") as caught:
        served_path(library, image_id)
    assert caught.value.parameters == ("image_id",)


def test_a_failed_row_is_unknown_and_says_why(library: Library, indexed: dict[str, ImageRecord]) -> None:
    failed = indexed["broken.jpg"]
    assert not failed.has_vector
    with pytest.raises(UnknownImageError, match="could not be read when it was indexed: truncated"):
        served_path(library, failed.id)


def test_a_file_replaced_by_a_link_to_etc_passwd_is_not_served(
    library: Library, indexed: dict[str, ImageRecord], root: Path
) -> None:
    (root / "a.png").unlink()
    (root / "a.png").symlink_to("/etc/passwd")
    with pytest.raises(FileNotServedError, match="leads to /etc/passwd, outside the library's roots"):
        served_path(library, indexed["a.png"].id)


def test_a_link_to_an_identical_file_outside_the_roots_is_not_served(
    library: Library, indexed: dict[str, ImageRecord], root: Path, tmp_path: Path
) -> None:
    """Same bytes, size and mtime outside: only the roots check can refuse it, and does."""
    outside = same_stat_copy(root / "a.png", tmp_path / "elsewhere" / "a.png")
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(outside)
    with pytest.raises(FileNotServedError, match="outside the library's roots"):
        served_path(library, indexed["a.png"].id)


def test_a_folder_swapped_for_a_link_leading_out_of_the_root_is_not_served(
    library: Library, indexed: dict[str, ImageRecord], root: Path, tmp_path: Path
) -> None:
    same_stat_copy(root / "trip" / "c.png", tmp_path / "secret" / "c.png")
    shutil.rmtree(root / "trip")
    (root / "trip").symlink_to(tmp_path / "secret", target_is_directory=True)
    with pytest.raises(FileNotServedError, match="outside the library's roots"):
        served_path(library, indexed["trip/c.png"].id)


def test_links_inside_the_root_and_a_root_reached_through_a_link_are_served(
    library: Library,
    tiny_encoder: Encoder,
    root: Path,
    tmp_path: Path,
) -> None:
    """The root is indexed through a link to it (the recorded root is the link); the resolved file and the
    resolved root agree, so its images are served; a link from one file to another inside the root too."""
    linked_root = tmp_path / "link-to-photos"
    linked_root.symlink_to(root, target_is_directory=True)
    records = index(library, tiny_encoder, linked_root)
    assert served_path(library, records["a.png"].id)[1] == root / "a.png"
    same_stat_copy(root / "b.png", root / "trip" / "b-copy.png")
    (root / "b.png").unlink()
    (root / "b.png").symlink_to(root / "trip" / "b-copy.png")
    assert served_path(library, records["b.png"].id)[1] == root / "trip" / "b-copy.png"


def test_a_fifo_in_place_of_the_file_is_not_served(
    library: Library, indexed: dict[str, ImageRecord], root: Path
) -> None:
    (root / "b.png").unlink()
    os.mkfifo(root / "b.png")
    with pytest.raises(FileNotServedError, match="not a regular file but a FIFO"):
        served_path(library, indexed["b.png"].id)


def test_a_file_deleted_after_indexing_is_not_served(
    library: Library, indexed: dict[str, ImageRecord], root: Path
) -> None:
    (root / "b.png").unlink()
    with pytest.raises(FileNotServedError, match=r"it is gone .*re-index its folder"):
        served_path(library, indexed["b.png"].id)


@pytest.mark.parametrize("change", ["content", "mtime"])
def test_a_file_changed_since_indexing_is_not_served(
    library: Library, indexed: dict[str, ImageRecord], root: Path, change: str
) -> None:
    path = root / "b.png"
    if change == "content":
        with open(path, "ab") as handle:
            handle.write(b"more")
    else:
        os.utime(path, ns=(0, path.stat().st_mtime_ns + 1))
    with pytest.raises(FileNotServedError, match="changed since it was indexed; re-index its folder"):
        served_path(library, indexed["b.png"].id)


def test_the_images_of_a_forgotten_root_are_unknown(
    library: Library, indexed: dict[str, ImageRecord], root: Path
) -> None:
    forget_folder(library, str(root))
    with pytest.raises(UnknownImageError):
        served_path(library, indexed["a.png"].id)


def test_images_no_recorded_root_holds_are_held_to_their_own_folder(
    library: Library, indexed: dict[str, ImageRecord], root: Path, tmp_path: Path
) -> None:
    """A library indexed before roots were recorded: its images are served from their own folder, and a link
    out of that folder is refused even when the file it leads to looks the same."""
    with library.store.writer() as writer:
        roots_table.forget_roots(writer.session, str(root))
    assert library.store.root_paths() == []
    assert served_path(library, indexed["trip/c.png"].id)[1] == root / "trip" / "c.png"
    outside = same_stat_copy(root / "a.png", tmp_path / "a.png")
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(outside)
    with pytest.raises(FileNotServedError, match=f"outside the library's roots \\({root}\\)"):
        served_path(library, indexed["a.png"].id)


def test_read_served_refuses_a_file_swapped_after_the_check(
    library: Library, indexed: dict[str, ImageRecord], root: Path, tmp_path: Path
) -> None:
    """Between the check and the read, the file becomes a link (a race): the read refuses it."""
    record = indexed["a.png"]
    path = checked_file(record, library.store.root_paths())
    assert read_served(record, path) == path.read_bytes()
    outside = same_stat_copy(path, tmp_path / "swapped.png")
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(FileNotServedError, match="symbolic link not followed"):
        read_served(record, path)
    for content in (b"short", bytes(record.size)):  # another size; the same size, other bytes
        path.unlink()
        path.write_bytes(content)
        with pytest.raises(FileNotServedError, match="changed since it was indexed"):
            read_served(record, path)
