from __future__ import annotations

import numpy as np
import pytest

from nmcore.detect._perturbation_kernels import _solve_spd, knee_fit


def _numpy_knee(
    y: np.ndarray, first: int, last: int, powers: list[int], trend: bool
) -> tuple[int, float]:
    """Reference: an explicit least-squares fit per candidate knee with numpy's lstsq."""
    n = len(y)
    t = np.arange(n, dtype=float)
    best = (-1, np.inf)
    for t0 in range(first, last):
        u = t - t0
        cols = [np.ones(n)]
        if trend:
            cols.append((t - n / 2.0) / n)
        cols.extend(
            (u >= 0).astype(float) if p == 0 else np.where(u > 0, u, 0.0) ** p for p in powers
        )
        x = np.column_stack(cols)
        if np.linalg.cond(x.T @ x) > 1e12:
            continue
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        sse = float(np.sum((y - x @ coef) ** 2))
        if sse < best[1]:
            best = (t0, sse)
    return best


@pytest.mark.parametrize("powers", [[1, 2, 3], [0, 1, 2, 3], [0]])
@pytest.mark.parametrize("trend", [False, True])
def test_knee_fit_matches_numpy_and_py_func(powers: list[int], trend: bool) -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(0, 0.1, 120)
    u = np.clip(np.arange(120) - 70.0, 0, None)
    y += 0.01 * u**2 + 0.02 * np.arange(120) * trend
    want_t0, want_sse = _numpy_knee(y, 1, 110, powers, trend)
    for fn in (knee_fit, knee_fit.py_func):
        out = np.zeros(2)
        fn(y, 1, 110, np.array(powers, dtype=np.int64), trend, out)
        assert int(out[0]) == want_t0
        assert out[1] == pytest.approx(want_sse, rel=1e-8, abs=1e-10)


def test_solve_spd_against_numpy_and_rejects_singular() -> None:
    rng = np.random.default_rng(1)
    m = rng.normal(size=(5, 5))
    a = m @ m.T + 5 * np.eye(5)
    b = rng.normal(size=5)
    for fn in (_solve_spd, _solve_spd.py_func):
        x = np.zeros(5)
        assert fn(a, b, x, np.zeros((5, 5)))
        np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-10)
        singular = np.ones((3, 3))
        assert not fn(singular, np.ones(3), np.zeros(3), np.zeros((3, 3)))
