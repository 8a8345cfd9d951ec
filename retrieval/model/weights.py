"""Finding pretrained weights for an open_clip tag: the local cache first, then the hub, failing fast offline.

open_clip's own download retries for about a minute when the network is down and then raises a generic
error. Here we look in the caches first, probe the hub once with a short timeout, and otherwise say what
was tried and how to fix it.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
from huggingface_hub import constants, try_to_load_from_cache

from retrieval.errors import ModelUnavailableError

_WEIGHTS_PARAMETERS = ("model", "pretrained")  # what the fix in the messages below names

PROBE_TIMEOUT_S = 3.0
HF_DEFAULT_FILENAME = "open_clip_pytorch_model.bin"
HF_SAFE_FILENAME = "open_clip_model.safetensors"


@dataclass(frozen=True)
class PretrainedSource:
    """Where a tag's weights are: a cached file, or a hub that answered (open_clip downloads then)."""

    cached_file: str | None
    preprocess: dict[str, Any]


def _hf_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """The repo and the file names open_clip would fetch for an `hf_hub` entry, safetensors first."""
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or HF_DEFAULT_FILENAME
    names = [filename]
    if filename == HF_DEFAULT_FILENAME:
        names.insert(0, HF_SAFE_FILENAME)
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return repo_id, names


def _cached_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    if cfg.get("hf_hub"):
        repo_id, names = _hf_candidates(cfg["hf_hub"])
        for name in names:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    if cfg.get("url"):
        target = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(cfg["url"])
        if target.is_file():
            return str(target)
    return None


def hub_reachable(url: str = constants.ENDPOINT, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to the hub's host, name lookup included, within `timeout` seconds: cheap, and
    tells 'offline' apart from 'slow'. The lookup has no timeout of its own, so it runs in a daemon thread."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="clipsearch-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def locate_pretrained(model_name: str, tag: str, cache_dir: str | None = None) -> PretrainedSource:
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    preprocess = {key: cfg[key] for key in ("mean", "std", "interpolation", "resize_mode") if key in cfg}
    preprocess["quick_gelu"] = bool(cfg.get("quick_gelu", False))
    cached = _cached_file(cfg, cache_dir)
    if cached is not None:
        return PretrainedSource(cached, preprocess)
    where = cfg.get("hf_hub") or cfg.get("url") or "(no source)"
    cache = cache_dir or constants.HF_HUB_CACHE
    fix = (
        f"Fix: on a machine with internet run any clipsearch command once with this model (it caches the "
        f"weights under {cache}) and copy that cache here, or download the checkpoint file and pass "
        f"`pretrained` /path/to/checkpoint (keeping `model` {model_name}). "
        "For a test run without weights use `pretrained` none."
    )
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailableError(
            f"weights '{tag}' for {model_name} are not in the cache ({cache}) and HF_HUB_OFFLINE is set. {fix}",
            parameters=_WEIGHTS_PARAMETERS,
        )
    probe = constants.ENDPOINT if cfg.get("hf_hub") else cfg.get("url", constants.ENDPOINT)
    if not hub_reachable(probe):
        raise ModelUnavailableError(
            f"weights '{tag}' for {model_name} are not cached ({cache}) and {urlparse(probe).hostname} "
            f"cannot be reached to download them from {where}: this machine looks offline. {fix}",
            parameters=_WEIGHTS_PARAMETERS,
        )
    return PretrainedSource(None, preprocess)
