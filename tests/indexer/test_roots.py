"""Recorded roots and forgetting a folder (`indexer.roots`), on real libraries and the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from indexer.pipeline import index_folders
from indexer.roots import forget_folder, list_roots
from indexer.scan import ScanOptions
from retrieval.errors import UnknownFolderError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.storage.migrations import _RECORDED
from retrieval.storage.store import Store
from tests import imagefactory as factory
from tests.libcheck import assert_index_matches_store, stored_rows

PHOTO_COUNT = 13  # the `photos` fixture: 10 PNGs at the top, trip/ with 2 PNGs and an EXIF JPEG


def _index(library: Library, encoder: Encoder, *folders: Path, **options: object) -> None:
    index_folders(library, encoder, [str(f) for f in folders], options=ScanOptions(**options), workers=1)  # type: ignore[arg-type]


def test_an_index_run_records_its_root_with_counts_times_and_options(
    library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    """One root, its live counts (a truncated file counts as unreadable), the scan options as JSON."""
    factory.truncated_jpeg(photos / "broken.jpg")
    _index(library, tiny_encoder, photos, exclude=("*.tmp",))
    listing = list_roots(library)
    assert [(r.path, r.images, r.failed) for r in listing.roots] == [(str(photos), PHOTO_COUNT, 1)]
    root = listing.roots[0]
    assert root.first_indexed_at == root.last_indexed_at
    assert json.loads(root.options) == {"exclude": ["*.tmp"], "follow_symlinks": False, "include_hidden": False}
    assert listing.unrooted == 0

    _index(library, tiny_encoder, photos)
    again = list_roots(library).roots[0]
    assert again.first_indexed_at == root.first_indexed_at and again.last_indexed_at > root.last_indexed_at


def test_a_subfolder_run_is_part_of_its_root_and_a_parent_run_absorbs_roots(
    library: Library, tiny_encoder: Encoder, photos: Path, tmp_path: Path
) -> None:
    """Indexing trip/ under the recorded root records no new root and leaves the root's last index time;
    indexing the folder above the root makes it the one root."""
    _index(library, tiny_encoder, photos)
    root = list_roots(library).roots[0]
    factory.pattern_png(photos / "trip" / "new.png", seed=77)
    _index(library, tiny_encoder, photos / "trip")
    after = list_roots(library).roots
    assert [(r.path, r.images, r.last_indexed_at) for r in after] == [
        (str(photos), PHOTO_COUNT + 1, root.last_indexed_at)
    ]

    _index(library, tiny_encoder, tmp_path)
    assert [r.path for r in list_roots(library).roots] == [str(tmp_path)]


def test_forget_a_root_removes_its_rows_and_vectors_in_one_generation(
    library: Library, tiny_encoder: Encoder, photos: Path, tmp_path: Path
) -> None:
    """Two roots; forgetting one removes every row under it (failed ones too), bumps the generation once,
    leaves the other root whole and the FAISS file matching the store."""
    other = tmp_path / "other"
    for seed in range(3):
        factory.pattern_png(other / f"o{seed}.png", seed=100 + seed)
    factory.truncated_jpeg(photos / "broken.jpg")
    _index(library, tiny_encoder, photos, other)
    generation = library.store.generation()

    report = forget_folder(library, str(photos))

    assert (report.images, report.failed, report.roots, report.dry_run) == (PHOTO_COUNT, 1, [str(photos)], False)
    assert library.store.generation() == generation + 1
    assert sorted(stored_rows(library)) == sorted(str(p) for p in other.iterdir())
    assert [r.path for r in list_roots(library).roots] == [str(other)]
    assert library.index_path(generation + 1).exists() and not library.index_path(generation).exists()
    assert_index_matches_store(library)


def test_forget_a_subfolder_keeps_the_root_and_recounts_it(
    library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    _index(library, tiny_encoder, photos)
    report = forget_folder(library, str(photos / "trip"))
    assert (report.images, report.roots) == (3, [])
    assert [(r.path, r.images) for r in list_roots(library).roots] == [(str(photos), PHOTO_COUNT - 3)]
    with library.store.engine.connect() as conn:  # the stored snapshot of the counts follows too
        assert conn.execute(sa.text("SELECT images FROM roots")).scalar() == PHOTO_COUNT - 3
    assert_index_matches_store(library)


def test_forget_works_for_a_folder_gone_from_disk(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """An unmounted or deleted root can still be forgotten: nothing is read from disk."""
    _index(library, tiny_encoder, photos)
    shutil.rmtree(photos)
    assert forget_folder(library, str(photos)).images == PHOTO_COUNT
    assert library.store.count_vectors() == 0 and list_roots(library).roots == []
    assert_index_matches_store(library)


def test_forget_dry_run_changes_nothing(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    _index(library, tiny_encoder, photos)
    generation, rows = library.store.generation(), stored_rows(library)
    report = forget_folder(library, str(photos / "trip"), dry_run=True)
    assert (report.images, report.dry_run) == (3, True)
    assert library.store.generation() == generation and stored_rows(library) == rows


@pytest.mark.parametrize("where", ["elsewhere", "photos/nothing-here", "photo"])
def test_forget_refuses_a_folder_that_is_no_root_and_holds_nothing(
    library: Library, tiny_encoder: Encoder, photos: Path, where: str
) -> None:
    """A folder outside the roots, an empty one under a root, and a name that is only a string prefix of a
    root (`photo` of `photos`): refused, naming the roots, nothing removed."""
    _index(library, tiny_encoder, photos)
    (photos / "nothing-here").mkdir()
    generation = library.store.generation()
    with pytest.raises(UnknownFolderError, match=f"is not an indexed root.*roots: {photos}"):
        forget_folder(library, str(photos.parent / where))
    assert library.store.generation() == generation and library.store.count_vectors() == PHOTO_COUNT


def test_an_older_library_gains_an_empty_roots_table_and_records_at_its_next_run(
    library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    """A library made before 0003: migrated on opening, no root guessed (its images count as unrooted) until
    it is indexed again."""
    _index(library, tiny_encoder, photos)
    with library.store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE roots"))
        conn.execute(sa.delete(_RECORDED).where(_RECORDED.c.name == "0003_roots"))
    url = str(library.store.url)
    library.close()

    with Library(Path(library.directory)) as reopened:
        listing = list_roots(reopened)
        assert (listing.roots, listing.unrooted) == ([], PHOTO_COUNT)
        _index(reopened, tiny_encoder, photos)
        assert [r.path for r in list_roots(reopened).roots] == [str(photos)]
    Store(url).close()
