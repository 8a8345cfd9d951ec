"""The library's answers to what every caller asks, CLI or Python: which model a run uses (`model_for`),
what the library holds (`facts`), and where a library is when none is named.

Real libraries on disk, indexed by the real pipeline with the tiny random-weight model.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.pipeline import index_folders
from retrieval.config import DATABASE_FILE, DEFAULT_MODEL, DEFAULT_PRETRAINED, LIBRARY_ENV, RANDOM_WEIGHTS
from retrieval.errors import LibraryNotFoundError, ModelMismatchError, PrecisionMixWarning
from retrieval.library import Library
from retrieval.model.devices import resolve_device
from retrieval.model.encoder import Encoder
from retrieval.model.specs import ModelSpec
from retrieval.search import Searcher
from tests import imagefactory
from tests.clirunner import assert_clean_failure, invoke

FACT_KEYS = [
    "library", "database", "model", "model_identity", "dim", "precision", "indexed", "failed", "total_bytes",
    "first_taken", "last_taken", "generation", "index_file", "model_device", "faiss_gpus", "failures",
]  # fmt: skip


def _index_photos(library: Library, encoder: Encoder, photos: Path) -> Library:
    """The `photos` folder (12 PNGs and an EXIF JPEG) plus one truncated JPEG, indexed with the tiny model."""
    imagefactory.truncated_jpeg(photos / "broken.jpg")
    index_folders(library, encoder, [str(photos)], workers=1)
    return library


@pytest.fixture
def indexed(library: Library, tiny_encoder: Encoder, photos: Path) -> Library:
    return _index_photos(library, tiny_encoder, photos)


@pytest.fixture
def any_library(tmp_path: Path, library_url: str | None) -> Iterator[Library]:
    """A new library on each backend: its store a SQLite file in its folder, then a PostgreSQL database."""
    with Library(tmp_path / "any-library", create=True, database_url=library_url) as library:
        yield library


# --- which model ---------------------------------------------------------------------------------------------


def test_model_for_a_new_library_is_the_default_only_when_asked(library: Library) -> None:
    """Nothing named, nothing recorded: a run that may start the library gets the default model; a run that
    needs the library's own model is told to index first."""
    assert library.model_for(or_default=True) == ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED)
    with pytest.raises(LibraryNotFoundError, match="no model recorded yet"):
        library.model_for()
    with pytest.raises(LibraryNotFoundError, match="no model recorded yet"):
        library.encoder()


def test_model_for_names_on_a_new_library_are_completed_with_defaults(library: Library, tiny_config: Path) -> None:
    """A model named without weights gets the default tag; weights named alone go with the default model."""
    assert library.model_for("ViT-B-16") == ModelSpec("ViT-B-16", DEFAULT_PRETRAINED)
    assert library.model_for(pretrained="none") == ModelSpec(DEFAULT_MODEL, "none")
    assert library.model_for(str(tiny_config), "none", or_default=True) == ModelSpec(str(tiny_config), "none")


def test_model_for_a_bound_library_is_the_recorded_model(indexed: Library, tiny_spec: ModelSpec) -> None:
    """Nothing named: the recorded model, with or without `or_default`; naming it again changes nothing."""
    recorded = tiny_spec.absolute()
    assert indexed.model_for() == indexed.model_for(or_default=True) == recorded
    assert indexed.model_for(recorded.model) == recorded
    assert indexed.model_for(recorded.model, RANDOM_WEIGHTS) == recorded


