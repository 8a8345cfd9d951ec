"""A `Query` as JSON and back: the body of the web API's `POST /api/search`, and what `clipsearch search` sends
to a running server. One form for both, so a query means the same whichever way it travels:

```
{"parts": [{"text": "a dog", "weight": 1.0}, {"image_id": 42}, {"upload": "<id>", "weight": -1.0}],
 "k": 10, "offset": 0,
 "filter": {"within": ["/photos/2021"], "after": "2021-06", "before": "2021-09", "camera": "canon",
            "extensions": ["jpg"], "min_width": 1, "min_height": 1, "orientation": "landscape", "exclude_ids": []},
 "min_score": null, "min_relevance": null, "sort": "relevance", "template": null, "include_self": false}
```

Only `parts` is required; the rest default as the CLI's (`min_relevance` null: DEFAULT_MIN_RELEVANCE for a
text-only query, none for a query with an image part, which refuses any other value). A part is exactly one of
`text`, `image_id` (an indexed image) and `upload` (an image uploaded to the server, resolved to its vector by
the caller's `uploads`); a text is taken as written (no `W:TEXT` parsing: the weight is its own field). Folders
in `within` must be absolute (a server's working folder means nothing to its client). `sort` also takes
`score`, another name for `relevance`. Anything else is an `InvalidQueryError` naming the field.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from retrieval.conditions import AtLeast, Camera, Condition, Dated, Extension, Orientation, Within
from retrieval.config import DEFAULT_SORT, DEFAULT_TOP_K
from retrieval.errors import InvalidQueryError
from retrieval.filters import SearchFilter
from retrieval.query import Part, Query, check_min_score, relevance_cutoff

QUERY_FIELDS = ("parts", "k", "offset", "filter", "min_score", "min_relevance", "sort", "template", "include_self")
PART_KINDS = ("text", "image_id", "upload")
FILTER_FIELDS = (
    "within",
    "after",
    "before",
    "camera",
    "extensions",
    "min_width",
    "min_height",
    "orientation",
    "exclude_ids",
)
SORT_ALIASES = {"score": "relevance"}
_LARGEST = 2**63 - 1  # the store's integers are 64-bit: ids, pixels and counts beyond are refused, not overflowed

Uploads = Callable[[str], np.ndarray]
"""The vector of an upload id (raising `UnknownUploadError` for one it does not hold)."""


def query_to_json(query: Query, *, offset: int = 0) -> dict[str, Any]:
    """The JSON form of `query` (and of the page starting at `offset`). Parts that only this process can read
    are refused (`InvalidQueryError`): an image file (`image`) or a bare `vector`; send those another way."""
    return {
        "parts": [_part_to_json(part) for part in query.parts],
        "k": query.k,
        "offset": offset,
        "filter": filter_to_json(query.filter),
        "min_score": query.min_score,
        "min_relevance": query.min_relevance if query.is_text else None,
        "sort": query.sort,
        "template": query.template,
        "include_self": query.include_self,
    }


def _part_to_json(part: Part) -> dict[str, Any]:
    if part.text is not None:
        return {"text": part.text, "weight": part.weight}
    if part.image_id is not None:
        return {"image_id": part.image_id, "weight": part.weight}
    kind = "image" if part.image is not None else "vector"
    raise InvalidQueryError(
        f"a query with an `{kind}` part has no JSON form: send an indexed image as `image_id`, or upload it",
        parameters=(kind,),
    )


def query_from_json(data: Any, *, uploads: Uploads | None = None) -> Query:
    """The `Query` of a JSON object (see the module); `uploads` resolves `upload` parts (None: refused)."""
    body = _object(data, "query", QUERY_FIELDS)
    parts = _list(body.get("parts"), "parts")
    if not parts:
        raise InvalidQueryError("`parts` is empty: give a text or an image to search for", parameters=("parts",))
    built = tuple(_part_from_json(item, f"parts[{index}]", uploads) for index, item in enumerate(parts))
    min_relevance = relevance_cutoff(built, _number(body.get("min_relevance"), "min_relevance"))
    sort = _optional(body.get("sort"), str, "sort", "a text") or DEFAULT_SORT
    k = _whole(body.get("k"), "k", DEFAULT_TOP_K)
    if k < 1:
        raise InvalidQueryError(f"`k` must be at least 1, not {k}", parameters=("k",))
    min_score = _number(body.get("min_score"), "min_score")
    check_min_score(min_score)
    template = _optional(body.get("template"), str, "template", "a text")
    if template is not None and "{}" not in template:  # refused now, not when the query runs
        raise InvalidQueryError(f"`template` {template!r} has no {{}} where the query goes", parameters=("template",))
    return Query(
        built,
        k=k,
        filter=filter_from_json(body.get("filter")),
        min_score=min_score,
        sort=SORT_ALIASES.get(sort, sort),
        template=template,
        include_self=bool(_optional(body.get("include_self"), bool, "include_self", "true or false")),
        min_relevance=min_relevance,
    )


def offset_from_json(data: Any) -> int:
    """The `offset` of a query's JSON form: how many of the best results come before the page (0 or more)."""
    body = _object(data, "query", QUERY_FIELDS)
    offset = _whole(body.get("offset"), "offset", 0)
    if offset < 0:
        raise InvalidQueryError(f"`offset` must be 0 or more, not {offset}", parameters=("offset",))
    return offset


