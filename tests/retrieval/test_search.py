"""Tests of retrieval.search.Searcher on real libraries: exact numpy references, filters, errors.

Most tests share one library indexed once per module with the tiny random-weight model; the tests of
ranks and ties use a library whose rows carry hand-made unit vectors, written through StoreWriter.
"""

from __future__ import annotations

import os
import shutil
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from indexer.pipeline import index_folders
from retrieval.errors import EmptyLibraryError, InvalidQueryError, UnreadableImageError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.search import Searcher, SearchResult
from retrieval.storage.records import FileMetadata
from retrieval.storage.vectors import as_stored
from tests import imagefactory as factory
from tests.libcheck import reference_vectors, store_vectors

SCORE_ATOL = 1e-5
STORED_SCORE_ATOL = 1e-3
"""A score from a stored (float16) vector against the same vector in float32, or itself."""


@dataclass
class Indexed:
    """A library indexed from `root`, a searcher over it, and the store's vectors as the exact reference."""

    root: Path
    library: Library
    searcher: Searcher
    ids: np.ndarray
    vectors: np.ndarray
    paths: dict[int, str]

    def id_of(self, path: Path | str) -> int:
        return next(i for i, p in self.paths.items() if p == os.path.abspath(path))

    def brute_force(self, query: np.ndarray, allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """Every (id, score) by exact cosine, best first, optionally restricted to `allowed` ids."""
        scores = self.vectors @ query.astype(np.float32)
        pairs = [(int(i), float(s)) for i, s in zip(self.ids, scores, strict=True)]
        if allowed is not None:
            pairs = [pair for pair in pairs if pair[0] in allowed]
        return sorted(pairs, key=lambda pair: -pair[1])


def _assert_matches(results: list[SearchResult], expected: list[tuple[int, float]]) -> None:
    """Results equal the reference ranking: same length, ranks 1..n, same scores in order, and each
    result's score is the reference score of its own id (so equal-score swaps are still accepted)."""
    reference = dict(expected)
    assert [r.rank for r in results] == list(range(1, len(results) + 1))
    assert len(results) == len(expected)
    np.testing.assert_allclose([r.score for r in results], [s for _, s in expected], atol=SCORE_ATOL)
    for result in results:
        assert result.id in reference
        assert np.isclose(result.score, reference[result.id], atol=SCORE_ATOL)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Encoder) -> Iterator[Indexed]:
    """Ten PNGs at the top, three images in trip/, one in trip-extra/ (a name sharing trip's prefix),
    and one unreadable file, indexed once."""
    base = tmp_path_factory.mktemp("search")
    root = factory.photo_folder(base / "photos")
    factory.pattern_png(root / "trip-extra" / "img12.png", seed=12)
    factory.truncated_jpeg(root / "broken.jpg")
    library = Library(base / "library", create=True)
    report = index_folders(library, tiny_encoder, [str(root)], workers=2)
    assert (report.embedded, report.failed) == (14, 1)
    dim = library.dim()
    assert dim is not None
    _generation, ids, vectors = store_vectors(library.store, dim)
    paths = {i: r.path for i, r in library.store.rows_by_ids(ids.tolist()).items()}
    yield Indexed(root, library, Searcher(library, tiny_encoder, gpu="never"), ids, vectors, paths)
    library.close()


def _encode_file(encoder: Encoder, path: Path) -> np.ndarray:
    return reference_vectors(encoder, [str(path)])[0]


# --- image queries -----------------------------------------------------------------------------


def test_every_image_finds_itself_first_with_score_one(indexed: Indexed) -> None:
    """With include_self, each indexed image is its own best match at cosine ~1."""
    for image_id, path in indexed.paths.items():
        results = indexed.searcher.search_image(path, k=1, include_self=True)
        assert [(r.id, r.path) for r in results] == [(image_id, path)]
        assert results[0].score == pytest.approx(1.0, abs=STORED_SCORE_ATOL)


def test_image_query_leaves_itself_out_by_default(indexed: Indexed) -> None:
    """Without include_self the query image never appears, and every other image does."""
    total = len(indexed.ids)
    for image_id, path in indexed.paths.items():
        results = indexed.searcher.search_image(path, k=total)
        assert image_id not in {r.id for r in results}
        assert len(results) == total - 1


