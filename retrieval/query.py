"""A query: weighted parts (texts, image files, indexed images), how many results, which images may come
back, a score floor, and an order. One model for the Python API, the CLI and the web page.

**The fusion rule.** Every part becomes an L2-normalised embedding `e_i` (a text through the model's text
tower, after the query's `template`; an image file through the image tower, or its stored vector when it
is indexed and unchanged; an indexed image by its stored vector). The query vector is the weighted sum
`q = sum_i w_i * e_i`, renormalised to unit length, and is searched like any single query (cosine). A
negative weight pushes away from that part: `circles --not red` is `e(circles) - e(red)`. One part alone is
its own embedding whatever its (positive) weight. A weight of 0 is refused, and so is a query whose parts
cancel (`red` and `-1:red`), whose sum has no direction.

**The order of work.** The k best results by score are chosen first (inside the filter); then the cutoffs
(`min_score`) drop weak ones; then `sort` re-orders the survivors: by score (`relevance`), or by date
(`date` oldest first, `-date` newest first), the date being when the photo was taken, falling back to the
file's modification time.

**Weights in words** (`parse_weighted`): `2:beach` is `beach` with weight 2, `-1:people` is `people` with
weight -1. A weight is a leading number and a colon followed directly by something that is neither a space
nor a digit, so `10:30 train` and `ratio 16:9` are plain text; a leading backslash keeps the rest literal
(`\\2:beach` searches the text `2:beach`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.config import (
    DEFAULT_MIN_RELEVANCE,
    DEFAULT_SORT,
    DEFAULT_TOP_K,
    FUSION_MIN_NORM,
    NOT_WEIGHT,
    SORT_CHOICES,
)
from retrieval.errors import InvalidQueryError
from retrieval.filters import SearchFilter
from retrieval.relevance import check_min_relevance

if TYPE_CHECKING:
    from retrieval.results import SearchResult

_WEIGHTED = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)):(?=[^\s\d])(.*)", re.DOTALL)


@dataclass(frozen=True)
class Part:
    """One part of a query, exactly one of: `text`, `image` (a file, indexed or not), `image_id` (an indexed
    image), `vector` (an image already embedded by this library's model, e.g. one uploaded to the server); with
    its `weight` (negative: away from it; never 0). Parts compare without their `vector`."""

    text: str | None = None
    image: str | Path | None = None
    image_id: int | None = None
    weight: float = 1.0
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        given = [name for name in ("text", "image", "image_id", "vector") if getattr(self, name) is not None]
        if len(given) != 1:
            raise InvalidQueryError(
                f"a query part is one of `text`, `image`, `image_id` or `vector`, not {' and '.join(given) or 'none'}",
                parameters=("parts",),
            )
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)) or self.weight == 0:
            raise InvalidQueryError(
                f"`weight` must be a finite number other than 0 for every part of a query, not {self.weight!r}",
                parameters=("weight",),
            )
        if self.text is not None and not self.text.strip():
            raise InvalidQueryError("a text part of the query is empty: give some words to search for")


def parse_weighted(token: str) -> Part:
    """A text part from one token as the CLI and web page take it: `2:beach`, `-1:people`, `beach`, or
    `\\2:beach` (the literal text `2:beach`). See the module's docstring for the rule."""
    weight, text = _split_weight(token)
    return Part(text=text, weight=1.0 if weight is None else weight)


def _split_weight(token: str) -> tuple[float | None, str]:
    """(the weight written in front of `token`, or None; the text)."""
    if token.startswith("\\"):
        return None, token[1:]
    match = _WEIGHTED.fullmatch(token)
    return (None, token) if match is None else (float(match[1]), match[2])


def text_parts(words: Iterable[str], negated: Iterable[str] = ()) -> list[Part]:
    """The text parts of command-line words: the plain words together are one text (`red car` is one part, as
    a one-part search always was), each weighted word is a part of its own (`2:beach`), and each of `negated`
    a part of weight NOT_WEIGHT (`--not people`). Where a word stands among the others does not matter."""
    plain: list[str] = []
    weighted: list[Part] = []
    for word in words:
        weight, text = _split_weight(word)
        if weight is None:
            plain.append(text)
        else:
            weighted.append(Part(text=text, weight=weight))
    joined = [Part(text=" ".join(plain))] if plain else []
    return joined + weighted + [Part(text=text, weight=NOT_WEIGHT) for text in negated]


@dataclass(frozen=True)
class Query:
    """What to search for (`parts`) and what comes back: `k` results chosen by score inside `filter`, at
    least `min_score`, in `sort` order. `template` (e.g. `a photo of {}`) applies to each text part; the
    query's own images are left out of the results unless `include_self`.

    `min_relevance` (relevance branch, `retrieval.relevance`; None or 0: no cutoff) applies to a text query,
    every part text: its results carry their relevance and those below it are left out. A query with an image
    part carries no relevance and is not cut by it (relevance is calibrated for text queries only, measured by
    benchmarks/relevance_cutoff.py)."""

    parts: tuple[Part, ...]
    k: int = DEFAULT_TOP_K
    filter: SearchFilter = field(default_factory=SearchFilter)
    min_score: float | None = None
    sort: str = DEFAULT_SORT
    template: str | None = None
    include_self: bool = False
    min_relevance: float | None = DEFAULT_MIN_RELEVANCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        check_min_relevance(self.min_relevance)
        if not self.parts:
            raise InvalidQueryError("the query has no parts: give a text or an image to search for")
        if self.sort not in SORT_CHOICES:
            raise InvalidQueryError(
                f"`sort` must be one of {', '.join(SORT_CHOICES)}, not {self.sort!r}", parameters=("sort",)
            )

    @property
    def is_text(self) -> bool:
        """Every part is a text: the query relevance is calibrated for."""
        return all(part.text is not None for part in self.parts)

    @classmethod
    def of_text(cls, text: str, **options: Any) -> Query:
        """A query of one text part; `options` are the other fields (`k`, `filter`, ...)."""
        return cls((Part(text=text),), **options)

    @classmethod
    def of_image(cls, image: str | Path, **options: Any) -> Query:
        """A query of one image file; `options` are the other fields (`k`, `include_self`, ...)."""
        return cls((Part(image=image),), **options)


def relevance_cutoff(parts: Sequence[Part], min_relevance: float | None) -> float | None:
    """The `min_relevance` a query of `parts` runs with: as given (0: none); None is DEFAULT_MIN_RELEVANCE for a
    text-only query and none otherwise. A cutoff for a query with an image part is refused: relevance is
    calibrated for text queries only."""
    text_only = all(part.text is not None for part in parts)
    if min_relevance and not text_only:
        raise InvalidQueryError(
            "`min_relevance` is calibrated for text-only queries, not for queries with an image: "
            "use `min_score` to cut those",
            parameters=("min_relevance", "min_score"),
        )
    return DEFAULT_MIN_RELEVANCE if min_relevance is None and text_only else min_relevance


def fuse(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The fusion rule: the weighted sum of the (unit) rows of `vectors`, renormalised (one part: its row, times
    the sign of its weight); refused when the parts cancel (the sum is shorter than FUSION_MIN_NORM times the
    sum of the weights' sizes)."""
    if len(weights) == 1:  # one part is its own embedding, as given (a stored float16 vector is not rescaled)
        return np.asarray(vectors[0] if weights[0] > 0 else -vectors[0], dtype=np.float32)
    rows = np.asarray(vectors, dtype=np.float64)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    scaled = np.asarray(weights, dtype=np.float64)
    scaled = scaled / np.abs(scaled).max()  # the direction is the same; weights near the float limits stay finite
    total = scaled @ rows
    norm = float(np.linalg.norm(total))
    if norm < FUSION_MIN_NORM * float(np.abs(scaled).sum()):
        raise InvalidQueryError(
            "the query's parts cancel each other out (their weighted sum has no direction): "
            "change a `weight` or leave a part out",
            parameters=("weight",),
        )
    return (total / norm).astype(np.float32)


def result_date(result: SearchResult) -> datetime:
    """When the photo was taken, else when its file was last modified (local time, like EXIF dates)."""
    return result.taken_at or datetime.fromtimestamp(result.mtime_ns / 1e9)


def sort_results(results: Sequence[SearchResult], sort: str) -> list[SearchResult]:
    """`results` (best first) in `sort` order, ranks renumbered to that order; equal dates keep score order."""
    ordered = list(results) if sort == "relevance" else sorted(results, key=result_date, reverse=sort == "-date")
    return [replace(result, rank=rank) for rank, result in enumerate(ordered, start=1)]


def check_min_score(min_score: float | None) -> None:
    """A cosine floor must be a number in [-1, 1]; NaN, infinities and numbers outside are refused."""
    if min_score is not None and not (math.isfinite(min_score) and -1.0 <= min_score <= 1.0):
        raise InvalidQueryError(
            f"`min_score` must be a cosine similarity from -1 to 1, not {min_score}", parameters=("min_score",)
        )
