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


def test_every_error_and_warning_is_a_public_name_of_retrieval() -> None:
    """Callers catch clipsearch's errors as `retrieval.X`: each class retrieval.errors defines is exported
    (the storage, index and ONNX errors added later were not, until this test)."""
    import inspect

    import retrieval
    import retrieval.errors

    defined = {
        name
        for name, value in vars(retrieval.errors).items()
        if inspect.isclass(value) and value.__module__ == "retrieval.errors"
    }
    assert defined <= set(retrieval.__all__), sorted(defined - set(retrieval.__all__))
    for name in defined:
        assert getattr(retrieval, name) is getattr(retrieval.errors, name)
