"""The one module that imports numba. Kernels import `njit` from here.

Every kernel is `cache=True` (warm starts read compiled code from disk; set NUMBA_CACHE_DIR
for read-only installs) and `nogil=True` (so a kernel in a worker thread does not stall the
event loop). `fastmath` stays off: onset thresholds compare against rest statistics and must
not change with reassociation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["jit", "numba"]


def jit(func: F) -> F:
    """`numba.njit(cache=True, nogil=True)` with the project's defaults."""
    return numba.njit(cache=True, nogil=True)(func)  # type: ignore[return-value]
