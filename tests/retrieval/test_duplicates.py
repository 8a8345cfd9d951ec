"""retrieval/duplicates.py on real libraries: hand-chosen vectors (written through the store's writer, as an
index run writes them) where the grouping rules need exact scores, and real images encoded by the packaged
reference model where the semantics matter. The flat index and the IVF one (forced by a lower size
threshold) are both searched."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrieval.index_policy as policy
from indexer.pipeline import index_folders
from retrieval.config import DEFAULT_DUPLICATE_THRESHOLD
from retrieval.duplicates import DuplicateGroup, duplicate_pairs, find_duplicates, group_pairs
from retrieval.errors import InvalidQueryError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.reference import reference_spec
from retrieval.storage.records import FileMetadata
from retrieval.storage.vectors import as_stored
from tests import imagefactory as factory
from tests.libcheck import unit_vectors

DIM = 32  # the tiny model's, which the hand-made libraries record


def near(vector: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector at exactly `cosine` to the unit `vector`, in a random direction."""
    other = unit_vectors(1, seed, len(vector))[0]
    other -= (other @ vector) * vector
    other /= np.linalg.norm(other)
    return (cosine * vector + math.sqrt(1 - cosine**2) * other).astype(np.float32)


def meta(
    path: str, *, pixels: tuple[int, int] = (100, 100), size: int = 1000, taken: int | None = None
) -> FileMetadata:
    taken_at = datetime(taken, 1, 1) if taken else None
    return FileMetadata(path, size, 1_600_000_000 * 10**9, f"hash {path}", *pixels, "PNG", taken_at)


@pytest.fixture
def hand_made(tmp_path: Path, tiny_encoder: Encoder) -> Iterator[Library]:
    with Library(tmp_path / "library", create=True) as library:
        library.bind_model(tiny_encoder)
        yield library


def write(library: Library, images: list[tuple[FileMetadata, np.ndarray]]) -> dict[str, int]:
    """Store the images (as the store keeps them: float16) and return their ids by path."""
    vectors = as_stored(np.stack([vector for _, vector in images]))
    with library.store.writer() as writer:
        ids = writer.add_images([m for m, _ in images], vectors, "tiny")
    return {m.path: image_id for (m, _), image_id in zip(images, ids, strict=True)}


def paths(groups: list[DuplicateGroup]) -> list[list[str]]:
    return [[member.path for member in group.members] for group in groups]


def assert_stars(groups: list[DuplicateGroup], threshold: float) -> None:
    """Every member scores at least `threshold` against its best copy; no image is in two groups."""
    seen = [member.id for group in groups for member in group.members]
    assert len(seen) == len(set(seen))
    for group in groups:
        assert group.best.score == 1.0 and len(group.members) >= 2
        assert all(member.score >= threshold - 1e-3 for member in group.copies)  # float16 vectors: 1e-3 slack


def test_copies_group_with_the_best_copy_first_and_distinct_images_do_not(hand_made: Library) -> None:
    """Each family's copies score 0.96 to 0.995 against the original (0.3 apart at most to each other's
    family): one group per family, the original (most pixels) first, then the copies by score."""
    bases = unit_vectors(3, 1, DIM)
    images = []
    for family, base in enumerate(bases):
        images.append((meta(f"/p/{family}/original.png", pixels=(400, 300), size=900), base))
        for number, cosine in enumerate((0.96, 0.995, 0.98)):
            images.append(
                (meta(f"/p/{family}/copy{number}.jpg", pixels=(200, 150), size=300), near(base, cosine, 9 + number))
            )
    images.append((meta("/p/alone.png"), unit_vectors(1, 77, DIM)[0]))
    write(hand_made, images)
    groups = find_duplicates(hand_made, 0.95)
    assert paths(groups) == [
        [f"/p/{f}/original.png", f"/p/{f}/copy1.jpg", f"/p/{f}/copy2.jpg", f"/p/{f}/copy0.jpg"] for f in range(3)
    ]
    assert [m.score for m in groups[0].members] == pytest.approx([1.0, 0.995, 0.98, 0.96], abs=2e-3)  # float16
    assert_stars(groups, 0.95)
    assert groups[0].reclaimable == 900 and groups[0].to_json()["reclaimable_bytes"] == 900
    assert find_duplicates(hand_made, 0.999) == []


@pytest.mark.parametrize(
    ("better", "worse"),
    [
        (
            meta("/z/more-pixels.png", pixels=(200, 100), size=10),
            meta("/a/bigger-file.png", pixels=(100, 100), size=99),
        ),
        (meta("/z/bigger-file.png", size=2000, taken=2022), meta("/a/older.png", size=1000, taken=2001)),
        (meta("/z/older.png", taken=2001), meta("/a/newer.png", taken=2020)),
        (meta("/a/path.png"), meta("/b/path.png")),
    ],
    ids=["pixels", "file size", "date", "path"],
)
def test_the_best_copy_order(hand_made: Library, better: FileMetadata, worse: FileMetadata) -> None:
    """Most pixels, then largest file, then oldest date, then path: each rule decides when those before tie."""
    vector = unit_vectors(1, 3, DIM)[0]
    write(hand_made, [(worse, vector), (better, vector)])
    assert paths(find_duplicates(hand_made)) == [[better.path, worse.path]]