def _part_from_json(data: Any, name: str, uploads: Uploads | None) -> Part:
    body = _object(data, name, (*PART_KINDS, "weight"))
    given = [kind for kind in PART_KINDS if body.get(kind) is not None]
    if len(given) != 1:
        raise InvalidQueryError(
            f"`{name}` must have exactly one of `text`, `image_id` or `upload`, not {' and '.join(given) or 'none'}",
            parameters=(name,),
        )
    weight = _number(body.get("weight"), f"{name}.weight")
    weight = 1.0 if weight is None else weight
    if weight == 0:
        raise InvalidQueryError(f"`{name}.weight` must not be 0", parameters=(f"{name}.weight",))
    kind = given[0]
    if kind == "text":
        return Part(text=_optional(body["text"], str, f"{name}.text", "a text"), weight=weight)
    if kind == "image_id":
        return Part(image_id=_whole(body["image_id"], f"{name}.image_id", 0), weight=weight)
    upload = _optional(body["upload"], str, f"{name}.upload", "an upload id")
    if uploads is None:
        raise InvalidQueryError(f"`{name}.upload`: this search takes no uploads", parameters=(f"{name}.upload",))
    return Part(vector=uploads(str(upload)), weight=weight)


def filter_to_json(search_filter: SearchFilter) -> dict[str, Any]:
    """The JSON form of `search_filter`: its conditions by field (folders absolute, dates as ISO times)."""
    out: dict[str, Any] = {}
    for condition in search_filter.conditions:
        for key, value in _condition_fields(condition).items():
            if key in out:
                raise InvalidQueryError(
                    f"a filter with two `{key}` conditions has no JSON form: combine them into one",
                    parameters=(key,),
                )
            out[key] = value
    if search_filter.exclude:
        out["exclude_ids"] = sorted(search_filter.exclude)
    return out


def _condition_fields(condition: Condition) -> dict[str, Any]:
    if isinstance(condition, Within):
        return {"within": [os.path.abspath(os.path.expanduser(str(folder))) for folder in condition.folders]}
    if isinstance(condition, Dated):
        bounds = {"after": condition.dates.start, "before": condition.dates.end}
        return {key: moment.isoformat() for key, moment in bounds.items() if moment is not None}
    if isinstance(condition, Camera):
        return {"camera": condition.text}
    if isinstance(condition, Extension):
        return {"extensions": list(condition.extensions)}
    if isinstance(condition, AtLeast):
        return {f"min_{condition.dimension}": condition.pixels}
    if isinstance(condition, Orientation):
        return {"orientation": condition.name}
    raise InvalidQueryError(f"a filter condition {condition!r} has no JSON form", parameters=("filter",))


