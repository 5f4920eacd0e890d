"""Numba kernels for perturbation onset refinement."""

from __future__ import annotations

import numpy as np

from nmcore._numba import jit


@jit
def _solve_spd(a: np.ndarray, b: np.ndarray, x: np.ndarray, work: np.ndarray) -> bool:
    """Solve a x = b for a small symmetric positive-definite `a` by Cholesky, in plain loops
    (np.linalg inside numba needs scipy's LAPACK, which the daemon does not depend on).
    Returns False when `a` is numerically singular (a pivot below 1e-12 of the diagonal)."""
    n = a.shape[0]
    scale = 0.0
    for i in range(n):
        scale = max(scale, abs(a[i, i]))
    for i in range(n):
        for j in range(i + 1):
            acc = a[i, j]
            for k in range(j):
                acc -= work[i, k] * work[j, k]
            if i == j:
                if acc <= 1e-12 * scale:
                    return False
                work[i, i] = np.sqrt(acc)
            else:
                work[i, j] = acc / work[j, j]
    for i in range(n):  # forward: L y = b
        acc = b[i]
        for k in range(i):
            acc -= work[i, k] * x[k]
        x[i] = acc / work[i, i]
    for i in range(n - 1, -1, -1):  # back: L^T x = y
        acc = x[i]
        for k in range(i + 1, n):
            acc -= work[k, i] * x[k]
        x[i] = acc / work[i, i]
    return True


@jit
def knee_fit(
    y: np.ndarray, first: int, last: int, powers: np.ndarray, trend: bool, out: np.ndarray
) -> None:
    """Least-squares knee: for every integer t0 in [first, last) fit
    y[t] = a [+ c t] + sum_k b_k h_k(t - t0), with h_k(u) = u**powers[k] for u > 0 else 0,
    and power 0 meaning a step (1 for u >= 0); `trend` adds the sloping baseline c t (a
    drifting signal such as body sway). Writes the best t0 and its residual sum of squares
    into out[0], out[1]. Normal equations per candidate: O(n * p^2) each.
    """
    n = y.shape[0]
    base = 2 if trend else 1
    p = powers.shape[0] + base
    xtx = np.zeros((p, p))
    xty = np.zeros(p)
    row = np.zeros(p)
    coef = np.zeros(p)
    work = np.zeros((p, p))
    syy = 0.0
    for i in range(n):
        syy += y[i] * y[i]
    best_t0 = -1.0
    best_sse = np.inf
    for t0 in range(first, last):
        xtx[:, :] = 0.0
        xty[:] = 0.0
        for i in range(n):
            u = float(i - t0)
            row[0] = 1.0
            if trend:
                row[1] = (i - n / 2.0) / n  # centred and scaled: keeps the system conditioned
            for k in range(p - base):
                pw = powers[k]
                if pw == 0:
                    row[k + base] = 1.0 if u >= 0.0 else 0.0
                else:
                    row[k + base] = u**pw if u > 0.0 else 0.0
            for a in range(p):
                xty[a] += row[a] * y[i]
                for b in range(a, p):
                    xtx[a, b] += row[a] * row[b]
        for a in range(p):
            for b in range(a):
                xtx[a, b] = xtx[b, a]
        # a candidate whose hinge columns are (nearly) empty cannot be solved: skip it
        if not _solve_spd(xtx, xty, coef, work):
            continue
        sse = syy
        for a in range(p):
            sse -= coef[a] * xty[a]
        if sse < best_sse:
            best_sse = sse
            best_t0 = t0
    out[0] = best_t0
    out[1] = best_sse


@jit
def rising_edges_column(
    x: np.ndarray, col: int, threshold: float, previous: float, out: np.ndarray
) -> int:
    """Rows i of x[:, col] at or above `threshold` whose previous sample (`previous` for
    row 0) was below it, written to `out`; returns how many. NaN compares false both ways,
    so a gap is never an edge and never arms one. One call per block, no column copy."""
    n = 0
    prev = previous
    for i in range(x.shape[0]):
        v = x[i, col]
        if v >= threshold and prev < threshold:
            out[n] = i
            n += 1
        prev = v
    return n
