"""What `Library.facts` returns: a library's facts at a glance (`clipsearch info`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrieval.storage.records import LibraryStats

_STALE_INDEX = "stale or missing (rebuilt on next search)"


@dataclass(frozen=True)
class LibraryFacts:
    """What there is to know about a library at a glance (`clipsearch info`)."""

    library: Path
    database: str
    """The store's URL, password hidden."""
    model: str | None
    """The recorded model as people read it; None before the first index run."""
    model_identity: str | None
    dim: int | None
    precision: str | None
    """The runtime and precision that made the vectors (`onnx int8`, `torch fp32`; several, comma-separated,
    when index runs used different ones); None before the first image is embedded."""
    stats: LibraryStats
    """Counts, bytes, EXIF date range, generation, and the skipped files asked for."""
    index_file: Path | None
    """The FAISS file of the current generation; None when it is stale, damaged, another library's or missing
    (the next search rebuilds it)."""
    model_device: str
    """Where a model would run here with `device` auto."""
    faiss_gpus: int

    def to_json(self) -> dict[str, Any]:
        """One flat object: the facts, then the stats' own fields, the skipped files last."""
        stats = asdict(self.stats)
        failures = stats.pop("failures")
        return {
            "library": str(self.library),
            "database": self.database,
            "model": self.model,
            "model_identity": self.model_identity,
            "dim": self.dim,
            "precision": self.precision,
            **stats,
            "first_taken": self.stats.first_taken.isoformat() if self.stats.first_taken else None,
            "last_taken": self.stats.last_taken.isoformat() if self.stats.last_taken else None,
            "index_file": str(self.index_file) if self.index_file else _STALE_INDEX,
            "model_device": self.model_device,
            "faiss_gpus": self.faiss_gpus,
            "failures": failures,
        }
