"""The incremental path API: `scan.scan_paths` lists what a scan of the root would list at those paths, and
`pipeline.index_paths` applies just those paths (what `watch` calls for each batch)."""

from __future__ import annotations

import os
from pathlib import Path

from indexer.pipeline import index_folders, index_paths
from indexer.scan import ScanOptions, scan_paths, scan_root
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from tests import imagefactory as factory
from tests.libcheck import assert_index_matches_store, stored_rows


def test_scan_paths_lists_what_a_scan_of_the_root_would(tmp_path: Path) -> None:
    """Hidden names, excluded folders, links not followed and paths outside the root list nothing; a folder
    lists its files; each path once even when a folder and a file in it are both named."""
    root = tmp_path / "root"
    keep = [factory.pattern_png(root / "a.png", seed=1), factory.pattern_png(root / "sub" / "b.png", seed=2)]
    hidden = factory.pattern_png(root / ".hid" / "c.png", seed=3)
    excluded = factory.pattern_png(root / "thumbs" / "d.png", seed=4)
    outside = factory.pattern_png(tmp_path / "outside.png", seed=5)
    os.symlink(outside, root / "link.png")
    options = ScanOptions(exclude=("thumbs",))
    named = [*keep, root / "sub", hidden, excluded, outside, root / "link.png", root / "gone.png"]

    result = scan_paths([str(p) for p in named], str(root), options)

    assert sorted(f.path for f in result.files) == sorted(str(p) for p in keep)
    assert result.links_skipped == 1
    assert sorted(f.path for f in result.files) == sorted(f.path for f in scan_root(str(root), options).files)


def test_index_paths_moves_adds_and_forgets_only_the_named_paths(
    library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    """A rename named by both paths keeps its row id and vector; a deletion not named stays until named."""
    index_folders(library, tiny_encoder, [str(photos)], workers=1)
    before = stored_rows(library)
    old, new = photos / "img01.png", photos / "trip" / "renamed.png"
    os.rename(old, new)
    (photos / "img02.png").unlink()  # not named in the batch
    added = factory.pattern_png(photos / "added.png", seed=60)

    report = index_paths(library, tiny_encoder, str(photos), [str(old), str(new), str(added)], workers=1)

    assert (report.moved, report.embedded, report.removed) == (1, 1, 0)
    rows = stored_rows(library)
    assert rows[str(new)]["id"] == before[str(old)]["id"] and rows[str(new)]["vector"] == before[str(old)]["vector"]
    assert str(old) not in rows and str(photos / "img02.png") in rows
    assert index_paths(library, tiny_encoder, str(photos), [str(photos / "img02.png")], workers=1).removed == 1
    assert_index_matches_store(library)


def test_index_paths_ignores_paths_outside_its_root(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """A gone path outside the root is not the root's to forget."""
    index_folders(library, tiny_encoder, [str(photos)], workers=1)
    (photos / "img03.png").unlink()
    report = index_paths(library, tiny_encoder, str(photos / "trip"), [str(photos / "img03.png")], workers=1)
    assert report.removed == 0 and str(photos / "img03.png") in stored_rows(library)