def test_indexed_query_scores_equal_a_search_with_its_encoded_pixels(indexed: Indexed, tiny_encoder: Encoder) -> None:
    """An indexed unchanged file scores like the encoder's own vector of its decoded pixels."""
    path = indexed.root / "img03.png"
    own_id = indexed.id_of(path)
    results = indexed.searcher.search_image(path, k=5)
    fresh = indexed.searcher.search_vector(_encode_file(tiny_encoder, path), k=5, exclude_ids={own_id})
    assert [r.id for r in results] == [r.id for r in fresh]
    assert np.allclose([r.score for r in results], [r.score for r in fresh], atol=STORED_SCORE_ATOL)
    stored = indexed.vectors[indexed.ids == own_id][0]  # the query is the file's stored vector
    expected = [pair for pair in indexed.brute_force(stored) if pair[0] != own_id]
    _assert_matches(results, expected[:5])


def test_query_copied_outside_the_library_is_encoded(indexed: Indexed, tiny_encoder: Encoder, tmp_path: Path) -> None:
    """A copy outside the root is not indexed: it is encoded, and finds its original at ~1."""
    original = indexed.root / "trip" / "img10.png"
    copy = Path(shutil.copy(original, tmp_path / "copy.png"))
    assert indexed.searcher.image_vector(copy)[1] is None
    results = indexed.searcher.search_image(copy, k=4)
    assert results[0].path == str(original)
    assert results[0].score == pytest.approx(1.0, abs=1e-4)
    _assert_matches(results, indexed.brute_force(_encode_file(tiny_encoder, copy))[:4])


def test_new_image_query_matches_brute_force(indexed: Indexed, tiny_encoder: Encoder, tmp_path: Path) -> None:
    """An image never seen before is encoded and ranked exactly like the numpy reference."""
    new = factory.pattern_png(tmp_path / "new.png", seed=99)
    results = indexed.searcher.search_image(new, k=6)
    _assert_matches(results, indexed.brute_force(_encode_file(tiny_encoder, new))[:6])


def test_unreadable_or_missing_query_image_raises(indexed: Indexed, tmp_path: Path) -> None:
    """Not an image, an indexed file recorded as broken, or no file at all: UnreadableImageError."""
    fake = factory.text_as_image(tmp_path / "fake.jpg")
    for path in (fake, indexed.root / "broken.jpg", tmp_path / "missing.png"):
        with pytest.raises(UnreadableImageError) as caught:
            indexed.searcher.search_image(path)
        assert caught.value.path == str(path)


# --- text queries ------------------------------------------------------------------------------


def test_text_search_equals_exact_cosine(indexed: Indexed, tiny_encoder: Encoder) -> None:
    """k results, best first, with the scores of a full numpy brute force over the stored vectors."""
    results = indexed.searcher.search_text("a red circle", k=5)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    _assert_matches(results, indexed.brute_force(tiny_encoder.encode_texts(["a red circle"])[0])[:5])
    assert all(r.path == indexed.paths[r.id] for r in results)


def test_template_equals_literal_query(indexed: Indexed) -> None:
    """`a photo of {}` + `dog` searches exactly as the literal `a photo of dog`."""
    templated = indexed.searcher.search_text("dog", k=4, template="a photo of {}")
    literal = indexed.searcher.search_text("a photo of dog", k=4)
    plain = indexed.searcher.search_text("dog", k=4)
    assert [(r.id, r.score) for r in templated] == [(r.id, r.score) for r in literal]
    assert [r.score for r in templated] != [r.score for r in plain]


@pytest.mark.parametrize(
    ("query", "template"),
    [("dog", "a photo of a dog"), ("", None), ("   \t", None), ("  ", "a photo of {}")],
)
def test_invalid_text_queries_raise(indexed: Indexed, query: str, template: str | None) -> None:
    """A template without {} and an empty or blank query are refused."""
    with pytest.raises(InvalidQueryError):
        indexed.searcher.search_text(query, template=template)


