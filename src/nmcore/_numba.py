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
from numba import types
from numba.extending import intrinsic

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["ENTRY_FLAGS", "carray", "entry_point", "f64_at", "i64_at", "jit", "numba", "u8_at"]

carray = numba.carray  # type: ignore[attr-defined]


def jit(func: F) -> F:
    """`numba.njit(cache=True, nogil=True)` with the project's defaults."""
    return numba.njit(cache=True, nogil=True)(func)  # type: ignore[return-value]


# numpy's flag bits (`ndarray.flags.num`) of the one array layout the compiled entry points
# are built for: C-contiguous, aligned, writeable
ENTRY_FLAGS = 0x0001 | 0x0100 | 0x0400


def entry_point(kernel: Any, args: tuple[object, ...]) -> Any:
    """The compiled specialisation of `kernel` (a numba dispatcher) for exactly these
    arguments' types, compiled or loaded from the cache now, not per block.

    Calling it skips numba's per-call dispatch (typing every argument and picking the
    specialisation, ~0.3-0.5 us a call) and with it numba's check: a compiled entry point
    reads whatever it gets as its own types, so the caller must pass only arguments of the
    types `args` had (arrays: same dtype and dimensions, and `ENTRY_FLAGS` set)."""
    return kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))


def _pointer_at(item: Any, name: str) -> Any:
    """An intrinsic turning an int64 address into a pointer to `item`, for `carray` in a
    kernel (the address of an array the caller keeps alive, e.g. `arr.ctypes.data`)."""

    def at(typingctx: Any, address: Any) -> Any:
        sig = types.CPointer(item)(types.int64)  # type: ignore[no-untyped-call]

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    at.__name__ = at.__qualname__ = name  # typing errors name the intrinsic
    return intrinsic(at)


# jitted code only: a Python caller gets no pointer
f64_at = _pointer_at(types.float64, "f64_at")
i64_at = _pointer_at(types.int64, "i64_at")
u8_at = _pointer_at(types.uint8, "u8_at")
