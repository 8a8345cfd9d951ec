"""Recall@k of the real engine (`indexer.bench_recall`): indexer + library FAISS index + caption index.

Every number the engine reports is checked against an independent brute force written here in plain
Python loops (float64 dot products, CLIP_benchmark definitions, ties to the lower dataset index), on a
small generated scene set indexed with the tiny random-weight model. The datasets hold exact ties on
purpose: a duplicated image file and captions repeated verbatim on two images.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.bench_recall import LINKS_FOLDER, RecallBenchReport, _ranked, bench_recall
from indexer.pipeline import index_folders
from retrieval.errors import DatasetError
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import CaptionedDataset, load_captions
from retrieval.quality.recall import Recall
from retrieval.quality.scene_dataset import generate_dataset
from tests import imagefactory
from tests.jsonlines import write_jsonl
from tests.libcheck import STORED_ATOL

IMAGES = 40
DUPLICATED = 5  # image copied byte for byte to dup.jpg, listed last with its own caption
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHARED_CAPTION = "the very same words on two images"  # given verbatim to images 2 and 7


# --- the independent reference ------------------------------------------------------------------------------


def ranking(scores: Sequence[float], *, ties_to_lower: bool = True) -> list[int]:
    """Gallery positions best first; equal scores ordered by position (lower first unless told otherwise)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i if ties_to_lower else -i))


def brute_force_recall(
    image_vectors: np.ndarray,
    text_vectors: np.ndarray,
    owners: Sequence[int],
    ks: Sequence[int],
    *,
    ties_to_lower: bool = True,
) -> Recall:
    """CLIP_benchmark recall@k in percent, one query at a time, with float64 dot products."""
    images = [[float(x) for x in vector] for vector in image_vectors.astype(np.float64)]
    texts = [[float(x) for x in vector] for vector in text_vectors.astype(np.float64)]

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    text_hits = dict.fromkeys(ks, 0)
    for caption, text in enumerate(texts):
        order = ranking([dot(text, image) for image in images], ties_to_lower=ties_to_lower)
        for k in ks:
            text_hits[k] += owners[caption] in order[:k]
    image_hits = dict.fromkeys(ks, 0)
    for position, image in enumerate(images):
        order = ranking([dot(image, text) for text in texts], ties_to_lower=ties_to_lower)
        for k in ks:
            image_hits[k] += any(owners[caption] == position for caption in order[:k])
    return Recall(
        {k: 100.0 * hits / len(texts) for k, hits in text_hits.items()},
        {k: 100.0 * hits / len(images) for k, hits in image_hits.items()},
    )


def assert_recall_equal(engine: Recall, reference: Recall) -> None:
    """Same ks, same values (to float rounding of the means)."""
    assert list(engine.text_to_image) == list(reference.text_to_image)
    assert list(engine.image_to_text) == list(reference.image_to_text)
    for k, value in reference.text_to_image.items():
        assert engine.text_to_image[k] == pytest.approx(value, abs=1e-9), f"text->image R@{k}"
    for k, value in reference.image_to_text.items():
        assert engine.image_to_text[k] == pytest.approx(value, abs=1e-9), f"image->text R@{k}"


# --- datasets and helpers -----------------------------------------------------------------------------------


def captioned_scenes(folder: Path) -> Path:
    """40 generated scenes with 1 to 4 captions each, one exact duplicate image file with its own caption
    (listed last), and one caption repeated verbatim on images 2 and 7; returns the JSONL file."""
    generated = generate_dataset(folder, sizes={"val": IMAGES}, image_size=32, captions_per_image=3)
    records: list[dict[str, object]] = []
    for position, line in enumerate(generated.split_file("val").read_text().splitlines()):
        record = json.loads(line)
        captions = record["captions"][: 1 + position % 3]
        if position == 2:
            captions = [*captions, SHARED_CAPTION]
        if position == 7:
            captions = [SHARED_CAPTION]  # its only caption: image 7's first hit is always a tie with image 2's
        records.append({"image": record["image"], "captions": captions})
    duplicate = folder / "images" / "val" / "dup.jpg"
    shutil.copyfile(folder / str(records[DUPLICATED]["image"]), duplicate)
    records.append({"image": "images/val/dup.jpg", "captions": ["a copy of another picture, captioned apart"]})
    return write_jsonl(folder / "captions.jsonl", records)


