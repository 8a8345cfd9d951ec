"""Attribute-level quality: does a short query find pictures that have what it names?

Recall@k on full captions can hide a model that ignores shape: a full caption is told apart by colour,
background and texture alone. Here each query names one attribute (or colour and shape together), the way
people type ("three circles", "a blue triangle", "a striped background"), and precision@k is the share of
the top k images whose scene has every attribute the query names. The queries are fixed by the generator's
vocabulary (`attribute_queries`), never chosen after seeing results.

`constraints_of` reads what a caption in the generator's vocabulary asks for; training uses it to know which
captions in a batch are true of which images (`retrieval.training.targets`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.quality.scenes import COLOURS, COUNTS, POSITIONS, SHAPES, SIZES, TEXTURES, plural

ATTRIBUTES = ("shape", "colour", "count", "size", "position", "background", "texture", "colour+shape")
DEFAULT_PRECISION_KS = (1, 3, 10)

Constraints = dict[str, frozenset[Any]]
"""Scene attribute -> the values a query accepts (a scene matches if each of its values is accepted)."""


@dataclass(frozen=True)
class AttributeQuery:
    attribute: str  # the table row it counts in
    text: str
    wants: Mapping[str, Any]  # scene attribute -> required value

    def matches(self, scene: Mapping[str, Any]) -> bool:
        return all(scene.get(name) == value for name, value in self.wants.items())


_COUNT_QUERY = {1: "a single", 2: "two", 3: "three"}
_POSITION_QUERY = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the middle",
}


def attribute_queries() -> list[AttributeQuery]:
    """Every short query of the attribute benchmark, in a fixed order (about 160)."""
    queries: list[AttributeQuery] = []

    def add(attribute: str, text: str, **wants: Any) -> None:
        queries.append(AttributeQuery(attribute, text, wants))

    for shape in SHAPES:
        add("shape", f"a {shape}", shape=shape)
        add("shape", plural(shape), shape=shape)
    for colour in COLOURS:
        add("colour", f"something {colour}", colour=colour)
        add("colour", f"{colour} shapes", colour=colour)
    for shape in SHAPES:
        for count in COUNTS:
            noun = shape if count == 1 else plural(shape)
            add("count", f"{_COUNT_QUERY[count]} {noun}", count=count, shape=shape)
        for size in SIZES:
            add("size", f"{size} {plural(shape)}", size=size, shape=shape)
        for position in POSITIONS:
            add("position", f"{plural(shape)} {_POSITION_QUERY[position]}", position=position, shape=shape)
    for background in COLOURS:
        add("background", f"on a {background} background", background=background)
    for texture in TEXTURES:
        add("texture", f"a {texture} background", texture=texture)
    for colour in COLOURS:
        for shape in SHAPES:
            add("colour+shape", f"a {colour} {shape}", colour=colour, shape=shape)
    return queries


@dataclass
class AttributePrecision:
    """Mean precision@k per attribute over its queries, and the per-query detail."""

    ks: list[int]
    table: dict[str, dict[str, float]]  # attribute -> {"P@k": percent, "queries": n}
    per_query: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"ks": self.ks, "attributes": self.table, "queries": self.per_query}


def attribute_precision(
    ranked: np.ndarray, queries: Sequence[AttributeQuery], scenes: Sequence[Mapping[str, Any]], ks: Sequence[int]
) -> AttributePrecision:
    """Precision@k from `ranked` (query x top positions in `scenes`, best first; -1 = no result)."""
    per_query: list[dict[str, Any]] = []
    for query, row in zip(queries, ranked, strict=True):
        hits = [position >= 0 and query.matches(scenes[position]) for position in row.tolist()]
        relevant = sum(query.matches(scene) for scene in scenes)
        entry: dict[str, Any] = {"attribute": query.attribute, "query": query.text, "relevant": relevant}
        entry |= {f"P@{k}": 100.0 * sum(hits[:k]) / k for k in ks}
        per_query.append(entry)
    table: dict[str, dict[str, float]] = {}
    for attribute in ATTRIBUTES:
        rows = [entry for entry in per_query if entry["attribute"] == attribute]
        if rows:
            table[attribute] = {f"P@{k}": float(np.mean([row[f"P@{k}"] for row in rows])) for k in ks}
            table[attribute]["queries"] = len(rows)
    return AttributePrecision(list(ks), table, per_query)


# --- reading captions in the generator's vocabulary -------------------------------------------------------

_NOUNS = {name: name for name in SHAPES} | {plural(name): name for name in SHAPES}
_GENERIC_NOUNS = {"shape", "shapes", "object", "objects", "thing", "things"}
_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_TEXTURE_WORDS = {
    "plain": "plain",
    "solid": "plain",
    "flat": "plain",
    "striped": "striped",
    "stripy": "striped",
    "dotted": "dotted",
    "spotted": "dotted",
    "polka": "dotted",
    "checkered": "checkered",
    "checked": "checkered",
    "chequered": "checkered",
}
_POSITION_WORDS = {
    "left": "left",
    "right": "right",
    "top": "top",
    "upper": "top",
    "bottom": "bottom",
    "lower": "bottom",
    "center": "center",
    "centre": "center",
    "middle": "center",
}
_COUNT_WORDS = {"one": 1, "single": 1, "two": 2, "pair": 2, "three": 3}
_SKIP_BEFORE_NOUN = set(_SIZE_WORDS) | set(COLOURS)


def constraints_of(text: str, *, implied_count: bool = True) -> Constraints:
    """What a caption in the generator's vocabulary asks of a scene; words it does not know ask nothing.

    A colour word right before a shape noun (or "shapes", or after "something") is the objects' colour,
    any other colour word the background's. A singular noun asks for one object, a plural noun for two or
    three unless a number says which. With `implied_count` false, the loose reading of a query: a singular
    noun asks for no count unless "one"/"single" says so, since a picture of three blue triangles does show
    "a blue triangle" (the attribute benchmark and the demo read short queries this way).
    """
    words = re.findall(r"[a-z]+", text.lower())
    wants: Constraints = {}

    def want(name: str, *values: Any) -> None:
        wants[name] = wants.get(name, frozenset(values)) & frozenset(values)

    for index, word in enumerate(words):
        if word in _NOUNS:
            want("shape", _NOUNS[word])
            if word != _NOUNS[word] and not _counted(words, index):
                want("count", 2, 3)
            elif word == _NOUNS[word] and implied_count:
                want("count", 1)
        elif word in COLOURS:
            following = _next_content_word(words, index)
            is_object = _is_noun(following) or (index > 0 and words[index - 1] == "something")
            want("colour" if is_object else "background", word)
        elif word in _COUNT_WORDS and _is_noun(_next_content_word(words, index)):
            want("count", _COUNT_WORDS[word])
        elif word in _SIZE_WORDS:
            want("size", _SIZE_WORDS[word])
        elif word in _TEXTURE_WORDS:
            want("texture", _TEXTURE_WORDS[word])
        elif word in _POSITION_WORDS:
            want("position", _POSITION_WORDS[word])
    return wants


def _is_noun(word: str | None) -> bool:
    return word in _NOUNS or word in _GENERIC_NOUNS


def _next_content_word(words: list[str], index: int) -> str | None:
    """The first word after `index` that is not a size or colour word or "of" (the noun a word belongs to)."""
    for word in words[index + 1 :]:
        if word not in _SKIP_BEFORE_NOUN and word != "of":
            return word
    return None


def _counted(words: list[str], noun_index: int) -> bool:
    """Whether a number stands before the noun at `noun_index` (past its size and colour words)."""
    index = noun_index - 1
    while index >= 0 and words[index] in _SKIP_BEFORE_NOUN:
        index -= 1
    return index >= 0 and words[index] in ("two", "three", "of")  # "a pair of"


def scene_of(captions: Sequence[str]) -> dict[str, Any] | None:
    """The scene that `captions` (all of one image) pin down together, or None if some attribute stays open."""
    wants: Constraints = {}
    for caption in captions:
        for name, values in constraints_of(caption).items():
            wants[name] = wants.get(name, values) & values
    if len(wants) < 7 or any(len(values) != 1 for values in wants.values()):
        return None
    return {name: next(iter(values)) for name, values in wants.items()}


def satisfies(scene: Mapping[str, Any], wants: Constraints) -> bool:
    return all(scene.get(name) in values for name, values in wants.items())
