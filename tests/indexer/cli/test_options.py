"""The option groups: each hands its command one frozen dataclass built from its flags (and their
environment variables), and each dataclass does its one job on real components: a library, the tiny
model, a captions file."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from indexer.cli import cli
from indexer.cli.options import (
    CaptionsChoice,
    FilterChoice,
    LibraryChoice,
    ModelChoice,
    ResultChoice,
    captions_options,
    filter_options,
    library_options,
    model_options,
    result_options,
)
from retrieval.config import DEFAULT_BATCH_SIZE, DEFAULT_TOP_K, LIBRARY_ENV
from retrieval.errors import DatasetError, LibraryNotFoundError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from tests import imagefactory as factory
from tests.clirunner import leaf_commands

UNSET = {LIBRARY_ENV: None, "CLIPSEARCH_DATABASE_URL": None, "CLIPSEARCH_DEVICE": None}


def chosen(*args: str | Path, env: dict[str, str | None] | None = None) -> dict[str, Any]:
    """What a command carrying all five groups receives for `args`: one object per group, by keyword."""
    received: dict[str, Any] = {}

    @click.command()
    @captions_options
    @result_options
    @filter_options
    @model_options
    @library_options
    def probe(
        reader: CaptionsChoice, results: ResultChoice, filters: FilterChoice, model: ModelChoice, library: LibraryChoice
    ) -> None:
        received.update(reader=reader, results=results, filters=filters, model=model, library=library)

    result = CliRunner().invoke(probe, [str(a) for a in args], env=UNSET | (env or {}), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return received


def test_each_group_hands_one_dataclass_built_from_its_flags(tmp_path: Path) -> None:
    """Every flag of every group lands in its field; nothing else reaches the command."""
    got = chosen(
        "--library", tmp_path / "lib", "--database-url", "sqlite:///x.db",
        "--model", "m.json", "--pretrained", "none", "--device", "cpu", "--precision", "fp32", "--batch-size", "3",
        "-k", "7", "--min-score", "0.5", "--json", "--paths", "--gpu-index", "never",
        "--in", tmp_path, "--in", tmp_path / "b", "--after", "2021", "--before", "2022-06", "--camera", "Canon",
        "--ext", "jpg,png", "--ext", "heic", "--min-width", "10", "--min-height", "20", "--orientation", "Portrait",
        "--images-root", tmp_path, "--format", "jsonl", "--split", "test", "--skip-missing",
    )  # fmt: skip
    assert got == {
        "library": LibraryChoice(tmp_path / "lib", "sqlite:///x.db"),
        "model": ModelChoice("m.json", "none", "cpu", "fp32", 3),
        "results": ResultChoice(7, 0.5, True, True, "never"),
        "filters": FilterChoice(
            (tmp_path, tmp_path / "b"), "2021", "2022-06", "Canon", ("jpg,png", "heic"), 10, 20, "portrait"
        ),
        "reader": CaptionsChoice(tmp_path, "jsonl", "test", True),
    }


def test_groups_take_their_defaults_and_environment_variables(tmp_path: Path) -> None:
    """No flags: the named defaults, and the library, store and device from the environment where set."""
    assert chosen() == {
        "library": LibraryChoice(None, None),
        "model": ModelChoice(None, None, "auto", "auto", DEFAULT_BATCH_SIZE),
        "results": ResultChoice(DEFAULT_TOP_K, None, False, False, "auto"),
        "filters": FilterChoice((), None, None, None, (), None, None, None),
        "reader": CaptionsChoice(None, "auto", None, False),
    }
    env = {LIBRARY_ENV: str(tmp_path), "CLIPSEARCH_DATABASE_URL": "sqlite:///y.db", "CLIPSEARCH_DEVICE": "cpu"}
    got = chosen(env=env)
    assert got["library"] == LibraryChoice(tmp_path, "sqlite:///y.db")
    assert got["model"].device == "cpu"


def test_library_choice_opens_the_store_its_database_url_names(tmp_path: Path) -> None:
    """`--database-url` puts the store where it says, not in the library folder, and reopens it there."""
    (tmp_path / "elsewhere").mkdir()
    store = tmp_path / "elsewhere" / "store.db"
    flags = ["--library", tmp_path / "lib", "--database-url", f"sqlite:///{store}"]
    choice: LibraryChoice = chosen(*flags)["library"]
    with choice.open(create=True) as library:
        assert library.directory == (tmp_path / "lib").resolve()
        assert library.facts(0).database == f"sqlite:///{store}"
        library.create()  # a new library's store appears on its first write
    assert store.is_file()
    assert not any((tmp_path / "lib").glob("*.db"))
    with choice.open() as reopened:  # no create: the URL alone says where the library is
        assert reopened.facts(0).database == f"sqlite:///{store}"
    with pytest.raises(LibraryNotFoundError):
        chosen("--library", tmp_path / "lib")["library"].open()


def test_model_choice_gives_the_named_or_the_recorded_model(library: Library, tiny_encoder: Encoder) -> None:
    """Named flags make that encoder; none named: the library's recorded model, refused while it has none."""
    named: ModelChoice = chosen(
        "--model", tiny_encoder.spec.model, "--pretrained", "none", "--device", "cpu", "--precision", "fp32",
        "--batch-size", "3",
    )["model"]  # fmt: skip
    encoder = named.encoder_for(library)
    assert encoder.spec == tiny_encoder.spec
    assert (encoder.device, encoder.precision, encoder.batch_size) == ("cpu", "fp32", 3)
    recorded: ModelChoice = chosen("--device", "cpu")["model"]
    with pytest.raises(LibraryNotFoundError):
        recorded.encoder_for(library)
    library.bind_model(tiny_encoder)
    assert recorded.encoder_for(library).identity.key == tiny_encoder.identity.key


def test_captions_choice_loads_with_its_root_split_and_missing_rule(tmp_path: Path) -> None:
    """`--images-root`, `--format`, `--split` and `--skip-missing` all reach `load_captions`."""
    factory.pattern_png(tmp_path / "images" / "a.png", seed=1)
    factory.pattern_png(tmp_path / "images" / "b.png", seed=2)
    captions = tmp_path / "meta" / "captions.txt"  # no .jsonl suffix: only --format says what it is
    captions.parent.mkdir()
    rows = [("a.png", "test"), ("b.png", "train"), ("gone.png", "test")]
    captions.write_text("".join(json.dumps({"image": i, "caption": f"{i} shown", "split": s}) + "\n" for i, s in rows))
    flags = ["--images-root", tmp_path / "images", "--format", "jsonl", "--split", "test"]
    data = chosen(*flags, "--skip-missing")["reader"].load(captions)
    assert (data.images, data.captions, data.skipped_missing) == ((tmp_path / "images" / "a.png",), ("a.png shown",), 1)
    with pytest.raises(DatasetError, match=r"gone\.png"):
        chosen(*flags)["reader"].load(captions)


@pytest.mark.parametrize("path", list(leaf_commands(cli)), ids=" ".join)
def test_every_command_function_is_fully_typed(path: tuple[str, ...]) -> None:
    """Behind the groups' wrappers, each command function names every parameter with a type: no **kwargs."""
    callback = leaf_commands(cli)[path].callback
    assert callback is not None
    parameters = inspect.signature(inspect.unwrap(callback)).parameters.values()
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD and p.annotation is not p.empty for p in parameters), path
