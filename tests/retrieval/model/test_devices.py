"""Where a model runs: the light probe (no torch) agrees with torch's own answer, and errors name `device`."""

from __future__ import annotations

import pytest
import torch

from retrieval.errors import DeviceUnavailableError
from retrieval.model.devices import cuda_device_count, probe_device, resolve_device, resolve_precision
from tests.fresh import run_python


def test_probe_agrees_with_torch() -> None:
    """`probe_device()` is what `resolve_device("auto")` picks on this machine, and the CUDA driver's count
    of GPUs is torch's when torch has CUDA."""
    assert probe_device() == resolve_device("auto")
    if torch.cuda.is_available():
        assert cuda_device_count() == torch.cuda.device_count()


def test_probe_imports_no_torch() -> None:
    """The probe runs in a fresh interpreter without importing torch."""
    code = "import sys; from retrieval.model.devices import probe_device; probe_device(); print('torch' in sys.modules)"
    result = run_python(code)
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_absent_device_names_the_parameter() -> None:
    """An absent CUDA device and fp16 on the CPU are refused naming the Python parameter, in backticks."""
    with pytest.raises(DeviceUnavailableError) as caught:
        resolve_device("cuda")
    assert str(caught.value) == "`device` cuda asked for, but torch sees no CUDA GPU; use `device` cpu"
    assert caught.value.parameters == ("device",)
    with pytest.raises(DeviceUnavailableError) as caught:
        resolve_precision("fp16", "cpu")
    assert str(caught.value) == "fp16 is not supported on the CPU; use `precision` fp32 or bf16"
    assert caught.value.parameters == ("precision",)
