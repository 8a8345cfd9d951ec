"""End-to-end tests of `indexer.pipeline.index_folders` on real files, a real SQLite store, real FAISS and
the tiny open_clip model: first runs, incremental runs (add, modify, touch, move, copy, delete), broken
files, scan options, progress, model mismatch and decoding workers."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import IndexReport, index_folders
from indexer.reuse import hash_bytes
from indexer.scan import ScanOptions, ScanResult, plan_changes, scan_root
from retrieval.decode import ImageInfo, read_and_decode
from retrieval.errors import IndexRootError, ModelMismatchError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.specs import ModelSpec
from retrieval.storage.vectors import from_blob
from tests import imagefactory as factory
from tests.deadline import within
from tests.libcheck import STORED_ATOL, assert_index_matches_store, reference_vectors, stored_rows, stored_vectors

PHOTO_COUNT = 13  # the `photos` fixture: 12 PNGs and one EXIF JPEG


# --- helpers -----------------------------------------------------------------------------------------


def run(library: Library, encoder: Encoder, *roots: Path, **options: Any) -> IndexReport:
    return index_folders(library, encoder, [str(r) for r in roots], workers=options.pop("workers", 2), **options)


def _set_mtime(path: Path, offset_s: int) -> None:
    """Move the file's mtime by a whole number of seconds, so the change is visible whatever the clock tick."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + offset_s * 1_000_000_000))


def _row(library: Library, path: Path) -> dict[str, Any]:
    return stored_rows(library)[str(path)]


# --- first and repeated runs -------------------------------------------------------------------------


