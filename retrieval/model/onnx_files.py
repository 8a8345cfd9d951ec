"""Where a model's ONNX exports live and how they are checked before use, without torch or open_clip.

One folder per model identity, `<root>/<identity short key>/`, holding `image.onnx`, `text.onnx`,
`image-int8.onnx` (made on demand), `text.onnx.data` (the text tower's weights, kept apart from its
graph so that a cold query opens it faster), the tokenizer's vocab file and `export.json`, the manifest. Each file
is written atomically and private (0600). The manifest names the identity and, per tower, the file's size,
mtime_ns and sha256, how closely it matched torch when it was verified and the exporter's version for it
(EXPORT_VERSIONS); a tower is used only if the manifest says the current exporter made and verified it and its
file still has that content. A file whose size and mtime_ns are the
recorded ones is taken as unchanged without reading it (hashing ViT-B-32's 254 MB text tower cost every
cold query 0.15 s); one whose stamp differs (copied, touched) is hashed, and if the hash still matches its
new stamp is recorded. Anything else is treated as missing, and the encoder exports it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.atomic import write_atomic
from retrieval.model.specs import ModelIdentity, file_sha256

MANIFEST_FILE = "export.json"
MANIFEST_FORMAT = 1
TOWER_FILES = {"image": "image.onnx", "text": "text.onnx", "image-int8": "image-int8.onnx"}
# How each tower is exported; a tower recorded with another version (none recorded: 1) is exported again.
# 2: a ViT image tower's self-attention as one fused `Attention` op (`QAttention` in int8).
EXPORT_VERSIONS = {"image": 2, "text": 1, "image-int8": 2}


class StaleExportWarning(UserWarning):
    """An ONNX export on disk was unreadable, changed or unverified; it is exported again."""


@dataclass(frozen=True)
class ExportFolder:
    """The exports of one model (`identity`) under `root`."""

    root: Path
    identity: ModelIdentity

    @property
    def path(self) -> Path:
        return self.root / self.identity.short_key

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    def tower_path(self, tower: str) -> Path:
        return self.path / TOWER_FILES[tower]

    def manifest(self) -> dict[str, Any] | None:
        """The manifest if it is readable and belongs to this model; otherwise None (with a warning when a
        file exists but cannot be used)."""
        try:
            text = self.manifest_path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            warn_stale(f"cannot read {self.manifest_path}: {exc}")
            return None
        try:
            manifest = json.loads(text)
        except ValueError:
            warn_stale(f"{self.manifest_path} is not valid JSON")
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            warn_stale(f"{self.manifest_path} has another format than {MANIFEST_FORMAT}")
            return None
        if manifest.get("identity") != self.identity.key:
            warn_stale(f"{self.manifest_path} belongs to another model ({manifest.get('identity')})")
            return None
        return manifest

    def verified(self, tower: str) -> Path | None:
        """The path of `tower`'s file if the manifest records it as verified and the file is intact."""
        manifest = self.manifest()
        record = (manifest or {}).get("towers", {}).get(tower)
        if not isinstance(record, dict):
            return None
        if record.get("export_version", 1) != EXPORT_VERSIONS[tower]:
            warn_stale(f"{self.tower_path(tower)} was made by an older version of the exporter")
            return None
        path = self.tower_path(tower)
        files = [(path, record), *([(data_path(path), record["data"])] if "data" in record else [])]
        for file, stamp in files:
            if not file.is_file():
                warn_stale(f"{file} is missing")
                return None
            if not self.intact(file, stamp):
                warn_stale(f"{file} changed since it was verified (size or sha256 differ)")
                return None
        return path

    def intact(self, path: Path, record: dict[str, Any]) -> bool:
        """Whether the file at `path` still has the content `record` names (its "size", "sha256" and
        "mtime_ns"): by its stamp when that is unchanged, else by hashing it; a file that hashes right under a
        new stamp gets that stamp recorded (when the manifest can be written), so only one run hashes it."""
        stat = path.stat()
        if stat.st_size != record.get("size", stat.st_size):  # a manifest before stamps recorded no size for the vocab
            return False
        if stat.st_mtime_ns == record.get("mtime_ns"):
            return True
        if file_sha256(path) != record.get("sha256"):
            return False
        record["mtime_ns"] = stat.st_mtime_ns
        self._restamp(path.name, stat.st_mtime_ns)
        return True

    def _restamp(self, name: str, mtime_ns: int) -> None:
        manifest = self.manifest()
        if manifest is None or not os.access(self.path, os.W_OK):
            return
        towers = manifest.get("towers", {}).values()
        records = [*towers, *(tower["data"] for tower in towers if "data" in tower)]
        records.append(manifest.get("tokenizer", {}).get("vocab_stamp", {}))
        for record in records:
            if record.get("file") == name:
                record["mtime_ns"] = mtime_ns
        with contextlib.suppress(OSError):  # a read-only library: the next run hashes the file again, nothing worse
            self._write(manifest)

    def record(self, tower: str, facts: dict[str, Any], base: dict[str, Any]) -> None:
        """Add `tower` (its file already written and verified) to the manifest, whose model-wide fields
        come from `base`; the manifest is rewritten atomically."""
        path = self.tower_path(tower)
        manifest = self.manifest() or {}
        manifest.update(base, format=MANIFEST_FORMAT, identity=self.identity.key)
        towers = manifest.setdefault("towers", {})
        towers[tower] = {**facts, "file": path.name, "export_version": EXPORT_VERSIONS[tower], **file_stamp(path)}
        if data_path(path).is_file():
            towers[tower]["data"] = {"file": data_path(path).name, **file_stamp(data_path(path))}
        self._write(manifest)

    def forget(self, tower: str) -> None:
        """Drop `tower` from the manifest (before its file is replaced), so a crash midway leaves no
        record that vouches for a file that is not the verified one."""
        manifest = self.manifest()
        if manifest and tower in manifest.get("towers", {}):
            del manifest["towers"][tower]
            self._write(manifest)

    def _write(self, manifest: dict[str, Any]) -> None:
        write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n", private=True)


def data_path(tower_file: Path) -> Path:
    """Where the weights of a tower saved as ONNX external data live: `text.onnx` -> `text.onnx.data`."""
    return tower_file.with_name(tower_file.name + ".data")


def file_stamp(path: Path) -> dict[str, Any]:
    """What `ExportFolder.intact` checks a file against: its size, mtime_ns and sha256."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(path)}


def warn_stale(message: str) -> None:
    """Say that an export on disk cannot be used (and will be made again)."""
    warnings.warn(f"{message}; the ONNX export is made again", StaleExportWarning, stacklevel=3)