def filter_from_json(data: Any) -> SearchFilter:
    """The `SearchFilter` of a filter's JSON form (None or `{}`: no filter)."""
    if data is None:
        return SearchFilter()
    body = _object(data, "filter", FILTER_FIELDS)
    within = body.get("within")
    folders = [within] if isinstance(within, str) else _list(within, "filter.within") if within is not None else None
    check_folders(folders or ())
    extensions = body.get("extensions")
    exclude = body.get("exclude_ids")
    return SearchFilter.of(
        within=folders,
        after=_optional(body.get("after"), str, "after", "a date"),
        before=_optional(body.get("before"), str, "before", "a date"),
        camera=_optional(body.get("camera"), str, "camera", "a text"),
        extensions=extensions if isinstance(extensions, str) or extensions is None else _list(extensions, "extensions"),
        min_width=_optional_whole(body.get("min_width"), "min_width"),
        min_height=_optional_whole(body.get("min_height"), "min_height"),
        orientation=_optional(body.get("orientation"), str, "orientation", "a text"),
        exclude_ids=None if exclude is None else [_whole(i, "exclude_ids", 0) for i in _list(exclude, "exclude_ids")],
    )


def check_folders(folders: Any) -> None:
    """Folders of a `within` filter sent to a server are absolute paths (its working folder is not the client's)."""
    for folder in folders:
        if not isinstance(folder, str) or not os.path.isabs(folder):
            raise InvalidQueryError(f"`within` must name absolute folders, not {folder!r}", parameters=("within",))


def _object(data: Any, name: str, fields: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidQueryError(f"`{name}` must be a JSON object, not {_kind(data)}", parameters=(name,))
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidQueryError(
            f"`{name}` has no field {', '.join(map(repr, unknown))}: it takes {', '.join(fields)}",
            parameters=(name,),
        )
    return data


def _list(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidQueryError(f"`{name}` must be a list, not {_kind(data)}", parameters=(name,))
    return data


def _optional(data: Any, kind: type, name: str, what: str) -> Any:
    if data is not None and not isinstance(data, kind):
        raise InvalidQueryError(f"`{name}` must be {what}, not {_kind(data)}", parameters=(name,))
    if isinstance(data, str) and kind is str and not _unicode(data):
        raise InvalidQueryError(f"`{name}` must be {what} of Unicode characters, not {data!r}", parameters=(name,))
    return data


def _unicode(text: str) -> bool:
    """`text` holds no lone surrogate (JSON can carry `\\udcXX`, which no model or database takes as text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(data: Any, name: str) -> float | None:
    if data is None:
        return None
    if isinstance(data, bool) or not isinstance(data, (int, float)) or not math.isfinite(data):
        raise InvalidQueryError(f"`{name}` must be a finite number, not {data!r}", parameters=(name,))
    return float(data)


def _whole(data: Any, name: str, default: int) -> int:
    """A whole number that fits the store's 64-bit integers (ids, pixels, counts); `default` for None."""
    if data is None:
        return default
    if isinstance(data, bool) or not isinstance(data, int):
        raise InvalidQueryError(f"`{name}` must be a whole number, not {data!r}", parameters=(name,))
    if not -_LARGEST <= data <= _LARGEST:
        raise InvalidQueryError(f"`{name}` is out of range: {data}", parameters=(name,))
    return data


def _optional_whole(data: Any, name: str) -> int | None:
    return None if data is None else _whole(data, name, 0)


def _kind(data: Any) -> str:
    return "null" if data is None else f"{type(data).__name__} {data!r}"[:80]