def test_no_chaining_every_member_is_a_near_duplicate_of_the_best_copy(hand_made: Library) -> None:
    """A~B and B~C at 0.97, but A and C only 0.88 apart: union-find would group all three. With A the best
    copy, the group is A and B, and C (whose only near-duplicate went to A's group) stays out."""
    a = unit_vectors(1, 5, DIM)[0]
    b = near(a, 0.97, 6)
    c = (2 * 0.97 * b - a).astype(np.float32)  # the reflection of A through B: cos(B, C) 0.97, cos(A, C) 0.8818
    assert abs(float(a @ c) - (2 * 0.97**2 - 1)) < 1e-5
    write(hand_made, [(meta("/p/a.png", pixels=(300, 300)), a), (meta("/p/b.png"), b), (meta("/p/c.png"), c)])
    groups = find_duplicates(hand_made, 0.95)
    assert paths(groups) == [["/p/a.png", "/p/b.png"]]
    assert_stars(groups, 0.95)


def test_with_the_middle_image_best_all_three_group(hand_made: Library) -> None:
    """The same chain with B the best copy: A and C are both near-duplicates of B, so one group of three."""
    a = unit_vectors(1, 5, DIM)[0]
    b = near(a, 0.97, 6)
    c = (2 * 0.97 * b - a).astype(np.float32)
    write(hand_made, [(meta("/p/a.png"), a), (meta("/p/b.png", pixels=(300, 300)), b), (meta("/p/c.png"), c)])
    assert sorted(paths(find_duplicates(hand_made, 0.95))[0]) == ["/p/a.png", "/p/b.png", "/p/c.png"]


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -1.0, 0.2, 1.01, 2.0])
def test_thresholds_outside_the_range_are_refused(hand_made: Library, threshold: float) -> None:
    with pytest.raises(InvalidQueryError, match="`threshold` must be a cosine similarity") as raised:
        find_duplicates(hand_made, threshold)
    assert raised.value.parameters == ("threshold",)


def test_identical_vectors_are_found_at_threshold_one(hand_made: Library) -> None:
    vector = unit_vectors(1, 8, DIM)[0]
    write(
        hand_made, [(meta("/p/a.png"), vector), (meta("/p/b.png"), vector), (meta("/p/c.png"), near(vector, 0.99, 1))]
    )
    assert paths(find_duplicates(hand_made, 1.0)) == [["/p/a.png", "/p/b.png"]]


def test_an_empty_library_and_failed_rows_give_no_groups(hand_made: Library) -> None:
    """No vectors: no groups. Rows of unreadable files (no vector, an error) never appear in a group."""
    assert find_duplicates(hand_made) == []
    vector = unit_vectors(1, 4, DIM)[0]
    write(hand_made, [(meta("/p/a.png"), vector), (meta("/p/b.png"), vector)])
    with hand_made.store.writer() as writer:
        writer.record_failure("/p/broken.jpg", 10, 1, "truncated", "hash broken")
        writer.record_failure("/p/a-broken-copy.jpg", 10, 1, "truncated", "hash a")
    assert paths(find_duplicates(hand_made)) == [["/p/a.png", "/p/b.png"]]


def test_within_restricts_both_images_of_a_pair(hand_made: Library, tmp_path: Path) -> None:
    """A pair across two folders is found with both folders (`within` a list), not with one of them; a path
    that is no folder and holds no image is refused."""
    vector = unit_vectors(1, 2, DIM)[0]
    write(
        hand_made,
        [(meta("/p/a/x.png"), vector), (meta("/p/b/y.png"), vector), (meta("/p/a/other.png"), near(vector, 0.5, 3))],
    )
    assert find_duplicates(hand_made, within="/p/a") == []
    assert paths(find_duplicates(hand_made, within=["/p/a", "/p/b"])) == [["/p/a/x.png", "/p/b/y.png"]]
    with pytest.raises(InvalidQueryError, match="`within`"):
        find_duplicates(hand_made, within=tmp_path / "nothing-here")


def test_a_pair_whose_row_is_gone_is_left_out() -> None:
    """Rows deleted since the index was loaded (an index run meanwhile) drop their pairs."""
    groups = group_pairs(np.array([1]), np.array([2]), np.array([0.99], dtype=np.float32), {})
    assert groups == []


