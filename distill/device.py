"""Choosing the compute device: ``cpu``, ``cuda`` (or ``cuda:N``), or ``auto`` (CUDA when available)."""

from __future__ import annotations

import torch

from distill.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """Map a device setting to a :class:`torch.device`, refusing CUDA where there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError("device", f"must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA was requested but is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise InputError("device", f"must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
    return device
