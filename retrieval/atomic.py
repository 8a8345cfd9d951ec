"""One way to write a file so that readers see the old content or the new, never a torn one.

Used for every file clipsearch derives or produces: the FAISS index, training checkpoints and logs,
generated dataset files. The new content goes to a temporary file in the target's folder (so the rename
stays on one filesystem), is fsynced, and is renamed over the target; the folder is fsynced so the
rename survives a crash; on any failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

_PRIVATE_MODE = 0o600  # library files hold private data (paths, dates, cameras, vectors)
_PLAIN_MODE = 0o666  # what open() asks for; the umask then applies as usual


@contextlib.contextmanager
def atomic_path(target: str | Path, *, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path for the caller to write (by any library: faiss, torch, plain I/O); when
    the block ends normally it replaces `target`. `private` keeps it 0600 (library files hold private
    data); otherwise it gets the mode a plain `open()` would give it under the current umask."""
    target = Path(target)
    temporary = _create_temporary(target, _PRIVATE_MODE if private else _PLAIN_MODE)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def write_atomic(target: str | Path, data: bytes | str, *, private: bool = False) -> None:
    """Replace `target` with `data` (text is written as UTF-8) atomically."""
    with atomic_path(target, private=private) as temporary:
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)


def _create_temporary(target: Path, mode: int) -> Path:
    """A new, empty, uniquely named file beside `target`, created with `mode` (less the umask)."""
    while True:
        temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        except FileExistsError:
            continue
        return temporary


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_older_generations(folder: Path, prefix: str, suffix: str, generation: int) -> None:
    """Delete the derived files `<prefix><number><suffix>` in `folder` whose number is below `generation`;
    never newer ones, which a concurrent writer may have saved meanwhile."""
    for old in folder.glob(f"{prefix}*{suffix}"):
        number = old.name[len(prefix) : -len(suffix)]
        if number.isdigit() and int(number) < generation:
            old.unlink(missing_ok=True)
