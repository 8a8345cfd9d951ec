"""Issue 11: indexing a subfolder of an indexed root removed images the user had indexed from the root.

An index run mirrors each folder it is given as a root with the run's scan options, so a run on a subfolder
with other options (no `include_hidden`, no `follow_symlinks`, an `exclude`) forgot the images of that
subfolder which the root's run had indexed and this one leaves out. These tests use only `index_folders`
and the store, so they run against the code before the fix too (where the first one fails).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.pipeline import index_folders
from indexer.scan import ScanOptions
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from tests import imagefactory as factory
from tests.libcheck import assert_index_matches_store, stored_rows


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """photos/: 4 PNGs; photos/2021/: 3 PNGs, a hidden one, one in a hidden folder, one excluded by name, and a
    link to a folder outside the root holding 2 more."""
    root = tmp_path / "photos"
    for seed in range(4):
        factory.pattern_png(root / f"top{seed}.png", seed=seed)
    sub = root / "2021"
    for seed in range(3):
        factory.pattern_png(sub / f"day{seed}.png", seed=10 + seed)
    factory.pattern_png(sub / ".secret.png", seed=20)
    factory.pattern_png(sub / ".cache" / "thumb.png", seed=21)
    factory.pattern_png(sub / "edit.tmp.png", seed=22)
    for seed in range(2):
        factory.pattern_png(tmp_path / "elsewhere" / f"far{seed}.png", seed=30 + seed)
    os.symlink(tmp_path / "elsewhere", sub / "linked")
    return root


ROOT_OPTIONS = ScanOptions(include_hidden=True, follow_symlinks=True)
ROOT_COUNT = 4 + 3 + 2 + 1 + 2  # top, days, the hidden two, edit.tmp, the linked two


def _paths(library: Library) -> set[str]:
    return set(stored_rows(library))


def test_indexing_a_subfolder_keeps_the_roots_images_its_options_leave_out(
    library: Library, tiny_encoder: Encoder, tree: Path
) -> None:
    """The root was indexed with hidden files and links; a plain run on photos/2021 (which would leave out
    the hidden, linked and excluded files) keeps every image and vector the root's run stored."""
    index_folders(library, tiny_encoder, [str(tree)], options=ROOT_OPTIONS, workers=1)
    before = _paths(library)
    assert len(before) == ROOT_COUNT

    report = index_folders(
        library, tiny_encoder, [str(tree / "2021")], options=ScanOptions(exclude=("*.tmp.png",)), workers=1
    )

    assert report.removed == 0 and report.embedded == 0
    assert _paths(library) == before
    assert library.store.count_vectors() == ROOT_COUNT
    assert_index_matches_store(library)


def test_a_subfolder_run_still_forgets_files_deleted_from_it(
    library: Library, tiny_encoder: Encoder, tree: Path
) -> None:
    """Within the subfolder, a file gone from disk is forgotten and a new one embedded; nothing outside it
    changes, even a file deleted there (the root's next run sees that one)."""
    index_folders(library, tiny_encoder, [str(tree)], options=ROOT_OPTIONS, workers=1)
    (tree / "2021" / "day0.png").unlink()
    (tree / "top0.png").unlink()
    factory.pattern_png(tree / "2021" / "day9.png", seed=49)

    report = index_folders(library, tiny_encoder, [str(tree / "2021")], workers=1)

    assert (report.removed, report.embedded) == (1, 1)
    paths = _paths(library)
    assert str(tree / "2021" / "day0.png") not in paths and str(tree / "2021" / "day9.png") in paths
    assert str(tree / "top0.png") in paths
    assert_index_matches_store(library)


def test_reindexing_the_root_applies_its_options_everywhere_under_it(
    library: Library, tiny_encoder: Encoder, tree: Path
) -> None:
    """The root re-run with plain options forgets what they leave out and what was deleted, under the
    subfolder too: a subfolder run never weakens the root's own rule."""
    index_folders(library, tiny_encoder, [str(tree)], options=ROOT_OPTIONS, workers=1)
    index_folders(library, tiny_encoder, [str(tree / "2021")], workers=1)
    (tree / "top1.png").unlink()

    report = index_folders(library, tiny_encoder, [str(tree)], workers=1)

    assert report.removed == 1 + 2 + 2  # top1, the hidden two, the linked two
    assert len(_paths(library)) == ROOT_COUNT - 5
    assert_index_matches_store(library)
