"""Does one relevance cutoff work across queries? Precision and recall of attribute queries at the cutoff.

    nice -n 10 python benchmarks/relevance_cutoff.py --workdir /tmp/relevance-bench
    nice -n 10 python benchmarks/relevance_cutoff.py --workdir /tmp/relevance-bench --fit   # refit the weights

Two sets of generated scenes that no model trained on (`test` split, seeds 101 and 202, 1500 images each) are
indexed with the reference model into libraries of their own. The attribute queries of `clipsearch bench
attributes` are split in two (even positions: A, odd: B), and so are nonsense queries (seeded random letter
strings, other than the neutral prompts, and everyday words the scenes never show). Split A (scenes 101, its
queries and nonsense) chooses each method's cutoff, and the fitted weights with `--fit`; split B (scenes 202,
the other queries and nonsense) reports it. For every query every library image is a result candidate; a hit
is right when its scene has every attribute the query names; each result of a nonsense query is a false hit.
Precision, recall and F1 are pooled over the split's queries (P, R, F1 with the nonsense results as false hits;
"attr" columns over the attribute queries alone).

Methods: `flat` (one cosine cutoff); `flat, hindsight on B` (the cosine cutoff with the best F1 on B itself,
the reference the issue asks for); `z` (the hit's cosine against the query's own scores over the library
sample); `neutral margin` (cosine minus the best neutral prompt's cosine on that image); `neutral softmax`
(softmax over the query and the neutral prompts on that image, temperature 30); `lift` (the calibrator's
first feature alone); `relevance` (`retrieval.relevance`, the shipped default cutoff).
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.bench_attributes import load_scenes
from indexer.bench_recall import index_dataset
from retrieval import Encoder, Library, reference_spec
from retrieval.config import DEFAULT_MIN_RELEVANCE
from retrieval.quality.attributes import attribute_queries
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.relevance import Calibrator, Weights, neutral_prompts
from retrieval.relevance_files import calibrator_for, library_sample, neutral_vectors

SEEDS = {"A": 101, "B": 202}
UNRELATED_WORDS = {
    "A": ("a dog", "the ocean", "a bicycle", "pizza", "a tree", "a guitar", "an old man", "the moon", "football",
          "a laptop", "coffee", "a wedding", "qwertyuiop"),
    "B": ("a horse", "a city street", "a sandwich", "a mountain lake", "a baby", "a car", "a church", "flowers",
          "a kitchen", "snow", "a computer keyboard", "sunset", "asdfghjkl"),
}  # fmt: skip
RANDOM_NONSENSE = 24


def nonsense(split: str) -> list[str]:
    rng = random.Random(f"clipsearch-bench-nonsense/{split}")
    strings = [
        " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12)))
                 for _ in range(rng.randint(1, 3)))
        for _ in range(RANDOM_NONSENSE)
    ]  # fmt: skip
    assert not set(strings) & set(neutral_prompts())
    return strings + list(UNRELATED_WORDS[split])


@dataclass
class Split:
    """One split's scores: attribute queries (`scores`, `truth`) and nonsense queries, over every image."""

    queries: np.ndarray
    scores: np.ndarray
    truth: np.ndarray
    junk_queries: np.ndarray
    junk_scores: np.ndarray
    images: np.ndarray
    neutral: np.ndarray
    sample: np.ndarray
    calibrator: Calibrator


def build_split(name: str, workdir: Path, encoder: Encoder, images: int) -> Split:
    data_folder = generate_dataset(workdir / f"scenes-{SEEDS[name]}", seed=SEEDS[name], sizes={"test": images})
    library = Library(workdir / f"library-{SEEDS[name]}", create=True)
    data, scenes = load_scenes(data_folder.split_file("test"))
    index, _, vectors, unreadable = index_dataset(library, encoder, data, 2, None)
    if unreadable:
        raise SystemExit(f"{len(unreadable)} unreadable generated images")
    chosen = [query for position, query in enumerate(attribute_queries()) if position % 2 == (name == "B")]
    queries = encoder.encode_texts([query.text for query in chosen])
    junk = encoder.encode_texts(nonsense(name))
    truth = np.array([[query.matches(scene) for scene in scenes] for query in chosen])
    sample = library_sample(library.directory, library.reads.generation(), index).astype(np.float32)
    neutral = neutral_vectors(library.directory, encoder)
    calibrator = calibrator_for(library, encoder, index)
    library.close()
    return Split(queries, queries @ vectors.T, truth, junk, junk @ vectors.T, vectors, neutral, sample, calibrator)


