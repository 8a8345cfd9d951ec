"""Choosing the compute device and precision; the rest of the code only sees the result."""

from __future__ import annotations

import torch

from retrieval.config import DEVICE_CHOICES
from retrieval.errors import DeviceUnavailableError

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str) -> str:
    """`auto` picks CUDA, then Apple MPS, then CPU; an explicit device that is absent is an error."""
    if device not in DEVICE_CHOICES:
        raise DeviceUnavailableError(f"unknown device '{device}'; choose one of {', '.join(DEVICE_CHOICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if mps_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if device == "mps" and not mps_available():
        raise DeviceUnavailableError("--device mps asked for, but this torch has no MPS; use --device cpu")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """`auto` is fp16 on a GPU (half the memory, tensor cores) and fp32 on the CPU, where fp16 is slow."""
    if precision not in PRECISION_CHOICES:
        raise DeviceUnavailableError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return "fp16" if device in ("cuda", "mps") else "fp32"
    if precision == "fp16" and device == "cpu":
        raise DeviceUnavailableError("fp16 is not supported on the CPU; use --precision fp32 or bf16")
    return precision
