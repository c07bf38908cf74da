"""What a user's `--device` names: a torch device this machine has, or a one-line error.

Every command that takes `--device` (the chat, ask, bench, train, pretrain) goes through
`resolve_device`, and so does `load_model`, so a name torch cannot parse, a GPU the
machine lacks, or a GPU index past the last is reported before any loading starts,
rather than as a traceback or as a failure deep inside a loader.
"""

from __future__ import annotations

import torch

from engine.errors import DeviceError

# The device types chat-tui runs on; "auto" is the GPU when there is one, else the CPU.
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device `name` means on this machine; DeviceError naming it otherwise."""
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {name!r} (use {DEVICE_CHOICES})") from None
    if device.type == "cpu":
        return torch.device("cpu")  # "cpu:0" is the same device; one spelling keeps comparisons simple
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {str(name)!r} was asked for, but torch sees no CUDA GPU on this machine")
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"device {str(name)!r} does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {str(name)!r} was asked for, but torch sees no Apple GPU (MPS) on this machine")
        return device
    raise DeviceError(f"device {str(name)!r} is not supported (use {DEVICE_CHOICES})")