def link_dir(library: Library) -> Path:
    return library.directory / LINKS_FOLDER


def stored_vectors(library: Library, images: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Store ids and index vectors of `images` in their order, found through the links pointing at them."""
    by_target = {Path(os.readlink(entry.path)): entry.path for entry in os.scandir(link_dir(library))}
    ids = []
    for path in images:
        record = library.store.image_by_path(by_target[path.resolve()])
        assert record is not None and record.error is None, path
        ids.append(record.id)
    id_array = np.asarray(ids, dtype=np.int64)
    return id_array, library.load_index(gpu="never").reconstruct(id_array)


@pytest.fixture(scope="module")
def exact_encoder(tiny_spec: ModelSpec) -> Encoder:
    """The tiny model encoding one input at a time: identical inputs give bit-identical vectors (batched
    encoding may differ in the last bit with the batch's other members), so the dataset's ties are exact."""
    encoder = Encoder(tiny_spec, device="cpu", batch_size=1)
    encoder.load()
    return encoder


@dataclass
class Benched:
    data: CaptionedDataset
    library: Library
    report: RecallBenchReport
    ks: tuple[int, ...]


@pytest.fixture(scope="module")
def benched(tmp_path_factory: pytest.TempPathFactory, exact_encoder: Encoder) -> Iterator[Benched]:
    """The scene set benchmarked once at every k from 1 to the number of captions: every rank counts."""
    root = tmp_path_factory.mktemp("bench")
    data = load_captions(captioned_scenes(root / "scenes"))
    ks = tuple(range(1, len(data.captions) + 1))
    library = Library(root / "lib", create=True)
    report = bench_recall(library, exact_encoder, data, ks=ks, workers=2)
    yield Benched(data, library, report, ks)
    library.close()


# --- engine == brute force ----------------------------------------------------------------------------------


def test_dataset_has_the_intended_shape(benched: Benched) -> None:
    """Pins the fixture: variable caption counts, the duplicate image last, the shared caption on 2 and 7."""
    data = benched.data
    assert len(data) == IMAGES + 1
    counts = [data.caption_image.count(position) for position in range(len(data))]
    assert set(counts[:IMAGES]) == {1, 2, 3, 4} and counts[7] == 1
    assert counts[IMAGES] == 1
    assert data.images[IMAGES].read_bytes() == data.images[DUPLICATED].read_bytes()
    owners_of_shared = [
        owner for text, owner in zip(data.captions, data.caption_image, strict=True) if text == SHARED_CAPTION
    ]
    assert owners_of_shared == [2, 7]


def test_stored_vectors_are_the_encoders_vectors_of_the_images(benched: Benched, exact_encoder: Encoder) -> None:
    """The indexer's decode path gives the same vectors as encoding the opened files directly."""
    _, vectors = stored_vectors(benched.library, benched.data.images)
    direct = exact_encoder.encode_images([Image.open(path).convert("RGB") for path in benched.data.images])
    np.testing.assert_allclose(vectors, direct, atol=STORED_ATOL)
    assert np.array_equal(vectors[DUPLICATED], vectors[IMAGES]), "the duplicate files must tie exactly"


def test_engine_recall_equals_brute_force_at_every_k(benched: Benched, exact_encoder: Encoder) -> None:
    """report.index (FAISS both ways) and report.exact equal the reference at every k, ties to the lower index,
    and that tie rule matters on this dataset (ties to the higher index would give other numbers)."""
    data = benched.data
    _, image_vectors = stored_vectors(benched.library, data.images)
    text_vectors = exact_encoder.encode_texts(list(data.captions))
    first = data.captions.index(SHARED_CAPTION)
    second = data.captions.index(SHARED_CAPTION, first + 1)
    assert np.array_equal(text_vectors[first], text_vectors[second])

    reference = brute_force_recall(image_vectors, text_vectors, data.caption_image, benched.ks)
    upside_down = brute_force_recall(image_vectors, text_vectors, data.caption_image, benched.ks, ties_to_lower=False)
    assert reference.text_to_image != upside_down.text_to_image
    assert reference.image_to_text != upside_down.image_to_text

    assert_recall_equal(benched.report.index, reference)
    assert_recall_equal(benched.report.exact, reference)
    assert benched.report.index_matches_exact
    assert benched.report.index.text_to_image[len(data)] == 100.0
    assert benched.report.index.image_to_text[len(data.captions)] == 100.0


def test_report_facts(benched: Benched, exact_encoder: Encoder) -> None:
    """Counts, ks, the model's description and key, and the JSON form carry what the CLI prints."""
    report = benched.report
    assert (report.images, report.captions) == (IMAGES + 1, len(benched.data.captions))
    assert report.ks == list(benched.ks)
    assert report.model == exact_encoder.identity.description
    assert report.model_key == exact_encoder.identity.key
    assert report.dataset == str(benched.data.source)
    assert report.unreadable == [] and report.ann is None
    assert {"index", "encode_texts", "search"} <= set(report.seconds)
    as_json = json.loads(json.dumps(report.to_json()))
    assert as_json["index_matches_exact"] is True
    assert as_json["index"]["text_to_image"]["R@1"] == report.index.text_to_image[1]
    assert as_json["unreadable_images"] == 0


def test_links_folder_holds_exactly_the_dataset(benched: Benched) -> None:
    """One link per dataset image, each pointing at its file; the store holds those rows and nothing else."""
    entries = list(os.scandir(link_dir(benched.library)))
    targets = sorted(Path(os.readlink(entry.path)) for entry in entries)
    assert all(entry.is_symlink() for entry in entries)
    assert targets == sorted(path.resolve() for path in benched.data.images)
    assert benched.library.store.count_vectors() == len(benched.data)


# --- ann ----------------------------------------------------------------------------------------------------


def test_ann_reports_recall_and_overlap(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """ann="HNSW32" adds its own recall and its overlap with the exact top-k, all percentages."""
    data = load_captions(captioned_scenes(tmp_path / "scenes"))
    with Library(tmp_path / "lib", create=True) as library:
        report = bench_recall(library, tiny_encoder, data, ks=(1, 5), ann="HNSW32")
    assert report.ann is not None and report.ann["factory"] == "HNSW32"
    for direction in ("text_to_image", "image_to_text"):
        assert set(report.ann["recall"][direction]) == {"R@1", "R@5"}
        assert all(0.0 <= value <= 100.0 for value in report.ann["recall"][direction].values())
    assert set(report.ann["overlap_with_exact"]) == {"@1", "@5"}
    for overlaps in report.ann["overlap_with_exact"].values():
        assert set(overlaps) == {"text_to_image", "image_to_text"}
        assert all(0.0 <= value <= 100.0 for value in overlaps.values())
    # HNSW over 41 images and ~90 captions finds (almost) everything the exact search does
    assert report.ann["overlap_with_exact"]["@5"]["text_to_image"] > 80.0


def test_bad_ann_factory_and_bad_ks_are_dataset_errors(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """A factory string faiss rejects, and an empty or zero k, are refused with the culprit named."""
    data = load_captions(captioned_scenes(tmp_path / "scenes"))
    with Library(tmp_path / "lib", create=True) as library:
        with pytest.raises(DatasetError, match="NoSuchIndex7"):
            bench_recall(library, tiny_encoder, data, ann="NoSuchIndex7")
        with pytest.raises(DatasetError, match="k >= 1"):
            bench_recall(library, tiny_encoder, data, ks=(0, 5))
        with pytest.raises(DatasetError, match="k >= 1"):
            bench_recall(library, tiny_encoder, data, ks=())


# --- unreadable images --------------------------------------------------------------------------------------


def test_unreadable_images_are_left_out_with_their_captions(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """A zero-byte and a truncated image are listed in report.unreadable, and recall is that of the rest."""
    folder = tmp_path / "mixed"
    records: list[dict[str, object]] = []
    for seed in range(12):
        imagefactory.pattern_png(folder / f"p{seed:02d}.png", seed=seed, size=(48, 48))
        records.append({"image": f"p{seed:02d}.png", "captions": [f"pattern number {seed}", f"picture {seed}"]})
    imagefactory.zero_byte(folder / "empty.png")
    imagefactory.truncated_jpeg(folder / "cut.jpg", size=(64, 64))
    records.insert(3, {"image": "empty.png", "captions": ["an empty file"]})
    records.insert(8, {"image": "cut.jpg", "captions": ["half a picture", "the other half"]})
    data = load_captions(write_jsonl(folder / "captions.jsonl", records))
    with Library(tmp_path / "lib", create=True) as library:
        report = bench_recall(library, tiny_encoder, data, ks=(1, 3, 14))
        _, readable = stored_vectors(library, [folder / f"p{seed:02d}.png" for seed in range(12)])

    unreadable = dict(report.unreadable)
    assert set(unreadable) == {str(folder / "empty.png"), str(folder / "cut.jpg")}
    assert "zero-byte" in unreadable[str(folder / "empty.png")]
    assert (report.images, report.captions) == (12, 24)

    texts = [text for seed in range(12) for text in (f"pattern number {seed}", f"picture {seed}")]
    owners = [seed for seed in range(12) for _ in range(2)]
    reference = brute_force_recall(readable, tiny_encoder.encode_texts(texts), owners, (1, 3, 14))
    assert_recall_equal(report.index, reference)
    assert report.index.text_to_image[14] == 100.0  # 14 > 12 images left: every caption finds its image


def test_all_images_unreadable_is_a_dataset_error(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """Nothing left to measure: a DatasetError naming the captions file, not an empty report."""
    imagefactory.zero_byte(tmp_path / "data" / "a.png")
    imagefactory.text_as_image(tmp_path / "data" / "b.jpg")
    captions = write_jsonl(
        tmp_path / "data" / "captions.jsonl",
        [{"image": "a.png", "caption": "nothing"}, {"image": "b.jpg", "caption": "text"}],
    )
    with Library(tmp_path / "lib", create=True) as library, pytest.raises(DatasetError, match="no readable image"):
        bench_recall(library, tiny_encoder, load_captions(captions))


# --- reruns and other datasets on one library ---------------------------------------------------------------


def test_second_run_embeds_nothing_and_gives_the_same_numbers(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """A rerun on the same library calls no embedding progress, keeps the store generation, ids and row
    count, and reports identical recall."""
    data = load_captions(captioned_scenes(tmp_path / "scenes"))
    with Library(tmp_path / "lib", create=True) as library:
        calls: list[tuple[int, int]] = []
        first = bench_recall(library, tiny_encoder, data, progress=lambda done, total: calls.append((done, total)))
        assert calls and calls[-1] == (len(data), len(data))
        generation, (ids, vectors) = library.store.generation(), stored_vectors(library, data.images)

        calls.clear()
        second = bench_recall(library, tiny_encoder, data, progress=lambda done, total: calls.append((done, total)))
        assert calls == []
        assert library.store.generation() == generation
        again_ids, again_vectors = stored_vectors(library, data.images)
        assert np.array_equal(again_ids, ids) and np.array_equal(again_vectors, vectors)
        assert library.store.count_vectors() == len(data)
        assert len(library.load_index(gpu="never")) == len(data)
    assert second.index == first.index and second.exact == first.exact


def test_smaller_dataset_removes_stale_links_and_rows(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """After a larger dataset, a smaller one leaves exactly its own links and rows, with unchanged vectors."""
    data = load_captions(captioned_scenes(tmp_path / "scenes"))
    small = data.head(15)
    with Library(tmp_path / "lib", create=True) as library:
        bench_recall(library, tiny_encoder, data)
        _, big_vectors = stored_vectors(library, data.images)
        report = bench_recall(library, tiny_encoder, small, ks=(1, 5))
        targets = sorted(Path(os.readlink(entry.path)) for entry in os.scandir(link_dir(library)))
        assert targets == sorted(path.resolve() for path in small.images)
        assert library.store.count_vectors() == 15
        _, small_vectors = stored_vectors(library, small.images)
        np.testing.assert_array_equal(small_vectors, big_vectors[:15])
        reference = brute_force_recall(
            small_vectors, tiny_encoder.encode_texts(list(small.captions)), small.caption_image, (1, 5)
        )
    assert (report.images, report.captions) == (15, len(small.captions))
    assert_recall_equal(report.index, reference)


def test_reordered_dataset_of_same_size_same_mtime_files_gets_the_right_vectors(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    """Two different images with equal byte size and mtime (as after extracting an archive), benchmarked in
    one order and then the other on one library: each position must get its own image's vector, not the
    vector of the file its link pointed at before."""
    red, blue = tmp_path / "red.bmp", tmp_path / "blue.bmp"
    Image.new("RGB", (32, 32), (230, 20, 20)).save(red)
    Image.new("RGB", (32, 32), (20, 20, 230)).save(blue)
    stamp = red.stat().st_mtime_ns
    os.utime(blue, ns=(stamp, stamp))
    assert red.stat().st_size == blue.stat().st_size and blue.stat().st_mtime_ns == stamp
    forward = CaptionedDataset(tmp_path, (red, blue), ("a red square", "a blue square"), (0, 1))
    backward = CaptionedDataset(tmp_path, (blue, red), ("a blue square", "a red square"), (0, 1))
    expected = tiny_encoder.encode_images([Image.open(blue).convert("RGB"), Image.open(red).convert("RGB")])
    with Library(tmp_path / "lib", create=True) as library:
        bench_recall(library, tiny_encoder, forward, ks=(1,))
        bench_recall(library, tiny_encoder, backward, ks=(1,))
        _, vectors = stored_vectors(library, backward.images)
        assert library.store.count_vectors() == 2
    np.testing.assert_allclose(vectors, expected, atol=STORED_ATOL)


def test_library_holding_other_images_is_refused(tmp_path: Path, tiny_encoder: Encoder, photos: Path) -> None:
    """A library that also holds other images (say the user's photos) is refused before anything is linked or
    indexed: those images would crowd the dataset's out of the FAISS top-k, and the benchmark's would pollute
    that library's searches."""
    data = load_captions(captioned_scenes(tmp_path / "scenes"))
    with Library(tmp_path / "lib", create=True) as library:
        index_folders(library, tiny_encoder, [str(photos)])
        before = library.store.count_vectors()
        with pytest.raises(DatasetError, match=r"holds 13 image\(s\).*a library of its own"):
            bench_recall(library, tiny_encoder, data)
        assert library.store.count_vectors() == before
        assert not link_dir(library).exists()


def test_faiss_ranking_breaks_wide_ties_by_dataset_position() -> None:
    """The engine's FAISS ranking with more exact ties than it fetches at first (150 identical vectors among
    300, k=10): it widens the search until the ties are resolved and returns the lowest dataset positions, even
    though the index's ids run in another order than the positions."""
    rng = np.random.default_rng(7)
    gallery = rng.standard_normal((300, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    tied = np.sort(rng.choice(300, size=150, replace=False))
    gallery[tied] = gallery[tied[0]]
    ids = rng.permutation(np.arange(1000, 1300))  # position p is stored under id ids[p]
    index = VectorIndex(16, gpu="never")
    index.add(ids[::-1], gallery[::-1])  # inserted highest position first
    queries = np.stack([gallery[tied[0]], -gallery[tied[0]], gallery[5]])
    ranked = _ranked(index, queries, 10, id_to_position={int(i): p for p, i in enumerate(ids)})

    scores = (queries.astype(np.float64) @ gallery.astype(np.float64).T).tolist()
    expected = [ranking(row)[:10] for row in scores]
    assert ranked.tolist() == expected
    assert ranked[0].tolist() == tied[:10].tolist()
