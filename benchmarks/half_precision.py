"""What storing vectors as float16 costs in accuracy: the cosine between each unit vector and its stored
value, and how many top-10 rankings change when the gallery is the stored vectors instead of float32.

    python benchmarks/half_precision.py --images 1000

Three galleries: random 512-d unit vectors (the cosine change, worst case: no structure); clustered 512-d
vectors (near neighbours at cosine ~0.8-0.95, queries from the same clusters); and the packaged reference
model's vectors of generated scenes, queried with their captions (text->image) and with the images
themselves (image->image, leaving the query out).
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from PIL import Image

from retrieval import Encoder, reference_spec
from retrieval.quality.captions import load_captions
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.storage.vectors import as_stored

K = 10


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def cosine_change(vectors: np.ndarray) -> tuple[float, float]:
    """(max, mean) of 1 - cos(v, stored(v))."""
    exact, stored = vectors.astype(np.float64), as_stored(vectors).astype(np.float64)
    cos = np.sum(exact * stored, axis=1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(stored, axis=1)
    return float(np.max(1 - cos)), float(np.mean(1 - cos))


def ranking_changes(
    gallery: np.ndarray, queries: np.ndarray, leave_out: np.ndarray | None = None
) -> tuple[int, int, float]:
    """(queries whose ordered top-K differs, whose top-K set differs, largest score change) between the
    float32 gallery and the stored one."""
    differs = set_differs = 0
    largest = 0.0
    stored = as_stored(gallery)
    for start in range(0, len(queries), 500):
        part = queries[start : start + 500]
        exact, half = part @ gallery.T, part @ stored.T
        largest = max(largest, float(np.max(np.abs(exact - half))))
        if leave_out is not None:
            rows = np.arange(len(part))
            exact[rows, leave_out[start : start + 500]] = half[rows, leave_out[start : start + 500]] = -np.inf
        top_exact = np.argsort(-exact, axis=1, kind="stable")[:, :K]
        top_half = np.argsort(-half, axis=1, kind="stable")[:, :K]
        differs += int(np.sum(np.any(top_exact != top_half, axis=1)))
        set_differs += sum(set(a) != set(b) for a, b in zip(top_exact.tolist(), top_half.tolist(), strict=True))
    return differs, set_differs, largest


def clustered(rows: int, clusters: int, dim: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    centres = unit(rng.standard_normal((clusters, dim)))
    return unit(centres[rng.integers(0, clusters, rows)] + spread * rng.standard_normal((rows, dim)) / np.sqrt(dim))


def reference_vectors(images: int) -> tuple[np.ndarray, np.ndarray]:
    """(image vectors, caption vectors) of `images` generated test scenes under the reference model."""
    with tempfile.TemporaryDirectory() as folder:
        sizes = {"train": 0, "val": 0, "test": images, "heldout-train": 0, "heldout-test": 0}
        data = load_captions(generate_dataset(folder, sizes=sizes).split_file("test"))
        encoder = Encoder(reference_spec(), device="cpu", batch_size=64)
        pictures = encoder.encode_images([Image.open(path).convert("RGB") for path in data.images])
        return pictures, encoder.encode_texts(list(data.captions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="generated scenes for the reference model")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    random = unit(rng.standard_normal((100_000, 512)))
    worst, mean = cosine_change(random)
    print(f"1 - cos(v, stored v), 100000 random 512-d unit vectors: max {worst:.2e}, mean {mean:.2e}")
    print(f"{'gallery':<44}{'queries':>8}{'top-10 order':>14}{'top-10 set':>12}{'max |score change|':>20}")
    gallery = clustered(20_000, 500, 512, 0.5, rng)
    queries = clustered(1000, 500, 512, 0.5, np.random.default_rng(1))
    rows = [("clustered 512-d, 20000 (cos to centre ~0.9)", queries, gallery, None)]
    pictures, captions = reference_vectors(args.images)
    rows.append((f"reference model, {len(pictures)} scenes, text->image", captions, pictures, None))
    rows.append(
        (f"reference model, {len(pictures)} scenes, image->image", pictures, pictures, np.arange(len(pictures)))
    )
    for name, query, items, leave_out in rows:
        differs, set_differs, largest = ranking_changes(items, query, leave_out)
        print(f"{name:<44}{len(query):>8}{differs:>14}{set_differs:>12}{largest:>20.2e}")
    worst, mean = cosine_change(pictures)
    print(
        f"1 - cos(v, stored v), reference model's {pictures.shape[1]}-d image vectors: max {worst:.2e}, mean {mean:.2e}"
    )


if __name__ == "__main__":
    main()
