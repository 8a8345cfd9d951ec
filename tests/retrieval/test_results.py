"""SearchResult's JSON form (what `search --json` prints and the web API answers) reads back as the same hit."""

from __future__ import annotations

from datetime import datetime

from retrieval.results import SearchResult


def test_a_hit_round_trips_through_its_json_form_and_extra_keys_are_ignored() -> None:
    dated = SearchResult(1, 0.5, 0.75, 7, "/p/\udcff.jpg", 640, 480, datetime(2021, 7, 4, 18, 30), "Canon", "R5", 10, 5)
    undated = SearchResult(2, -0.25, None, 8, "/p/b.png", None, None, None, None, None, 0, 0)
    for hit in (dated, undated):
        assert SearchResult.from_json(hit.to_json() | {"thumbnail": "/api/images/7/thumbnail"}) == hit
