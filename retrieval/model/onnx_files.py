"""Where a model's ONNX exports live and how they are checked before use, without torch or open_clip.

One folder per model identity, `<root>/<identity short key>/`, holding `image.onnx`, `text.onnx`,
`image-int8.onnx` (made on demand), the tokenizer's vocab file and `export.json`, the manifest. Each file
is written atomically and private (0600). The manifest names the identity and, per tower, the file's size
and sha256 and how closely it matched torch when it was verified; a tower is used only if the manifest
says it was verified and its file still has that size and hash. Anything else is treated as missing, and
the encoder exports it again.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.atomic import write_atomic
from retrieval.model.specs import ModelIdentity, file_sha256

MANIFEST_FILE = "export.json"
MANIFEST_FORMAT = 1
TOWER_FILES = {"image": "image.onnx", "text": "text.onnx", "image-int8": "image-int8.onnx"}


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
        path = self.tower_path(tower)
        if not path.is_file():
            warn_stale(f"{path} is missing")
            return None
        if path.stat().st_size != record.get("size") or file_sha256(path) != record.get("sha256"):
            warn_stale(f"{path} changed since it was verified (size or sha256 differ)")
            return None
        return path

    def record(self, tower: str, facts: dict[str, Any], base: dict[str, Any]) -> None:
        """Add `tower` (its file already written and verified) to the manifest, whose model-wide fields
        come from `base`; the manifest is rewritten atomically."""
        path = self.tower_path(tower)
        manifest = self.manifest() or {}
        manifest.update(base, format=MANIFEST_FORMAT, identity=self.identity.key)
        towers = manifest.setdefault("towers", {})
        towers[tower] = {**facts, "file": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)}
        write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n", private=True)

    def forget(self, tower: str) -> None:
        """Drop `tower` from the manifest (before its file is replaced), so a crash midway leaves no
        record that vouches for a file that is not the verified one."""
        manifest = self.manifest()
        if manifest and tower in manifest.get("towers", {}):
            del manifest["towers"][tower]
            write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n", private=True)


def warn_stale(message: str) -> None:
    """Say that an export on disk cannot be used (and will be made again)."""
    warnings.warn(f"{message}; the ONNX export is made again", StaleExportWarning, stacklevel=3)