def test_model_for_a_relative_config_path_is_the_recorded_model(
    indexed: Library, tiny_spec: ModelSpec, tiny_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`./tiny.json` from its folder names the recorded absolute path, so the recorded weights are kept."""
    monkeypatch.chdir(tiny_config.parent)
    assert indexed.model_for(f"./{tiny_config.name}") == tiny_spec.absolute()


def test_model_for_another_model_takes_the_default_weights(indexed: Library, tmp_path: Path) -> None:
    """Another model named without weights: the default tag, not the recorded model's weights; the
    recorded model with other weights keeps its architecture."""
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert indexed.model_for(str(other)) == ModelSpec(str(other.resolve()), DEFAULT_PRETRAINED)
    recorded = indexed.recorded_model()
    assert recorded is not None
    assert indexed.model_for(pretrained="/w.pt") == ModelSpec(recorded.model, "/w.pt")


def test_encoder_refuses_another_model_naming_the_parameters(indexed: Library, tmp_path: Path) -> None:
    """The mismatch names both models and the Python parameters to change (the CLI shows them as flags)."""
    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.loads(Path(indexed.model_for().model).read_text()) | {"embed_dim": 16}))
    with pytest.raises(ModelMismatchError) as caught:
        indexed.encoder(indexed.model_for(str(other), "none"), device="cpu")
    message = str(caught.value)
    assert "Leave out `model`/`pretrained` to use the library's model, or give another `directory`" in message
    assert "--" not in message
    assert caught.value.parameters == ("model", "pretrained", "directory")


# --- where a library is ----------------------------------------------------------------------------------------


def test_no_directory_is_the_default_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Library()` opens the default library (CLIPSEARCH_LIBRARY here); a missing one names the parameter."""
    where = tmp_path / "default-library"
    monkeypatch.setenv(LIBRARY_ENV, str(where))
    with pytest.raises(LibraryNotFoundError) as caught:
        Library()
    assert f"point `directory` / {LIBRARY_ENV} at an existing one" in str(caught.value)
    assert caught.value.parameters == ("directory",)
    assert not where.exists()
    with Library(create=True) as created:
        assert created.directory == where.resolve()


# --- facts -----------------------------------------------------------------------------------------------------


def test_facts_of_an_indexed_library(
    any_library: Library, tiny_encoder: Encoder, photos: Path, library_url: str | None
) -> None:
    """Counts, model, dimension, dates, the index file and the skipped file, as the store and disk say."""
    indexed = _index_photos(any_library, tiny_encoder, photos)
    facts = indexed.facts()
    assert facts.library == indexed.directory
    assert facts.database == (library_url or f"sqlite:///{indexed.directory / 'library.db'}")
    assert facts.model_identity == tiny_encoder.identity.key
    assert facts.model == tiny_encoder.identity.description
    assert facts.dim == tiny_encoder.dim
    assert facts.precision == tiny_encoder.made_by == "onnx fp32"
    stats = facts.stats
    assert (stats.indexed, stats.failed) == (13, 1)
    on_disk = [p for p in photos.rglob("*") if p.is_file() and p.name != "broken.jpg"]
    assert stats.total_bytes == sum(p.stat().st_size for p in on_disk)
    assert stats.first_taken is not None and stats.first_taken == stats.last_taken
    assert stats.generation == indexed.store.generation()
    assert facts.index_file == indexed.index_path(stats.generation) and facts.index_file.is_file()
    assert [path for path, _reason in stats.failures] == [str(photos / "broken.jpg")]
    assert facts.model_device == resolve_device("auto")
    assert facts.faiss_gpus >= 0


def test_facts_to_json_keys_and_values(indexed: Library) -> None:
    """`to_json` has `info --json`'s keys in its order, JSON values only, and says when the index is stale."""
    facts = indexed.facts(failure_limit=0)
    data = facts.to_json()
    assert list(data) == FACT_KEYS
    assert json.loads(json.dumps(data)) == data
    assert data["library"] == str(indexed.directory)
    first_taken = facts.stats.first_taken
    assert first_taken is not None and data["first_taken"] == data["last_taken"] == first_taken.isoformat()
    assert (data["indexed"], data["failed"], data["generation"]) == (13, 1, facts.stats.generation)
    assert data["index_file"] == str(facts.index_file)
    assert data["failures"] == [] and facts.stats.failed == 1
    assert facts.index_file is not None
    facts.index_file.unlink()
    stale = indexed.facts().to_json()
    assert stale["index_file"] == "stale or missing (rebuilt on next search)"


def test_facts_of_a_new_library(any_library: Library) -> None:
    """Before the first index run: no model, no dimension, nothing counted, no index file."""
    data = any_library.facts().to_json()
    assert (data["model"], data["model_identity"], data["dim"], data["precision"]) == (None, None, None, None)
    assert (data["indexed"], data["failed"], data["total_bytes"], data["generation"]) == (0, 0, 0, 0)
    assert (data["first_taken"], data["last_taken"], data["failures"]) == (None, None, [])


def test_the_precision_of_the_vectors_is_recorded_and_a_mix_is_named(
    library: Library, tiny_encoder: Encoder, tiny_spec: ModelSpec, photos: Path, tmp_path: Path
) -> None:
    """The library records what made its vectors. A later run at int8 into an fp32 library goes on (same model)
    with a `PrecisionMixWarning`, and the record names both; a run that embeds nothing records nothing; another
    runtime at the same precision is recorded without a warning."""
    more = tmp_path / "more"
    index_folders(library, tiny_encoder, [str(photos)], workers=1)
    assert library.precision() == "onnx fp32"
    int8 = Encoder(tiny_spec, device="cpu", backend="onnx", precision="int8", onnx_dir=tmp_path / "exports")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionMixWarning)
        index_folders(library, int8, [str(photos)], workers=1)  # nothing new to embed
    assert library.precision() == "onnx fp32"
    for seed in (100, 101):  # images the library has not seen (a copy would reuse a stored vector)
        imagefactory.pattern_png(more / "a" / f"{seed}.png", seed=seed)
    with pytest.warns(PrecisionMixWarning, match="made with onnx fp32; this run adds vectors made with onnx int8"):
        report = index_folders(library, int8, [str(more / "a")], workers=1)
    assert report.embedded > 0
    assert library.precision() == library.facts().to_json()["precision"] == "onnx fp32, onnx int8"
    imagefactory.pattern_png(more / "b" / "102.png", seed=102)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionMixWarning)
        index_folders(library, Encoder(tiny_spec, device="cpu", backend="torch"), [str(more / "b")], workers=1)
    assert library.precision() == "onnx fp32, onnx int8, torch fp32"