@pytest.fixture
def clustered(tmp_path: Path, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> Iterator[Library]:
    """2400 vectors, 600 families of an original and three copies (cosine 0.93 to 0.99), with the size
    threshold lowered so that the library's index is IVF (32 lists)."""
    monkeypatch.setattr(policy, "ANN_MIN_VECTORS", 1000)
    rng = np.random.default_rng(0)
    bases = unit_vectors(600, 11, DIM)
    images = []
    for family, base in enumerate(bases):
        images.append((meta(f"/c/{family:03d}/original.png", pixels=(400, 400)), base))
        for number in range(3):
            images.append(
                (meta(f"/c/{family:03d}/copy{number}.png"), near(base, rng.uniform(0.93, 0.99), family * 3 + number))
            )
    with Library(tmp_path / "library", create=True) as library:
        library.bind_model(tiny_encoder)
        write(library, images)
        yield library


def _exact_pairs(library: Library, threshold: float) -> set[tuple[int, int]]:
    index = library.load_index(gpu="never")
    ids = index.ids()
    scores = index.reconstruct(ids) @ index.reconstruct(ids).T
    rows, cols = np.nonzero(np.triu(scores >= threshold - 1e-3, 1))
    return {(min(a, b), max(a, b)) for a, b in zip(ids[rows].tolist(), ids[cols].tolist(), strict=True)}


def test_the_ivf_path_finds_the_exact_pairs(clustered: Library) -> None:
    """On the IVF index, the range search with the default nprobe (8 of 32 lists) finds at least 99% of the
    pairs exact search finds, and no other; visiting every list finds exactly them. The groups are the
    families, their originals first."""
    index = clustered.load_index(gpu="never")
    assert index.kind == "ivf" and policy.nlist_for(len(index)) == 32
    exact = _exact_pairs(clustered, 0.92)
    first, second, _ = duplicate_pairs(index, 0.92)
    found = set(zip(first.tolist(), second.tolist(), strict=True))
    assert found <= exact and len(found) >= 0.99 * len(exact)
    first, second, _ = duplicate_pairs(index, 0.92, nprobe=32)
    assert set(zip(first.tolist(), second.tolist(), strict=True)) == exact
    groups = find_duplicates(clustered, 0.92)
    assert_stars(groups, 0.92)
    assert sum(Path(g.best.path).name == "original.png" for g in groups) >= 0.99 * len(groups) >= 0.99 * 600


def test_the_ivf_and_the_flat_index_give_the_same_groups(clustered: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    ivf = find_duplicates(clustered, 0.95, nprobe=32)
    monkeypatch.setattr(policy, "ANN_MIN_VECTORS", 100_000)
    flat_index = clustered.rebuild_index(gpu="never")
    assert flat_index.kind == "flat"
    assert paths(find_duplicates(clustered, 0.95)) == paths(ivf)


def _scene_photos(folder: Path) -> list[Path]:
    """Three distinct generated scenes at 256 px saved as JPEG q95, each with a half-size PNG copy and a JPEG
    q50 one (as many pixels, a smaller file); a truncated JPEG beside them."""
    import random

    from retrieval.quality.scenes import V2, Scene, render

    scenes = [
        Scene("circle", "red", "large", 1, "left", "blue", "plain"),
        Scene("star", "yellow", "small", 3, "top", "black", "striped"),
        Scene("cross", "green", "large", 2, "center", "white", "checkered"),
    ]
    originals = []
    for number, scene in enumerate(scenes):
        image = render(scene, random.Random(number), 256, V2)
        original = folder / f"scene{number}" / "original.jpg"
        original.parent.mkdir(parents=True)
        image.save(original, "JPEG", quality=95)
        image.resize((128, 128), Image.Resampling.LANCZOS).save(original.parent / "half.png")
        image.save(original.parent / "recompressed.jpg", "JPEG", quality=50)
        originals.append(original)
    factory.truncated_jpeg(folder / "broken.jpg")
    return originals


def test_real_copies_encoded_by_the_reference_model_group_at_the_default(tmp_path: Path) -> None:
    """Real files through the indexer and the reference model: each scene's resized and re-compressed
    copies group with it at the default threshold, the original (most pixels) first; distinct scenes and the
    unreadable file stay apart."""
    originals = _scene_photos(tmp_path / "photos")
    with Library(tmp_path / "library", create=True) as library:
        report = index_folders(library, library.encoder(reference_spec(), backend="torch"), [str(tmp_path / "photos")])
        assert (report.embedded, report.failed) == (9, 1)
        groups = find_duplicates(library)
    assert [group.best.path for group in groups] == [str(p) for p in originals]
    assert [sorted(Path(m.path).name for m in g.copies) for g in groups] == [["half.png", "recompressed.jpg"]] * 3
    assert_stars(groups, DEFAULT_DUPLICATE_THRESHOLD)
