"""Choosing the compute device and precision; the rest of the code only sees the result.

`resolve_device` asks torch, which the encoder loads anyway. `probe_device` gives the same answer for
`auto` without importing torch, for callers that only report where a model would run (`info`).
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

from retrieval.config import BACKEND_CHOICES, DEVICE_CHOICES
from retrieval.errors import DeviceUnavailableError

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")
_CUDA_DRIVER = {"linux": "libcuda.so.1", "win32": "nvcuda.dll"}


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str) -> str:
    """`auto` picks CUDA, then Apple MPS, then CPU; an explicit device that is absent is an error."""
    if device not in DEVICE_CHOICES:
        raise DeviceUnavailableError(f"unknown device '{device}'; choose one of {', '.join(DEVICE_CHOICES)}")
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if mps_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "`device` cuda asked for, but torch sees no CUDA GPU; use `device` cpu", parameters=("device",)
        )
    if device == "mps" and not mps_available():
        raise DeviceUnavailableError(
            "`device` mps asked for, but this torch has no MPS; use `device` cpu", parameters=("device",)
        )
    return device


def probe_device() -> str:
    """What `resolve_device("auto")` picks, found without importing torch: CUDA when the installed torch is
    built with it and the driver reports a GPU, then MPS on an Apple-silicon Mac (macOS 12.3+), else the CPU."""
    if _torch_built_with_cuda() and cuda_device_count() > 0:
        return "cuda"
    if sys.platform == "darwin" and platform.machine() == "arm64" and _macos_version() >= (12, 3):
        return "mps"
    return "cpu"


def cuda_device_count() -> int:
    """GPUs the CUDA driver reports (0 without a driver), asked through the driver library itself."""
    import ctypes

    name = _CUDA_DRIVER.get(sys.platform)
    if name is None:
        return 0
    try:
        driver = ctypes.CDLL(name)
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _torch_built_with_cuda() -> bool:
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return False
    return any((Path(spec.origin).parent / "lib").glob("*torch_cuda*"))


def _macos_version() -> tuple[int, ...]:
    return tuple(int(part) for part in platform.mac_ver()[0].split(".")[:2] if part.isdigit())


def resolve_precision(precision: str, device: str, backend: str = "torch") -> str:
    """`auto` is fp16 on a GPU (half the memory, tensor cores) and fp32 on the CPU, where fp16 is slow.
    int8 (the image tower dynamically quantised; text stays fp32) exists only for ONNX Runtime on the CPU,
    which in turn runs only fp32 and int8."""
    if precision not in PRECISION_CHOICES:
        raise DeviceUnavailableError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return "fp16" if device in ("cuda", "mps") else "fp32"
    if precision == "fp16" and device == "cpu":
        raise DeviceUnavailableError(
            "fp16 is not supported on the CPU; use `precision` fp32 or bf16", parameters=("precision",)
        )
    if precision == "int8" and (device != "cpu" or backend != "onnx"):
        raise DeviceUnavailableError(
            f"`precision` int8 runs only on the CPU with the ONNX backend, not with `backend` {backend} on "
            f"`device` {device}; on a GPU use `precision` fp16 (the default there)",
            parameters=("precision", "backend", "device"),
        )
    if backend == "onnx" and precision not in ("fp32", "int8"):
        raise DeviceUnavailableError(
            f"the ONNX backend runs fp32 or int8, not {precision}; use `precision` fp32 or int8, or `backend` torch",
            parameters=("precision", "backend"),
        )
    return precision


def resolve_backend(backend: str, device: str, precision: str) -> tuple[str, str]:
    """(backend, device) for what was asked. `auto` is ONNX Runtime on the CPU when onnxruntime is installed
    (except for bf16, which only torch runs), torch on a GPU. The device is found without importing torch
    when it is the CPU, so an exported model's text query stays light."""
    from retrieval.model.onnx_backend import onnxruntime_available

    if backend not in BACKEND_CHOICES:
        raise DeviceUnavailableError(f"unknown backend '{backend}'; choose one of {', '.join(BACKEND_CHOICES)}")
    cpu = device == "cpu" or (device == "auto" and probe_device() == "cpu")
    device = "cpu" if cpu else resolve_device(device)
    if backend == "auto":
        onnx = device == "cpu" and precision not in ("bf16", "fp16") and onnxruntime_available()
        backend = "onnx" if onnx else "torch"
    if backend == "onnx" and not onnxruntime_available():
        raise DeviceUnavailableError(
            "`backend` onnx needs onnxruntime (pip install onnxruntime); or use `backend` torch",
            parameters=("backend",),
        )
    if backend == "onnx" and device != "cpu":
        raise DeviceUnavailableError(
            f"the ONNX backend runs on the CPU, not on {device}; use `device` cpu, or `backend` torch",
            parameters=("backend", "device"),
        )
    return backend, device