def test_a_recorded_checkpoint_is_not_hashed_again_while_its_stamp_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library bound to a checkpoint file records its size and mtime_ns; while the file keeps them, opening the
    library's encoder takes the recorded identity without hashing the file (seconds for a large checkpoint, on
    every query). A touched file is hashed until an index run (`bind_model`) records its new stamp; other weights
    are refused."""
    import retrieval.model.specs as specs_module
    from retrieval.model.reference import reference_spec

    reference = reference_spec()
    checkpoint = tmp_path / "weights.pt"
    shutil.copyfile(reference.pretrained, checkpoint)
    spec = ModelSpec(reference.model, str(checkpoint))
    with Library(tmp_path / "library", create=True) as library:
        first = library.encoder(spec, backend="torch")
        library.bind_model(first)
        hashed: list[str] = []
        real = specs_module.file_sha256
        monkeypatch.setattr(specs_module, "file_sha256", lambda path: hashed.append(str(path)) or real(path))
        assert library.encoder(backend="torch").identity == first.identity
        assert hashed == []
        os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10**9))
        touched = library.encoder(backend="torch")
        assert touched.identity == first.identity
        assert hashed == [str(checkpoint)]
        library.bind_model(touched)
        assert library.encoder(backend="torch").identity == first.identity
        assert hashed == [str(checkpoint)]
        with open(checkpoint, "ab") as handle:
            handle.write(b"other weights")
        with pytest.raises(ModelMismatchError):
            library.encoder(backend="torch")


# --- the library's files ---------------------------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_indexed_and_found(
    any_library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    """`zz\\xff.jpg` among good images (its name reaches Python as `zz\\udcff.jpg`): every file is indexed, a
    rerun changes nothing, and the store and a search give back the very same `str`."""
    odd = photos / os.fsdecode(b"zz\xff.jpg")
    imagefactory.solid_jpeg(odd, color=(20, 200, 40))
    files = len([path for path in photos.rglob("*") if path.is_file()])
    report = index_folders(any_library, tiny_encoder, [str(photos)], workers=1)
    assert (report.embedded, report.failed) == (files, 0)
    again = index_folders(any_library, tiny_encoder, [str(photos)], workers=1)
    assert (again.embedded, again.unchanged, again.removed) == (0, files, 0)
    record = any_library.store.image_by_path(str(odd))
    assert record is not None and record.path == str(odd) and record.has_vector
    assert str(odd) in any_library.store.file_states_under(str(photos))
    (hit,) = Searcher(any_library, tiny_encoder, gpu="never").search_image(odd, k=1, include_self=True)
    assert hit.path == str(odd) and hit.id == record.id


def test_index_with_a_model_that_cannot_load_creates_no_library(tmp_path: Path, photos: Path) -> None:
    """`clipsearch index` into a new library with a model config that does not exist fails with a clear message
    and leaves no folder and no database behind."""
    new = tmp_path / "new" / "library"
    missing = tmp_path / "missing.json"
    result = invoke("index", photos, "--library", new, "--model", missing, "--pretrained", "none", "--device", "cpu")
    output = assert_clean_failure(result)
    assert "missing.json" in output
    assert not (tmp_path / "new").exists()


def test_info_on_an_empty_database_file_says_it_is_damaged(tmp_path: Path) -> None:
    """`clipsearch info` on a zero-byte library.db: one message naming the file and the way back, no traceback,
    and the file stays empty (it used to become a new library)."""
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / DATABASE_FILE).write_bytes(b"")
    output = assert_clean_failure(invoke("info", "--library", folder))
    assert str(folder / DATABASE_FILE) in output and "damaged" in output and "backup" in output
    assert (folder / DATABASE_FILE).stat().st_size == 0