Method = Callable[[Split, np.ndarray, np.ndarray], np.ndarray]
"""(split, query vectors, their scores over all images) -> a figure per (query, image); higher is better."""


def z_score(split: Split, queries: np.ndarray, scores: np.ndarray) -> np.ndarray:
    over_sample = queries @ split.sample.T
    return (scores - over_sample.mean(1, keepdims=True)) / over_sample.std(1, keepdims=True)


def neutral_margin(split: Split, queries: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return scores - (split.neutral @ split.images.T).max(0)[None]


def neutral_softmax(split: Split, queries: np.ndarray, scores: np.ndarray, temperature: float = 30.0) -> np.ndarray:
    neutral = (split.neutral @ split.images.T)[None]  # 1 x prompts x images
    logits = np.concatenate([scores[:, None], np.broadcast_to(neutral, (len(scores), *neutral.shape[1:]))], 1)
    logits = temperature * (logits - logits.max(1, keepdims=True))
    return np.exp(logits[:, 0]) / np.exp(logits).sum(1)


def relevance(split: Split, queries: np.ndarray, scores: np.ndarray, weights: Weights | None = None) -> np.ndarray:
    calibrator = split.calibrator if weights is None else Calibrator.fit(split.neutral, split.sample, weights)
    return np.stack([calibrator.relevance(query, row) for query, row in zip(queries, scores, strict=True)])


METHODS: dict[str, Method] = {
    "flat": lambda split, queries, scores: scores,
    "z": z_score,
    "neutral margin": neutral_margin,
    "neutral softmax": neutral_softmax,
    "lift": lambda split, queries, scores: split.calibrator.lift(scores),
    "relevance": relevance,
}


def counts(figure: np.ndarray, truth: np.ndarray, junk: np.ndarray, cutoff: float) -> tuple[float, float, float]:
    """Pooled precision, recall, F1 at `cutoff`; every nonsense result (`junk` >= cutoff) is a false hit."""
    kept = figure >= cutoff
    right = int((kept & truth).sum())
    wrong = int((kept & ~truth).sum() + (junk >= cutoff).sum())
    missed = int((~kept & truth).sum())
    precision, recall = right / max(right + wrong, 1), right / max(right + missed, 1)
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)


def best_cutoff(figure: np.ndarray, truth: np.ndarray, junk: np.ndarray) -> float:
    candidates = np.quantile(figure, np.linspace(0.5, 0.9999, 800))
    return float(max(candidates, key=lambda cutoff: counts(figure, truth, junk, cutoff)[2]))


def figures(method: Method, split: Split) -> tuple[np.ndarray, np.ndarray]:
    return method(split, split.queries, split.scores), method(split, split.junk_queries, split.junk_scores)


def row(label: str, cutoff: float, split: Split, figure: np.ndarray, junk: np.ndarray) -> str:
    precision, recall, f1 = counts(figure, split.truth, junk, cutoff)
    attribute_only = counts(figure, split.truth, junk[:0], cutoff)
    answered = int((junk >= cutoff).any(1).sum())
    top10 = np.sort(junk, axis=1)[:, -10:]
    return (
        f"{label:30} {cutoff:9.3f}  {precision:6.3f} {recall:6.3f} {f1:6.3f}   "
        f"{attribute_only[0]:6.3f} {attribute_only[2]:6.3f}   "
        f"{answered:3d}/{len(junk)} {int((junk >= cutoff).sum()):6d} {int((top10 >= cutoff).sum()):5d}"
    )


