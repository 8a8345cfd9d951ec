"""Library errors name Python parameters; `naming` shows them another way (the CLI's flags)."""

from __future__ import annotations

from retrieval.errors import ClipsearchError, ModelMismatchError, UnreadableImageError


def test_naming_replaces_only_the_listed_parameters() -> None:
    """Each listed parameter in backticks becomes its name in the mapping; other backticked words, and
    parameters the mapping lacks, stay as written."""
    error = ModelMismatchError(
        "leave out `model`/`pretrained`, keep `device`, run `clipsearch index` or give another `directory`",
        parameters=("model", "pretrained", "directory", "device"),
    )
    names = {"model": "--model", "pretrained": "--pretrained", "directory": "--library", "index": "--x"}
    assert error.naming(names) == (
        "leave out --model/--pretrained, keep `device`, run `clipsearch index` or give another --library"
    )
    assert str(error).startswith("leave out `model`/`pretrained`")


def test_errors_without_parameters_read_the_same_either_way() -> None:
    """An error that lists no parameter is its message, whatever the mapping."""
    plain = ClipsearchError("the `model` is fine")
    assert plain.parameters == ()
    assert plain.naming({"model": "--model"}) == str(plain) == "the `model` is fine"
    unreadable = UnreadableImageError("/a.jpg", "truncated")
    assert unreadable.naming({"model": "--model"}) == "/a.jpg: truncated"
