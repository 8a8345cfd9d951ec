"""The group itself: every command registered from one list, a docstring example on each, and the error
edge that names the library's parameters by their flags."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import torch

from indexer.cli import COMMANDS, cli
from indexer.cli.app import FLAGS, file_system_message
from retrieval.errors import ModelMismatchError
from tests.clirunner import assert_clean_failure, invoke, leaf_commands
from tests.conftest import TINY_CONFIG


def test_the_group_holds_exactly_the_command_list() -> None:
    """The commands the group knows are the ones in `COMMANDS`, each once."""
    assert len({command.name for command in COMMANDS}) == len(COMMANDS)
    assert cli.commands == {command.name: command for command in COMMANDS}


@pytest.mark.parametrize("path", list(leaf_commands(cli)), ids=" ".join)
def test_every_command_help_shows_its_docstring_example(path: tuple[str, ...]) -> None:
    """Each runnable command's docstring has an `Example:` of `clipsearch` lines, all shown by its --help."""
    command = leaf_commands(cli)[path]
    lines = [line.strip() for line in (command.help or "").splitlines()]
    assert "Example:" in lines, path
    examples = [line for line in lines[lines.index("Example:") + 1 :] if line]
    assert examples and examples[0].startswith("clipsearch " + " ".join(path))
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    for line in examples:
        assert line in result.output


def test_every_flag_named_for_a_parameter_is_an_option() -> None:
    """The edge's flags exist: each is an option of some command."""
    options = {opt for command in leaf_commands(cli).values() for param in command.params for opt in param.opts}
    assert set(FLAGS.values()) <= options


def test_the_edge_names_flags_where_the_library_names_parameters(tmp_path: Path, tiny_config: Path) -> None:
    """A library built with one model, searched with another: the library's error names `model`,
    `pretrained` and `directory`; the CLI prints the same message with --model, --pretrained and --library."""
    photos = tmp_path / "photos"
    photos.mkdir()
    library = tmp_path / "library"
    model = ["--model", str(tiny_config), "--pretrained", "none", "--device", "cpu"]
    assert invoke("index", photos, "--library", library, *model).exit_code == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps(TINY_CONFIG | {"embed_dim": 16}))
    args = ["search", "dog", "--library", str(library), "--model", str(other), "--pretrained", "none", *model[-2:]]
    output = " ".join(assert_clean_failure(invoke(*args)).split())
    flags = "Leave out --model/--pretrained to use the library's model, or give another --library for the new model."
    assert flags in output
    assert "`" not in output
    with pytest.raises(click.ClickException) as caught:
        cli.main(args, prog_name="clipsearch", standalone_mode=False)
    error = caught.value.__cause__
    assert isinstance(error, ModelMismatchError)
    assert "Leave out `model`/`pretrained` to use the library's model, or give another `directory`" in str(error)
    assert caught.value.message == error.naming(FLAGS)


def test_the_edge_names_the_environment_variable_of_a_missing_library(tmp_path: Path) -> None:
    """No library: the message tells to run `clipsearch index`, or to point --library / CLIPSEARCH_LIBRARY."""
    output = " ".join(assert_clean_failure(invoke("info", "--library", tmp_path / "none")).split())
    assert "run `clipsearch index FOLDER` first (or point --library / CLIPSEARCH_LIBRARY at an existing one)" in output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_the_edge_names_device_flags(tmp_path: Path, tiny_config: Path) -> None:
    """An absent device and fp16 on the CPU: the library's `device`/`precision` read as --device/--precision."""
    photos = tmp_path / "photos"
    photos.mkdir()
    model = ["--model", str(tiny_config), "--pretrained", "none"]
    cuda = invoke("index", photos, "--library", tmp_path / "lib", *model, "--device", "cuda")
    assert "--device cuda asked for, but torch sees no CUDA GPU; use --device cpu" in assert_clean_failure(cuda)
    fp16 = invoke("index", photos, "--library", tmp_path / "lib", *model, "--device", "cpu", "--precision", "fp16")
    assert "fp16 is not supported on the CPU; use --precision fp32 or bf16" in assert_clean_failure(fp16)


# --- the file system's refusals at the edge -------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "what"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EDQUOT, "the disk quota is used up"),
        (errno.EFBIG, "the file grew past the size"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission was denied"),
    ],
)
def test_a_file_system_refusal_reads_as_one_sentence(code: int, what: str) -> None:
    """Disk full, quota, size limit, read-only, permission: what happened, at which path, that nothing
    committed is lost, and what to do, on one line."""
    path = os.fsdecode(b"/lib/zz\xff/library.db")
    message = file_system_message(OSError(code, os.strerror(code), path))
    assert message is not None and "\n" not in message
    assert message.startswith(f"{what}")
    assert f" at {path} ({os.strerror(code)})" in message
    assert "nothing committed before is lost" in message
    assert message.endswith("and run the command again")


def test_other_os_errors_stay_tracebacks() -> None:
    """A missing file or a bad descriptor is a bug to see, not a condition to explain."""
    assert file_system_message(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None
    assert file_system_message(OSError(errno.EBADF, "Bad file descriptor")) is None


def _cli_process(args: list[str], tmp_path: Path, preexec: Callable[[], None]) -> subprocess.CompletedProcess[str]:
    code = "from indexer.cli import main; main()"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tmp_path, env=env, preexec_fn=preexec, capture_output=True, text=True
    )


def _small_dataset(folder: Path) -> list[str]:
    sizes = [f"{split}=1" for split in ("train", "val", "test", "heldout-train", "heldout-test")]
    return ["generate-dataset", str(folder), *[arg for size in sizes for arg in ("--size", size)]]


@pytest.mark.slow
def test_a_file_size_limit_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    """A real EFBIG (RLIMIT_FSIZE of 1 KB, SIGXFSZ ignored) while writing the dataset: exit 1, one
    `Error:` line saying what happened, no traceback."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    run = _cli_process(_small_dataset(tmp_path / "shapes"), tmp_path, limit)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith(
        "Error: the file grew past the size the file system or a limit allows (File too large)"
    )


@pytest.mark.slow
def test_a_permission_refusal_names_the_path(tmp_path: Path) -> None:
    """A folder the process may not write (0555; as root, the child drops CAP_DAC_OVERRIDE so that the mode
    counts): exit 1, the sentence names the path it could not create, no traceback."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)

    def unprivileged() -> None:
        if os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.prctl(24, 1, 0, 0, 0) == 0  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE: root minus "ignore modes"

    run = _cli_process(_small_dataset(locked / "shapes"), tmp_path, unprivileged)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert f"Error: permission was denied at {locked / 'shapes'}" in run.stderr