def fit_weights(split: Split) -> Weights:
    """Logistic regression (Newton's method, a little L2) of 'the image has the attribute' on (lift, vagueness,
    spread), nonsense queries' images all negatives."""
    calibrator = split.calibrator
    columns = []
    labels = []
    for queries, scores, truth in (
        (split.queries, split.scores, split.truth),
        (split.junk_queries, split.junk_scores, np.zeros(split.junk_scores.shape, bool)),
    ):
        lift = calibrator.lift(scores)
        per_query = np.array([[calibrator.vagueness(query), calibrator.spread(query)] for query in queries])
        vague, spread = (np.repeat(per_query[:, column], lift.shape[1]) for column in (0, 1))
        columns.append(np.stack([lift.ravel(), vague, spread, np.ones(lift.size)], 1))
        labels.append(truth.ravel().astype(float))
    x, y = np.concatenate(columns), np.concatenate(labels)
    beta = np.zeros(x.shape[1])
    for _ in range(60):
        p = 1 / (1 + np.exp(-(x @ beta)))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-2 * np.eye(len(beta))
        beta -= np.linalg.solve(hessian, x.T @ (p - y) + 1e-2 * beta)
    return Weights(*(float(value) for value in beta))


def image_queries(split: Split, count: int = 200) -> str:
    """What the text calibration does to image queries (`similar`): the share of the library passing the
    default cutoff, when each of `count` images queries the others."""
    vectors = split.images[:count]
    scores = vectors @ split.images.T
    figure = relevance(split, vectors, scores)
    figure[np.arange(count), np.arange(count)] = 0
    passing = (figure >= DEFAULT_MIN_RELEVANCE).mean(1)
    return (
        f"image queries (similar), text calibration at the default: {100 * passing.mean():.1f}% of the library "
        f"passes on average (min {100 * passing.min():.1f}%, max {100 * passing.max():.1f}%), "
        f"median relevance of all pairs {np.median(figure):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/relevance-bench"))
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--fit", action="store_true", help="refit the weights on split A and use them")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    library_for_model = Library(args.workdir / f"library-{SEEDS['A']}", create=True)
    encoder = library_for_model.encoder(reference_spec())
    library_for_model.close()
    splits = {name: build_split(name, args.workdir, encoder, args.images) for name in SEEDS}
    a, b = splits["A"], splits["B"]
    methods = dict(METHODS)
    if args.fit:
        weights = fit_weights(a)
        print(f"fitted on A: {weights}")
        methods["relevance"] = lambda split, queries, scores: relevance(split, queries, scores, weights)
    print(f"{len(a.scores)} + {len(b.scores)} attribute queries, {len(a.junk_scores)} + {len(b.junk_scores)} nonsense")
    print(
        f"{'method (cutoff chosen on A)':30} {'cutoff':>9}  {'P':>6} {'R':>6} {'F1':>6}   "
        f"{'P attr':>6} {'F1 attr':>6}  nonsense: queries answered, results, in top-10"
    )
    for name, method in methods.items():
        figure_a, junk_a = figures(method, a)
        figure_b, junk_b = figures(method, b)
        cutoff = best_cutoff(figure_a, a.truth, junk_a)
        print(row(f"{name}  [A]", cutoff, a, figure_a, junk_a))
        print(row(f"{name}  [B]", cutoff, b, figure_b, junk_b))
        if name == "flat":
            print(row("flat, hindsight on B  [B]", best_cutoff(figure_b, b.truth, junk_b), b, figure_b, junk_b))
            hindsight = best_cutoff(figure_b, b.truth, junk_b[:0])
            print(row("flat, hindsight attr. on B  [B]", hindsight, b, figure_b, junk_b))
            no_junk = float(max(junk_b.max(), figure_b.min()) + 1e-6)
            print(row("flat, no nonsense on B  [B]", no_junk, b, figure_b, junk_b))
        if name == "relevance":
            print(row("relevance, shipped default  [A]", DEFAULT_MIN_RELEVANCE, a, figure_a, junk_a))
            print(row("relevance, shipped default  [B]", DEFAULT_MIN_RELEVANCE, b, figure_b, junk_b))
    print(image_queries(b))
    started = time.perf_counter()
    for _ in range(100):
        b.calibrator.relevance(b.queries[0], b.scores[0][:10])
    print(f"relevance of 10 hits: {1e6 * (time.perf_counter() - started) / 100:.1f} us per query")


if __name__ == "__main__":
    main()
