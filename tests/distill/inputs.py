"""Random inputs for parity tests: student logits, teacher in each form, labels."""

from __future__ import annotations

import torch
from torch import Tensor

SHAPES = [(1, 1), (3, 1), (41, 401), (2, 7, 33), (17,)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def logits(shape: tuple[int, ...], dtype: torch.dtype, seed: int, scale: float = 3.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)


def teacher(shape: tuple[int, ...], dtype: torch.dtype, kind: str, seed: int) -> Tensor:
    raw = logits(shape, torch.float64, seed)
    if kind == "logits":
        return raw.to(dtype)
    if kind == "probs":
        return torch.softmax(raw, dim=-1).to(dtype)
    if kind == "sigmoid_probs":
        return torch.sigmoid(raw).to(dtype)
    return torch.log_softmax(raw, dim=-1).to(dtype)


def labels(shape: tuple[int, ...], seed: int, ignore_every: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    out = torch.randint(0, shape[-1], shape[:-1], generator=generator)
    if ignore_every:
        out.view(-1)[::ignore_every] = -100
    return out