def test_first_run_embeds_everything_with_metadata_and_exact_vectors(
    library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    """A first run embeds all 13 images, records their facts and stores the encoder's own vectors."""
    report = run(library, tiny_encoder, photos)
    assert (report.scanned, report.embedded, report.unchanged, report.failed) == (PHOTO_COUNT, PHOTO_COUNT, 0, 0)
    assert (report.moved, report.copied, report.touched, report.removed) == (0, 0, 0, 0)
    assert report.failures == [] and report.unlisted == []
    assert report.roots == [str(photos)]

    rows = stored_rows(library)
    assert len(rows) == PHOTO_COUNT
    assert all(row["width"] and row["height"] and row["error"] is None for row in rows.values())
    assert all(row["content_hash"] and row["size"] == os.path.getsize(path) for path, row in rows.items())
    camera = rows[str(photos / "trip" / "camera.jpg")]
    assert camera["taken_at"] == datetime(2021, 7, 4, 18, 30)
    assert (camera["camera_make"], camera["camera_model"]) == ("Canon", "EOS 80D")
    assert (camera["width"], camera["height"]) == (40, 80)  # stored 80x40, orientation 6 turns it upright
    assert (camera["format"], rows[str(photos / "img00.png")]["format"]) == ("JPEG", "PNG")

    vectors = stored_vectors(library)
    paths = sorted(vectors)
    np.testing.assert_allclose(
        np.stack([vectors[p] for p in paths]), reference_vectors(tiny_encoder, paths), rtol=0, atol=STORED_ATOL
    )
    assert_index_matches_store(library)


def test_the_time_spent_waiting_for_decoding_is_reported(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """The encoding thread's waits for decoded images are timed: some wait is unavoidable (the first image is
    decoded while nothing else can run), and no more than the run itself; a run with nothing to embed waits for
    nothing."""
    report = run(library, tiny_encoder, photos)
    assert 0 < report.decode_wait_seconds <= report.seconds
    assert run(library, tiny_encoder, photos).decode_wait_seconds == 0


def test_stored_facts_are_the_decoders_and_the_files_own(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """Each row carries every fact decoding found (each `ImageInfo` field, by name) and the file's own
    stat and content hash."""
    run(library, tiny_encoder, photos)
    for path in [photos / "trip" / "camera.jpg", photos / "img00.png"]:
        data, decoded = read_and_decode(str(path))
        record = library.store.image_by_path(str(path))
        assert record is not None
        assert {item.name: getattr(record, item.name) for item in fields(ImageInfo)} == asdict(decoded.info)
        stat = path.stat()
        assert (record.size, record.mtime_ns, record.content_hash) == (stat.st_size, stat.st_mtime_ns, hash_bytes(data))


def test_second_run_without_changes_embeds_nothing(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """Nothing changed on disk: nothing is embedded, the generation and the vectors stay put."""
    run(library, tiny_encoder, photos)
    generation, before = library.store.generation(), stored_rows(library)
    report = run(library, tiny_encoder, photos)
    assert (report.embedded, report.unchanged, report.scanned, report.failed) == (0, PHOTO_COUNT, PHOTO_COUNT, 0)
    assert library.store.generation() == generation
    assert stored_rows(library) == before
    assert_index_matches_store(library)


# --- incremental changes -----------------------------------------------------------------------------


def test_added_file_is_the_only_one_embedded(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """A new file is embedded; the others are left as they were."""
    run(library, tiny_encoder, photos)
    added = factory.pattern_png(photos / "new.png", seed=50)
    report = run(library, tiny_encoder, photos)
    assert (report.embedded, report.unchanged, report.scanned) == (1, PHOTO_COUNT, PHOTO_COUNT + 1)
    np.testing.assert_allclose(
        stored_vectors(library)[str(added)], reference_vectors(tiny_encoder, [str(added)])[0], atol=STORED_ATOL
    )
    assert_index_matches_store(library)


def _assert_reembedded(library: Library, encoder: Encoder, path: Path, before: dict[str, Any]) -> None:
    report = run(library, encoder, path.parent)
    assert (report.embedded, report.touched, report.moved, report.copied) == (1, 0, 0, 0)
    after = _row(library, path)
    assert after["id"] == before["id"]
    assert after["content_hash"] != before["content_hash"]
    new_vector = from_blob(after["vector"])
    assert not np.allclose(new_vector, from_blob(before["vector"]), atol=1e-3)
    np.testing.assert_allclose(new_vector, reference_vectors(encoder, [str(path)])[0], atol=STORED_ATOL)
    assert_index_matches_store(library)


def test_modified_file_is_reembedded_under_the_same_id(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """New content of another size: a fresh vector, the row (and FAISS id) kept."""
    run(library, tiny_encoder, photos)
    path = photos / "img03.png"
    before = _row(library, path)
    factory.pattern_png(path, seed=77, size=(48, 80))
    assert path.stat().st_size != before["size"]
    _assert_reembedded(library, tiny_encoder, path, before)
    assert (_row(library, path)["width"], _row(library, path)["height"]) == (48, 80)


def test_same_size_rewrite_is_reembedded(library: Library, tiny_encoder: Encoder, tmp_path: Path) -> None:
    """New content of exactly the same size (uncompressed BMP) is hashed, found different, and re-embedded."""
    root = tmp_path / "bmps"
    root.mkdir()
    path = root / "a.bmp"
    Image.new("RGB", (40, 40), (250, 20, 20)).save(path, "BMP")
    factory.pattern_png(root / "other.png", seed=3)
    run(library, tiny_encoder, root)
    before = _row(library, path)
    Image.open(factory.pattern_png(tmp_path / "src.png", seed=9, size=(40, 40))).save(path, "BMP")
    _set_mtime(path, 7)
    assert path.stat().st_size == before["size"]
    _assert_reembedded(library, tiny_encoder, path, before)


def test_touched_file_keeps_its_vector(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """Only the mtime changed: the bytes are hashed, found equal, and just the stat is recorded."""
    run(library, tiny_encoder, photos)
    path = photos / "img05.png"
    before = _row(library, path)
    _set_mtime(path, 3600)
    report = run(library, tiny_encoder, photos)
    assert (report.touched, report.embedded, report.unchanged) == (1, 0, PHOTO_COUNT - 1)
    after = _row(library, path)
    assert after["mtime_ns"] == path.stat().st_mtime_ns != before["mtime_ns"]
    assert (after["id"], after["vector"], after["content_hash"]) == (
        before["id"],
        before["vector"],
        before["content_hash"],
    )
    assert run(library, tiny_encoder, photos).unchanged == PHOTO_COUNT
    assert_index_matches_store(library)


@pytest.mark.parametrize("target", ["renamed.png", "new/deeper/moved.png"])
def test_moved_file_keeps_id_and_vector(library: Library, tiny_encoder: Encoder, photos: Path, target: str) -> None:
    """A rename or a move into a new subfolder keeps the row id and vector under the new path."""
    run(library, tiny_encoder, photos)
    source, destination = photos / "img02.png", photos / target
    before = _row(library, source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    source.rename(destination)
    report = run(library, tiny_encoder, photos)
    assert (report.moved, report.embedded, report.removed, report.copied) == (1, 0, 0, 0)
    rows = stored_rows(library)
    assert str(source) not in rows and len(rows) == PHOTO_COUNT
    after = rows[str(destination)]
    assert (after["id"], after["vector"]) == (before["id"], before["vector"])
    assert_index_matches_store(library)


def test_copied_file_reuses_the_vector_under_a_new_id(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """A copy of an indexed file gets its own row, with the original's vector and facts, without encoding."""
    run(library, tiny_encoder, photos)
    original = photos / "trip" / "camera.jpg"
    copy = photos / "copy of camera.jpg"
    shutil.copyfile(original, copy)
    report = run(library, tiny_encoder, photos)
    assert (report.copied, report.embedded, report.moved, report.removed) == (1, 0, 0, 0)
    rows = stored_rows(library)
    assert len(rows) == PHOTO_COUNT + 1
    source, duplicate = rows[str(original)], rows[str(copy)]
    assert duplicate["id"] != source["id"]
    assert duplicate["vector"] == source["vector"]
    assert (duplicate["taken_at"], duplicate["width"], duplicate["height"]) == (
        source["taken_at"],
        source["width"],
        source["height"],
    )
    assert_index_matches_store(library)


def test_deleted_file_leaves_store_and_index(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """A deleted file's row is removed, and its id is gone from the FAISS index."""
    run(library, tiny_encoder, photos)
    path = photos / "trip" / "img10.png"
    gone_id = _row(library, path)["id"]
    path.unlink()
    report = run(library, tiny_encoder, photos)
    assert (report.removed, report.embedded, report.unchanged) == (1, 0, PHOTO_COUNT - 1)
    assert str(path) not in stored_rows(library)
    assert gone_id not in set(library.load_index(gpu="never").ids().tolist())
    assert_index_matches_store(library)


def test_move_into_a_second_root_indexed_later(
    library: Library, tiny_encoder: Encoder, photos: Path, tmp_path: Path
) -> None:
    """A file moved to another root is recognised as moved when that root is indexed, not embedded again."""
    run(library, tiny_encoder, photos)
    source = photos / "img07.png"
    before = _row(library, source)
    other = tmp_path / "elsewhere"
    other.mkdir()
    destination = other / "img07.png"
    shutil.move(source, destination)

    report = run(library, tiny_encoder, other)
    assert (report.scanned, report.moved, report.embedded, report.copied) == (1, 1, 0, 0)
    rows = stored_rows(library)
    assert str(source) not in rows
    assert (rows[str(destination)]["id"], rows[str(destination)]["vector"]) == (before["id"], before["vector"])

    again = run(library, tiny_encoder, photos)
    assert (again.removed, again.unchanged, again.embedded) == (0, PHOTO_COUNT - 1, 0)
    assert len(stored_rows(library)) == PHOTO_COUNT
    assert_index_matches_store(library)


# --- broken and tricky files -------------------------------------------------------------------------


BROKEN = {
    "cut.jpg": (factory.truncated_jpeg, "truncated or corrupt"),
    "empty.jpg": (factory.zero_byte, "zero-byte"),
    "fake.jpg": (factory.text_as_image, "not an image"),
    "huge.png": (factory.huge_dimensions_png, "too large"),
}


def _make_broken(root: Path) -> dict[str, Path]:
    return {name: make(root / "broken" / name) for name, (make, _) in BROKEN.items()}


def test_broken_files_are_recorded_and_do_not_stop_the_run(
    library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    """Each unreadable file is stored with its reason and counted as failed; the good ones are embedded."""
    broken = _make_broken(photos)
    report = run(library, tiny_encoder, photos)
    assert (report.embedded, report.failed, report.scanned) == (PHOTO_COUNT, len(BROKEN), PHOTO_COUNT + len(BROKEN))
    reasons = dict(report.failures)
    assert set(reasons) == {str(p) for p in broken.values()}
    rows = stored_rows(library)
    for name, path in broken.items():
        expected = BROKEN[name][1]
        assert expected in reasons[str(path)].lower()
        row = rows[str(path)]
        assert row["vector"] is None and expected in row["error"].lower()
    assert library.store.stats().failed == len(BROKEN)
    assert_index_matches_store(library)


def test_broken_files_are_retried_only_when_asked_or_changed(
    library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    """Failed files are skipped while unchanged, retried with retry_errors, and retried when replaced."""
    broken = _make_broken(photos)
    run(library, tiny_encoder, photos)

    quiet = run(library, tiny_encoder, photos)
    assert (quiet.failed, quiet.embedded, quiet.unchanged) == (0, 0, PHOTO_COUNT + len(BROKEN))

    retried = run(library, tiny_encoder, photos, retry_errors=True)
    assert (retried.failed, retried.embedded, retried.unchanged) == (len(BROKEN), 0, PHOTO_COUNT)
    assert {path for path, _ in retried.failures} == {str(p) for p in broken.values()}

    repaired = broken["empty.jpg"]
    factory.solid_jpeg(repaired, color=(10, 200, 90))
    fixed = run(library, tiny_encoder, photos)
    assert (fixed.embedded, fixed.failed, fixed.unchanged) == (1, 0, PHOTO_COUNT + len(BROKEN) - 1)
    row = _row(library, repaired)
    assert row["error"] is None and row["vector"] is not None and (row["width"], row["height"]) == (64, 48)
    np.testing.assert_allclose(
        from_blob(row["vector"]), reference_vectors(tiny_encoder, [str(repaired)])[0], atol=STORED_ATOL
    )
    assert library.store.stats().failed == len(BROKEN) - 1
    assert_index_matches_store(library)


def test_good_file_turned_broken_loses_its_vector(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """An indexed image overwritten with garbage is recorded as failed and its old vector leaves store and index."""
    run(library, tiny_encoder, photos)
    path = photos / "img04.png"
    old_id = _row(library, path)["id"]
    path.write_bytes(path.read_bytes()[:100])
    report = run(library, tiny_encoder, photos)
    assert (report.failed, report.embedded, report.removed) == (1, 0, 0)
    row = _row(library, path)
    assert row["id"] == old_id and row["vector"] is None and "truncated or corrupt" in row["error"]
    assert old_id not in set(library.load_index(gpu="never").ids().tolist())
    assert library.store.count_vectors() == PHOTO_COUNT - 1
    assert_index_matches_store(library)


def test_tricky_but_valid_files_are_embedded(library: Library, tiny_encoder: Encoder, tmp_path: Path) -> None:
    """CMYK JPEG, 16-bit grey PNG, transparent palette PNG and animated GIF all embed like plain images."""
    root = tmp_path / "tricky"
    made = [
        factory.cmyk_jpeg(root / "cmyk.jpg"),
        factory.png_16bit_grey(root / "grey16.png"),
        factory.palette_png_with_transparency(root / "palette.png"),
        factory.animated_gif(root / "anim.gif"),
    ]
    report = run(library, tiny_encoder, root)
    assert (report.embedded, report.failed) == (4, 0)
    vectors = stored_vectors(library)
    paths = sorted(str(p) for p in made)
    assert sorted(vectors) == paths
    np.testing.assert_allclose(
        np.stack([vectors[p] for p in paths]), reference_vectors(tiny_encoder, paths), rtol=0, atol=STORED_ATOL
    )
    assert_index_matches_store(library)


# --- scan options ------------------------------------------------------------------------------------


def test_hidden_files_and_folders_need_include_hidden(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """Dot-files and dot-folders are skipped by default and indexed with include_hidden."""
    hidden_file = factory.pattern_png(photos / ".hidden.png", seed=60)
    in_hidden_folder = factory.pattern_png(photos / ".cache" / "inside.png", seed=61)
    report = run(library, tiny_encoder, photos)
    assert (report.scanned, report.embedded) == (PHOTO_COUNT, PHOTO_COUNT)
    assert not {str(hidden_file), str(in_hidden_folder)} & set(stored_rows(library))

    shown = run(library, tiny_encoder, photos, options=ScanOptions(include_hidden=True))
    assert (shown.scanned, shown.embedded, shown.unchanged) == (PHOTO_COUNT + 2, 2, PHOTO_COUNT)
    assert {str(hidden_file), str(in_hidden_folder)} <= set(stored_vectors(library))
    assert_index_matches_store(library)


def test_exclude_globs_and_non_image_extensions(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """A path glob skips a folder's contents, a bare name glob skips matching files anywhere, and files
    whose extension is not an image type are never looked at; extensions match case-insensitively."""
    thumb = factory.pattern_png(photos / "trip" / "thumbs" / "t1.png", seed=70)
    draft = factory.pattern_png(photos / "trip" / "draft-1.png", seed=71)
    upper = factory.pattern_png(photos / "UPPER.PNG", seed=72)
    (photos / "notes.txt").write_text("not an image")
    (photos / "data.json").write_text("{}")
    factory.pattern_png(photos / "picture.raw", seed=73)  # image bytes, unknown extension

    options = ScanOptions(exclude=("*/thumbs/*", "draft-*"))
    report = run(library, tiny_encoder, photos, options=options)
    assert (report.scanned, report.embedded, report.failed) == (PHOTO_COUNT + 1, PHOTO_COUNT + 1, 0)
    paths = set(stored_rows(library))
    assert str(upper) in paths
    assert not {str(thumb), str(draft)} & paths
    assert all(Path(p).suffix.lower() in {".png", ".jpg"} for p in paths)

    unexcluded = run(library, tiny_encoder, photos)
    assert (unexcluded.embedded, unexcluded.unchanged) == (2, PHOTO_COUNT + 1)
    assert_index_matches_store(library)


def test_missing_root_is_refused_before_anything_is_written(
    library: Library, tiny_encoder: Encoder, photos: Path, tmp_path: Path
) -> None:
    """A root that does not exist (or is a file) raises IndexRootError and indexes nothing."""
    with pytest.raises(IndexRootError, match="does not exist"):
        run(library, tiny_encoder, photos, tmp_path / "no-such-folder")
    with pytest.raises(IndexRootError, match="not a folder"):
        run(library, tiny_encoder, photos / "img00.png")
    assert stored_rows(library) == {}
    assert library.recorded_identity() is None


def test_nested_roots_are_not_counted_twice(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """Giving a root together with its own subfolder (and a spelling with a trailing slash) indexes each file once."""
    report = index_folders(library, tiny_encoder, [str(photos / "trip"), str(photos), f"{photos}{os.sep}"], workers=2)
    assert report.roots == [str(photos)]
    assert (report.scanned, report.embedded) == (PHOTO_COUNT, PHOTO_COUNT)
    assert len(stored_rows(library)) == PHOTO_COUNT
    assert_index_matches_store(library)


def test_unlisted_folder_keeps_its_stored_images(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """A folder that could not be listed is not taken as emptied: its stored rows are not planned as gone,
    while a truly deleted file elsewhere (including in a sibling folder sharing its name prefix) is."""
    factory.pattern_png(photos / "trip2" / "sibling.png", seed=80)
    run(library, tiny_encoder, photos)
    known = library.store.file_states_under(str(photos))
    trip = str(photos / "trip")
    scan = scan_root(str(photos), ScanOptions())
    deleted = {str(photos / "img01.png"), str(photos / "trip2" / "sibling.png")}
    visible = [f for f in scan.files if not f.path.startswith(trip + os.sep) and f.path not in deleted]
    blocked = ScanResult(files=visible, unlisted=[(trip, "Permission denied")])

    plan = plan_changes(blocked, known)
    assert {state.path for state in plan.gone} == deleted
    assert plan.unchanged == len(visible) == PHOTO_COUNT - 4
    assert plan.new == [] and plan.changed == []

    unblocked = plan_changes(ScanResult(files=visible), known)
    assert {state.path for state in unblocked.gone} == deleted | {p for p in known if p.startswith(trip + os.sep)}


# --- progress, model identity, workers ---------------------------------------------------------------


def test_progress_is_reported_per_batch_up_to_the_total(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """The callback sees (done, total) after each committed batch, done increasing, ending at (total, total);
    failed files count as done."""
    _make_broken(photos)
    calls: list[tuple[int, int]] = []
    run(library, tiny_encoder, photos, progress=lambda done, total: calls.append((done, total)))
    total = PHOTO_COUNT + len(BROKEN)
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(set(done)) and done[0] > 0
    assert len(calls) == -(-total // tiny_encoder.batch_size)

    calls.clear()
    run(library, tiny_encoder, photos, progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # nothing to embed, nothing to report


def test_other_model_is_refused_and_writes_nothing(
    library: Library, tiny_encoder: Encoder, photos: Path, other_spec: ModelSpec
) -> None:
    """Indexing into a library built by another model raises ModelMismatchError naming both, and leaves the
    store, the recorded model and the index files exactly as they were."""
    run(library, tiny_encoder, photos)
    factory.pattern_png(photos / "pending.png", seed=90)
    other = Encoder(other_spec, device="cpu", batch_size=8)
    assert other.identity.key != tiny_encoder.identity.key

    rows, generation = stored_rows(library), library.store.generation()
    files = sorted(p.name for p in library.directory.iterdir())
    with pytest.raises(ModelMismatchError) as caught:
        run(library, other, photos)
    assert tiny_encoder.identity.key in str(caught.value) and other.identity.key in str(caught.value)
    assert stored_rows(library) == rows
    assert library.store.generation() == generation
    assert library.recorded_identity() == tiny_encoder.identity.key and library.dim() == 32
    assert sorted(p.name for p in library.directory.iterdir()) == files
    assert_index_matches_store(library)


def test_decoding_workers_do_not_change_the_vectors(tiny_encoder: Encoder, photos: Path, tmp_path: Path) -> None:
    """One decoding thread or four: the same files get the same vectors and the same failures."""
    _make_broken(photos)
    factory.cmyk_jpeg(photos / "cmyk.jpg")
    results = {}
    for workers in (1, 4):
        with Library(tmp_path / f"library-{workers}", create=True) as lib:
            report = run(lib, tiny_encoder, photos, workers=workers)
            assert (report.embedded, report.failed) == (PHOTO_COUNT + 1, len(BROKEN))
            results[workers] = (stored_vectors(lib), sorted(report.failures))
            assert_index_matches_store(lib)
    (one, failures_one), (four, failures_four) = results[1], results[4]
    assert sorted(one) == sorted(four)
    assert failures_one == failures_four
    for path in one:
        np.testing.assert_allclose(one[path], four[path], rtol=0, atol=1e-6)


# --- what is read: regular files only, links only when asked -----------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_among_images_is_skipped_and_the_batch_commits(
    library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    """A FIFO named x.jpg is listed as skipped (not a regular file) and never opened: the run ends and the
    images of its batch are committed (before, a decoding thread blocked opening it forever)."""
    fifo = photos / "x.jpg"
    os.mkfifo(fifo)
    report = within(120, lambda: run(library, tiny_encoder, photos), unblock=[fifo])
    assert (report.embedded, report.failed, report.scanned) == (PHOTO_COUNT, 0, PHOTO_COUNT)
    assert report.skipped == [(str(fifo), "not a regular file (FIFO)")]
    assert str(fifo) not in stored_rows(library) and len(stored_rows(library)) == PHOTO_COUNT
    assert_index_matches_store(library)


def test_links_out_of_the_root_are_skipped_unless_followed(
    library: Library, tiny_encoder: Encoder, photos: Path, tmp_path: Path
) -> None:
    """A link in the root to a file outside every root (someone else's photo, a private file renamed .jpg)
    is not read by default, only counted; with follow_symlinks it is indexed under the link's name, and a
    later run without it forgets it again."""
    outside = factory.pattern_png(tmp_path / "private" / "secret.png", seed=90)
    link = photos / "innocent.jpg"
    link.symlink_to(outside)
    report = run(library, tiny_encoder, photos)
    assert (report.embedded, report.links_skipped, report.skipped) == (PHOTO_COUNT, 1, [])
    assert str(link) not in stored_rows(library)

    followed = run(library, tiny_encoder, photos, options=ScanOptions(follow_symlinks=True))
    assert (followed.embedded, followed.links_skipped) == (1, 0)
    assert stored_rows(library)[str(link)]["content_hash"] == hash_bytes(outside.read_bytes())

    again = run(library, tiny_encoder, photos)
    assert (again.removed, again.links_skipped) == (1, 1)
    assert str(link) not in stored_rows(library)
    assert_index_matches_store(library)


def test_folder_loop_indexes_each_image_once(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """trip/up -> .. with follow_symlinks: each image once under its own path, the loop reported as skipped."""
    (photos / "trip" / "up").symlink_to("..", target_is_directory=True)
    report = within(120, lambda: run(library, tiny_encoder, photos, options=ScanOptions(follow_symlinks=True)))
    assert (report.scanned, report.embedded) == (PHOTO_COUNT, PHOTO_COUNT)
    assert [path for path, _ in report.skipped] == [str(photos / "trip" / "up")]
    assert len(stored_rows(library)) == PHOTO_COUNT
