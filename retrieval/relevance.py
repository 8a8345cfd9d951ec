"""A calibrated relevance in [0, 1] for every text-query hit, so that one cutoff works across queries.

A flat cosine cutoff does not transfer: each model has its own cosine scale, and within one model a query
the model does not understand (random letters, words it never learned) lands near a "generic text"
direction and still scores its best images as high as a real query scores true hits. The relevance of a
hit combines two standardised measurements against a fixed bank of neutral prompts (seeded random letter
strings and content-free words, `neutral_prompts`), which stand for "a query that means nothing":

- `lift`: how far the hit's cosine lies above what neutral prompts score on this library's images, in
  standard deviations (their scores over a fixed sample of the library's vectors: the library's own
  score distribution for a query that means nothing);
- `vagueness`: how close the query's own vector lies to the neutral prompts' centroid, in standard
  deviations of the prompts' own closeness to it (a query that reads like noise to the model is vague);
- `spread`: the standard deviation of the query's scores over the library sample, over that of the neutral
  prompts' scores (a query the model understands tells the library's images apart; noise scores them alike).

relevance = sigmoid(w_lift * lift + w_vague * vagueness + w_spread * spread + bias), the weights fitted by
logistic regression on
generated scenes (`benchmarks/relevance_cutoff.py`, reference model), so the figure reads as an estimated
probability that the image shows what the query asks for. For one query it rises with the cosine, so a
relevance cutoff is a cosine cutoff of that query's own (`QueryRelevance.min_score`): it acts inside the search
like `min_score`. Alternatives measured and rejected (z-score against the query's own scores over the library,
margins over neutral prompts per image, softmax against neutral prompts) are in the benchmark's table.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from retrieval.config import (
    NEUTRAL_RANDOM_PROMPTS,
    NEUTRAL_SEED,
    NEUTRAL_WORDS,
    RELEVANCE_BIAS,
    RELEVANCE_LIFT_WEIGHT,
    RELEVANCE_SPREAD_WEIGHT,
    RELEVANCE_VAGUENESS_WEIGHT,
)
from retrieval.errors import InvalidQueryError

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def neutral_prompts() -> list[str]:
    """The fixed bank of prompts that mean nothing: seeded random letter strings (one to three "words" of
    three to ten letters) and `NEUTRAL_WORDS`. Deterministic, the same on every machine."""
    rng = random.Random(f"clipsearch-neutral/{NEUTRAL_SEED}")
    strings = []
    for _ in range(NEUTRAL_RANDOM_PROMPTS):
        words = ["".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 10))) for _ in range(rng.randint(1, 3))]
        strings.append(" ".join(words))
    return strings + list(NEUTRAL_WORDS)


@dataclass(frozen=True)
class Weights:
    """The logistic model's weights on (lift, vagueness, spread) and its bias; `lift` must weigh positively, so
    that relevance rises with the cosine for every query."""

    lift: float = RELEVANCE_LIFT_WEIGHT
    vagueness: float = RELEVANCE_VAGUENESS_WEIGHT
    spread: float = RELEVANCE_SPREAD_WEIGHT
    bias: float = RELEVANCE_BIAS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lift) and self.lift > 0 and math.isfinite(self.vagueness + self.spread + self.bias)):
            raise ValueError(f"relevance weights must be finite with a positive lift weight, not {self}")


@dataclass(frozen=True, eq=False)
class Calibrator:
    """Relevance of text-query hits in one library: the neutral prompts' statistics there, and the weights."""

    centroid: np.ndarray
    """Unit vector: the direction of the neutral prompts' mean."""
    closeness_mean: float
    closeness_std: float
    """The neutral prompts' own cosines to `centroid`: mean and standard deviation."""
    score_mean: float
    score_std: float
    """The neutral prompts' cosines to the library sample's vectors: mean and standard deviation."""
    sample: np.ndarray
    """The library sample (float32), over which a query's spread is measured."""
    weights: Weights = Weights()

    @classmethod
    def fit(cls, neutral: np.ndarray, sample: np.ndarray, weights: Weights | None = None) -> Calibrator:
        """The calibrator of a library whose vectors `sample` represents, from the neutral prompts' vectors."""
        neutral = np.asarray(neutral, dtype=np.float32)
        sample = np.asarray(sample, dtype=np.float32)
        if neutral.ndim != 2 or sample.ndim != 2 or len(neutral) < 2 or not len(sample):
            raise ValueError("a calibrator needs at least two neutral vectors and one library vector")
        mean = neutral.mean(axis=0)
        centroid = mean / max(float(np.linalg.norm(mean)), 1e-12)
        closeness = neutral @ centroid
        scores = neutral @ sample.T
        return cls(
            centroid=centroid,
            closeness_mean=float(closeness.mean()),
            closeness_std=max(float(closeness.std()), 1e-6),
            score_mean=float(scores.mean()),
            score_std=max(float(scores.std()), 1e-6),
            sample=sample,
            weights=weights or Weights(),
        )

    def lift(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, dtype=np.float64) - self.score_mean) / self.score_std

    def vagueness(self, query: np.ndarray) -> float:
        closeness = float(np.asarray(query, dtype=np.float32).reshape(-1) @ self.centroid)
        return (closeness - self.closeness_mean) / self.closeness_std

    def spread(self, query: np.ndarray) -> float:
        scores = self.sample @ np.asarray(query, dtype=np.float32).reshape(-1)
        return float(scores.std()) / self.score_std

    def query(self, query: np.ndarray) -> QueryRelevance:
        """The relevance of the hits of one query vector (its query-only terms computed once)."""
        w = self.weights
        offset = w.vagueness * self.vagueness(query) + w.spread * self.spread(query) + w.bias
        return QueryRelevance(self, offset)

    def relevance(self, query: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The relevance in [0, 1] of hits of the query vector `query` that scored `scores` (cosines)."""
        return self.query(query).relevance(scores)


@dataclass(frozen=True)
class QueryRelevance:
    """One query's relevance: logit = lift weight * lift(score) + `offset` (the query-only terms)."""

    calibrator: Calibrator
    offset: float

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        logits = self.calibrator.weights.lift * self.calibrator.lift(scores) + self.offset
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))

    def min_score(self, min_relevance: float) -> float:
        """The cosine at which a hit reaches `min_relevance` (the exact inverse of `relevance`): a relevance
        cutoff is this query's own cosine cutoff. 1 asks for more than any hit can have (inf), 0 for nothing."""
        check_min_relevance(min_relevance)
        if min_relevance >= 1.0:
            return math.inf
        if min_relevance <= 0.0:
            return -math.inf
        calibrator = self.calibrator
        lift = (math.log(min_relevance / (1.0 - min_relevance)) - self.offset) / calibrator.weights.lift
        return calibrator.score_mean + lift * calibrator.score_std


def check_min_relevance(min_relevance: float | None) -> None:
    """A relevance cutoff must be a number from 0 to 1 (None or 0: no cutoff); NaN and others are refused."""
    if min_relevance is not None and not (math.isfinite(min_relevance) and 0.0 <= min_relevance <= 1.0):
        raise InvalidQueryError(
            f"`min_relevance` must be a relevance from 0 (no cutoff) to 1, not {min_relevance}",
            parameters=("min_relevance",),
        )