# --- filters and k -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 10])
def test_within_folder_equals_restricted_brute_force(indexed: Indexed, tiny_encoder: Encoder, k: int) -> None:
    """`within` keeps only images under the folder (not trip-extra/), equal to the restricted exact top-k."""
    folder = indexed.root / "trip"
    allowed = {i for i, p in indexed.paths.items() if p.startswith(str(folder) + os.sep)}
    assert len(allowed) == 3
    query = tiny_encoder.encode_texts(["a red circle"])[0]
    results = indexed.searcher.search_text("a red circle", k=k, within=folder)
    assert all(r.path.startswith(str(folder) + os.sep) for r in results)
    _assert_matches(results, indexed.brute_force(query, allowed)[:k])


def test_within_and_self_exclusion_combine(indexed: Indexed) -> None:
    """An image query inside a folder filter leaves itself out and still fills k from the folder."""
    query_path = indexed.root / "trip" / "img10.png"
    own_id = indexed.id_of(query_path)
    results = indexed.searcher.search_image(query_path, k=2, within=indexed.root / "trip")
    allowed = {i for i, p in indexed.paths.items() if "/trip/" in p} - {own_id}
    _assert_matches(results, indexed.brute_force(indexed.vectors[indexed.ids == own_id][0], allowed)[:2])


def test_within_a_folder_without_images_returns_nothing(indexed: Indexed, tmp_path: Path) -> None:
    """A folder filter matching no indexed image gives an empty list, not an error."""
    assert indexed.searcher.search_text("anything", k=3, within=tmp_path) == []


@pytest.mark.parametrize("where", ["missing", "a file"])
def test_within_a_folder_that_does_not_exist_raises(indexed: Indexed, tmp_path: Path, where: str) -> None:
    """`within` naming no folder (a typo, or a file) is an InvalidQueryError naming `within`, not 'no results'."""
    folder = tmp_path / "no-such-folder"
    if where == "a file":
        folder.write_text("not a folder")
    with pytest.raises(InvalidQueryError, match="`within`") as caught:
        indexed.searcher.search_text("anything", k=3, within=folder)
    assert caught.value.parameters == ("within",)


@pytest.mark.parametrize("min_score", [float("nan"), float("inf"), float("-inf"), 1.5, -1.01])
def test_min_score_outside_minus_one_to_one_raises(indexed: Indexed, min_score: float) -> None:
    """A cosine floor that is NaN, infinite or outside [-1, 1] is refused, naming `min_score`."""
    with pytest.raises(InvalidQueryError, match="`min_score`") as caught:
        indexed.searcher.search_text("green square", k=3, min_score=min_score)
    assert caught.value.parameters == ("min_score",)


