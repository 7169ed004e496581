"""Process-wide settings that only make the run faster."""

from __future__ import annotations

import ctypes
import os


def skip_failing_nvml_probe() -> bool:
    """Undo Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` where no NVIDIA driver is; True if so.

    Importing Lightning sets that variable (an NVML-based ``torch.cuda.is_available()`` does not
    poison forks). Without the driver, a CUDA build of torch then tries to load libnvidia-ml on
    every call, and ``Adam.step`` asks on every step: ~0.1-0.2 ms per optimizer step on a 2-core
    CPU. Without the driver there is no device, so the CUDA runtime's own check cannot poison a fork
    either, and it is cheap.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return False
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
        return True
    return False
