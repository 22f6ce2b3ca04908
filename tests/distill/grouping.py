"""Computing prepared requests as the batcher would: one ``run_group`` call per group key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill.batching.group import run_group
from distill.result import LossResult
from distill.rows.prepared import Prepared


def run_grouped(requests: Sequence[Prepared]) -> list[LossResult]:
    """Each request's result from a group of all the requests sharing its ``group_key``, in order."""
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(requests):
        groups.setdefault(item.group_key, []).append(index)
    results: list[LossResult | None] = [None] * len(requests)
    for indices in groups.values():
        for index, result in zip(indices, run_group([requests[i] for i in indices]), strict=True):
            results[index] = result
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]