def test_a_huge_k_inside_a_folder_allocates_by_the_folder(indexed: Indexed, tiny_encoder: Encoder) -> None:
    """k = 10**9 within a 3-image folder returns those 3 and allocates by them, never by k."""
    query = tiny_encoder.encode_texts(["a red circle"])[0]
    tracemalloc.start()
    try:
        results = indexed.searcher.search_vector(query, k=10**9, within=indexed.root / "trip")
        everything = indexed.searcher.search_vector(query, k=10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(results) == 3 and len(everything) == len(indexed.ids)
    assert peak < 8 << 20


def test_min_score_drops_lower_scores(indexed: Indexed, tiny_encoder: Encoder) -> None:
    """Only results scoring at least min_score are kept; the rest of the ranking is unchanged."""
    reference = indexed.brute_force(tiny_encoder.encode_texts(["green square"])[0])
    threshold = (reference[4][1] + reference[5][1]) / 2
    results = indexed.searcher.search_text("green square", k=10, min_score=threshold)
    assert all(r.score >= threshold for r in results)
    _assert_matches(results, reference[:5])
    assert indexed.searcher.search_text("green square", k=10, min_score=1.0) == []


def test_k_larger_than_library_returns_everything(indexed: Indexed) -> None:
    """Asking for more results than images returns each indexed image once."""
    results = indexed.searcher.search_text("anything at all", k=1000)
    assert sorted(r.id for r in results) == sorted(indexed.ids.tolist())


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_raises(indexed: Indexed, k: int) -> None:
    """k must be at least 1."""
    with pytest.raises(InvalidQueryError):
        indexed.searcher.search_text("dog", k=k)


def test_results_carry_exif_facts(indexed: Indexed) -> None:
    """The JPEG's stored EXIF date, camera and (rotated) size come through in its result."""
    path = indexed.root / "trip" / "camera.jpg"
    result = indexed.searcher.search_image(path, k=1, include_self=True)[0]
    assert (result.width, result.height) == (40, 80)
    assert result.taken_at == datetime(2021, 7, 4, 18, 30)
    assert (result.camera_make, result.camera_model) == ("Canon", "EOS 80D")
    assert result.size == path.stat().st_size
    assert result.to_json()["taken_at"] == "2021-07-04T18:30:00"


def test_empty_library_raises(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """A library with its model bound but no images indexed refuses to search."""
    (tmp_path / "empty").mkdir()
    with Library(tmp_path / "library", create=True) as library:
        report = index_folders(library, tiny_encoder, [str(tmp_path / "empty")], workers=1)
        assert report.scanned == 0
        searcher = Searcher(library, tiny_encoder, gpu="never")
        with pytest.raises(EmptyLibraryError):
            searcher.search_text("dog")
        with pytest.raises(EmptyLibraryError):
            searcher.search_vector(np.ones(tiny_encoder.dim, dtype=np.float32))


# --- hand-chosen scores ------------------------------------------------------------------------


def _unit(*components: float, dim: int) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[: len(components)] = components
    return vector / np.linalg.norm(vector)


@pytest.fixture
def handmade(tmp_path: Path, tiny_encoder: Encoder) -> Iterator[tuple[Library, dict[str, int], int]]:
    """A library whose rows carry hand-made unit vectors under fake paths, bound to the tiny model."""
    dim = tiny_encoder.dim
    rows = {
        "/fake/a/same.jpg": _unit(1, dim=dim),  # score 1 against e0
        "/fake/b/twin.jpg": _unit(1, dim=dim),  # a tie with same.jpg
        "/fake/a/half.jpg": _unit(1, 1, dim=dim),  # 1/sqrt(2)
        "/fake/b/tenth.jpg": _unit(0.1, 1, dim=dim),  # 0.1/sqrt(1.01)
        "/fake/a/ortho.jpg": _unit(0, 1, dim=dim),  # 0
        "/fake/b/opposite.jpg": _unit(-1, dim=dim),  # -1
    }
    ids: dict[str, int] = {}
    with Library(tmp_path / "library", create=True) as library:
        library.bind_model(tiny_encoder)
        with library.store.writer() as writer:
            for number, (path, vector) in enumerate(rows.items()):
                meta = FileMetadata(
                    path=path,
                    size=1000 + number,
                    mtime_ns=number,
                    content_hash=f"hash{number}",
                    width=100 + number,
                    height=50 + number,
                    format="JPEG",
                    taken_at=datetime(2020, 1, number + 1, 12, 0),
                    camera_make="Maker",
                    camera_model=f"Model {number}",
                )
                ids[path] = writer.upsert_image(meta, vector, tiny_encoder.identity.short_key)
        yield library, ids, dim


def test_handmade_ranks_and_ties(handmade: tuple[Library, dict[str, int], int], tiny_encoder: Encoder) -> None:
    """Scores are the hand-computed cosines, in order; two equal vectors share the top two ranks."""
    library, ids, dim = handmade
    results = Searcher(library, tiny_encoder, gpu="never").search_vector(_unit(1, dim=dim), k=10)
    assert [r.rank for r in results] == [1, 2, 3, 4, 5, 6]
    assert {r.path for r in results[:2]} == {"/fake/a/same.jpg", "/fake/b/twin.jpg"}
    assert [r.path for r in results[2:]] == [
        "/fake/a/half.jpg",
        "/fake/b/tenth.jpg",
        "/fake/a/ortho.jpg",
        "/fake/b/opposite.jpg",
    ]
    expected = [1.0, 1.0, 1 / np.sqrt(2), 0.1 / np.sqrt(1.01), 0.0, -1.0]
    np.testing.assert_allclose([r.score for r in results], expected, atol=STORED_SCORE_ATOL)
    top = Searcher(library, tiny_encoder, gpu="never").search_vector(_unit(1, dim=dim), k=1)
    assert len(top) == 1 and top[0].id in {ids["/fake/a/same.jpg"], ids["/fake/b/twin.jpg"]}


def test_handmade_exclude_ids(handmade: tuple[Library, dict[str, int], int], tiny_encoder: Encoder) -> None:
    """Excluded ids never appear and the next best fill their places, still k results."""
    library, ids, dim = handmade
    searcher = Searcher(library, tiny_encoder, gpu="never")
    excluded = {ids["/fake/a/same.jpg"], ids["/fake/a/half.jpg"]}
    results = searcher.search_vector(_unit(1, dim=dim), k=3, exclude_ids=excluded)
    assert [r.path for r in results] == ["/fake/b/twin.jpg", "/fake/b/tenth.jpg", "/fake/a/ortho.jpg"]
    assert [r.rank for r in results] == [1, 2, 3]


def test_handmade_within_and_min_score(handmade: tuple[Library, dict[str, int], int], tiny_encoder: Encoder) -> None:
    """A folder filter on the fake paths and a score floor give exactly the hand-computed survivors; a
    folder that neither exists nor holds an indexed image is refused."""
    library, _ids, dim = handmade
    searcher = Searcher(library, tiny_encoder, gpu="never")
    query = _unit(1, dim=dim)
    under_b = searcher.search_vector(query, k=2, within="/fake/b")
    assert [r.path for r in under_b] == ["/fake/b/twin.jpg", "/fake/b/tenth.jpg"]
    floor = searcher.search_vector(query, k=10, within="/fake/a", min_score=0.0)
    assert [r.path for r in floor] == ["/fake/a/same.jpg", "/fake/a/half.jpg", "/fake/a/ortho.jpg"]
    assert searcher.search_vector(query, k=10, within="/fake") != []
    with pytest.raises(InvalidQueryError, match="`within`"):
        searcher.search_vector(query, k=10, within="/fak")


def test_handmade_results_carry_row_facts(handmade: tuple[Library, dict[str, int], int], tiny_encoder: Encoder) -> None:
    """Each result carries the width, height, date, camera and size of its own row."""
    library, ids, dim = handmade
    results = Searcher(library, tiny_encoder, gpu="never").search_vector(_unit(-1, dim=dim), k=1)
    number = list(ids).index("/fake/b/opposite.jpg")
    result = results[0]
    assert result.id == ids["/fake/b/opposite.jpg"]
    assert (result.width, result.height, result.size) == (100 + number, 50 + number, 1000 + number)
    assert result.taken_at == datetime(2020, 1, number + 1, 12, 0)
    assert (result.camera_make, result.camera_model) == ("Maker", f"Model {number}")


def test_result_is_its_record_under_a_rank_and_score(
    handmade: tuple[Library, dict[str, int], int], tiny_encoder: Encoder
) -> None:
    """Every field a result shows (all of `to_json`, in its order) is its stored record's field of that
    name; `from_record` is how search makes each result."""
    library, ids, dim = handmade
    results = Searcher(library, tiny_encoder, gpu="never").search_vector(_unit(0.1, 1, dim=dim), k=6)
    records = library.store.rows_by_ids(ids.values())
    for result in results:
        record = records[result.id]
        assert result == SearchResult.from_record(record, result.rank, result.score)
        assert record.taken_at is not None
        assert result.to_json() == {
            "rank": result.rank,
            "score": result.score,
            "id": record.id,
            "path": record.path,
            "width": record.width,
            "height": record.height,
            "taken_at": record.taken_at.isoformat(),
            "camera_make": record.camera_make,
            "camera_model": record.camera_model,
            "size": record.size,
            "mtime_ns": record.mtime_ns,
        }
        assert list(result.to_json()) == [item.name for item in fields(SearchResult)]


def test_query_file_uses_its_stored_vector_until_it_changes(
    handmade: tuple[Library, dict[str, int], int], tiny_encoder: Encoder, tmp_path: Path
) -> None:
    """A real file whose row holds a hand-made vector is searched with that vector (not the model's)
    while its size and mtime match the row; once its mtime changes, it is decoded and encoded."""
    library, ids, dim = handmade
    real = factory.pattern_png(tmp_path / "real.png", seed=5)
    stat = real.stat()
    planted = _unit(1, 1, dim=dim)
    with library.store.writer() as writer:
        meta = FileMetadata(os.path.abspath(real), stat.st_size, stat.st_mtime_ns, "realhash", 64, 64, "PNG")
        real_id = writer.upsert_image(meta, planted, tiny_encoder.identity.short_key)
    searcher = Searcher(library, tiny_encoder, gpu="never")
    vector, own_id = searcher.image_vector(real)
    assert own_id == real_id
    np.testing.assert_array_equal(vector, as_stored(planted))
    results = searcher.search_image(real, k=2)
    assert real_id not in {r.id for r in results}
    assert [r.path for r in results] == ["/fake/a/half.jpg", "/fake/b/tenth.jpg"]
    np.testing.assert_allclose([r.score for r in results], [1.0, 1.1 / np.sqrt(2.02)], atol=STORED_SCORE_ATOL)

    os.utime(real, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    vector, own_id = searcher.image_vector(real)
    assert own_id == real_id
    encoded = _encode_file(tiny_encoder, real)
    np.testing.assert_allclose(vector, encoded, atol=1e-6)
    assert not np.allclose(vector, planted, atol=1e-2)
    results = searcher.search_image(real, k=10)
    assert real_id not in {r.id for r in results}
    handmade_vectors = {i: searcher.index.reconstruct([i])[0] for i in ids.values()}
    for result in results:
        assert result.score == pytest.approx(float(handmade_vectors[result.id] @ encoded), abs=SCORE_ATOL)


# --- rows deleted while a searcher holds its index ---------------------------------------------


def test_rows_deleted_after_the_index_loaded_are_replaced_by_the_next_best(
    handmade: tuple[Library, dict[str, int], int], tiny_encoder: Encoder
) -> None:
    """An index run deletes the two best rows after the searcher loaded its index: the search still
    returns k results, the next candidates in order, and never the deleted rows."""
    library, ids, dim = handmade
    searcher = Searcher(library, tiny_encoder, gpu="never")
    deleted = {ids["/fake/a/same.jpg"], ids["/fake/b/twin.jpg"]}
    with library.store.writer() as writer:
        assert writer.delete_images(deleted) == 2
    assert len(searcher.index) == 6  # the searcher still holds the old index
    results = searcher.search_vector(_unit(1, dim=dim), k=3)
    assert [r.path for r in results] == ["/fake/a/half.jpg", "/fake/b/tenth.jpg", "/fake/a/ortho.jpg"]
    assert [r.rank for r in results] == [1, 2, 3]
    within = searcher.search_vector(_unit(1, dim=dim), k=2, within="/fake/b")
    assert [r.path for r in within] == ["/fake/b/tenth.jpg", "/fake/b/opposite.jpg"]


def test_searches_during_concurrent_deletes_are_never_short(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """A thread deletes rows in small transactions while searches run on an index loaded before: every
    search returns k results (k rows always remain) and only rows that were present when it read them."""
    dim, total, keep, k = tiny_encoder.dim, 600, 40, 25
    vectors = np.random.default_rng(5).standard_normal((total, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Library(tmp_path / "library", create=True) as library:
        library.bind_model(tiny_encoder)
        with library.store.writer() as writer:
            ids = [
                writer.upsert_image(FileMetadata(f"/fake/{n}.jpg", n, n, f"h{n}"), vectors[n], "tiny")
                for n in range(total)
            ]
        searcher = Searcher(library, tiny_encoder, gpu="never")
        doomed = ids[keep:]
        np.random.default_rng(6).shuffle(doomed)

        def delete() -> None:
            for start in range(0, len(doomed), 5):
                with library.store.writer() as writer:
                    writer.delete_images(doomed[start : start + 5])

        deleter = threading.Thread(target=delete)
        deleter.start()
        counts = []
        while deleter.is_alive() or not counts:
            for query in vectors[:: total // 10]:
                counts.append(len(searcher.search_vector(query, k=k)))
        deleter.join()
        assert counts and all(count == k for count in counts), counts
        final = searcher.search_vector(vectors[0], k=k)
        assert len(final) == k and {r.id for r in final} <= set(ids[:keep])
