"""Searches over variants of one profile: a setting changed, the largest value that still fits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from orchestrator.profiles.loader import ResolvedProfile


def with_engine(resolved: ResolvedProfile, **changes: Any) -> ResolvedProfile:
    """``resolved`` with some engine settings changed."""
    engine = resolved.profile.engine.model_copy(update=changes)
    profile = resolved.profile.model_copy(update={"engine": engine})
    return replace(resolved, profile=profile)


def largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest ``n`` in ``[low, high]`` with ``ok(n)``, for ``ok`` true up to a point."""
    if high < low or not ok(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low


def smallest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest ``n`` in ``[low, high]`` with ``ok(n)``, for ``ok`` true from a point on."""
    if high < low or not ok(high):
        return None
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    return low
