"""numba kernels for centre-of-pressure and sway measures (one jitted call per block or window).

Every kernel writes into caller-provided arrays and states its formula. `fastmath` stays off
(see nmcore._numba): the results are compared with reference values to 1e-6 and must not move
with reassociation.
"""

from __future__ import annotations

import math

import numpy as np

from nmcore._numba import jit

__all__ = [
    "DETREND_CONSTANT",
    "DETREND_LINEAR",
    "DETREND_NONE",
    "MAX_AP",
    "MAX_ML",
    "MEAN_AP",
    "MEAN_ML",
    "MIN_AP",
    "MIN_ML",
    "N_STEPS",
    "N_SWAY_SUMS",
    "PATH",
    "PATH_AP",
    "PATH_ML",
    "SUM_ABS_AP",
    "SUM_ABS_ML",
    "SUM_AP2",
    "SUM_APML",
    "SUM_CROSS",
    "SUM_ML2",
    "SUM_RD",
    "cop_load_cells_kernel",
    "cop_six_axis_kernel",
    "sway_sums_kernel",
    "welch_segments_kernel",
]

# Slots of the `out` vector filled by sway_sums_kernel (all over mean-removed coordinates).
MEAN_AP = 0
MEAN_ML = 1
SUM_ABS_AP = 2
SUM_ABS_ML = 3
SUM_RD = 4  # sum of sqrt(ap^2 + ml^2)
SUM_AP2 = 5
SUM_ML2 = 6
SUM_APML = 7
MIN_AP = 8
MAX_AP = 9
MIN_ML = 10
MAX_ML = 11
PATH = 12  # sum of |step| over counted steps
PATH_AP = 13
PATH_ML = 14
SUM_CROSS = 15  # sum of |ap[i+1]*ml[i] - ap[i]*ml[i+1]| (twice the swept triangle areas)
N_STEPS = 16  # steps counted (adjacent samples with no excluded frame between them)
N_SWAY_SUMS = 17


@jit
def cop_six_axis_kernel(
    fx: np.ndarray,
    fy: np.ndarray,
    fz: np.ndarray,
    mx: np.ndarray,
    my: np.ndarray,
    dz_m: float,
    min_fz_n: float,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_valid: np.ndarray,
) -> int:
    """x = (-My - dz*Fx)/Fz, y = (Mx - dz*Fy)/Fz (AMTI/Bertec/Kistler, z axis pointing down).

    Frames with Fz <= min_fz_n or any non-finite channel get NaN and valid=False. Returns the
    number of valid frames.
    """
    n_valid = 0
    for i in range(fz.shape[0]):
        f = fz[i]
        ok = (
            f > min_fz_n
            and math.isfinite(f)
            and math.isfinite(fx[i])
            and math.isfinite(fy[i])
            and math.isfinite(mx[i])
            and math.isfinite(my[i])
        )
        if ok:
            out_x[i] = (-my[i] - dz_m * fx[i]) / f
            out_y[i] = (mx[i] - dz_m * fy[i]) / f
            out_valid[i] = True
            n_valid += 1
        else:
            out_x[i] = np.nan
            out_y[i] = np.nan
            out_valid[i] = False
    return n_valid


@jit
def cop_load_cells_kernel(
    forces_n: np.ndarray,
    x_m: np.ndarray,
    y_m: np.ndarray,
    min_fz_n: float,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_valid: np.ndarray,
) -> int:
    """COP as the force-weighted mean of the cell positions: x = sum(f_i x_i) / sum(f_i).

    forces_n: (n_frames, n_cells). Frames whose total <= min_fz_n or with a non-finite cell get
    NaN and valid=False. Returns the number of valid frames.
    """
    n_cells = forces_n.shape[1]
    n_valid = 0
    for i in range(forces_n.shape[0]):
        total = 0.0
        sx = 0.0
        sy = 0.0
        finite = True
        for c in range(n_cells):
            f = forces_n[i, c]
            if not math.isfinite(f):
                finite = False
            total += f
            sx += f * x_m[c]
            sy += f * y_m[c]
        if finite and total > min_fz_n:
            out_x[i] = sx / total
            out_y[i] = sy / total
            out_valid[i] = True
            n_valid += 1
        else:
            out_x[i] = np.nan
            out_y[i] = np.nan
            out_valid[i] = False
    return n_valid


@jit
def sway_sums_kernel(ap: np.ndarray, ml: np.ndarray, step_ok: np.ndarray, out: np.ndarray) -> None:
    """Two passes over one window: the means, then every sum the Prieto time-domain measures
    need, over mean-removed coordinates. step_ok[i] says whether the step from sample i to
    i+1 is a real one (no excluded frame between); steps across gaps are not path.
    """
    n = ap.shape[0]
    s_ap = 0.0
    s_ml = 0.0
    for i in range(n):
        s_ap += ap[i]
        s_ml += ml[i]
    m_ap = s_ap / n
    m_ml = s_ml / n
    abs_ap = 0.0
    abs_ml = 0.0
    rd = 0.0
    ap2 = 0.0
    ml2 = 0.0
    apml = 0.0
    lo_ap = np.inf
    hi_ap = -np.inf
    lo_ml = np.inf
    hi_ml = -np.inf
    path = 0.0
    path_ap = 0.0
    path_ml = 0.0
    cross = 0.0
    n_steps = 0
    prev_a = 0.0
    prev_m = 0.0
    for i in range(n):
        a = ap[i] - m_ap
        m = ml[i] - m_ml
        abs_ap += abs(a)
        abs_ml += abs(m)
        rd += math.sqrt(a * a + m * m)
        ap2 += a * a
        ml2 += m * m
        apml += a * m
        lo_ap = min(lo_ap, a)
        hi_ap = max(hi_ap, a)
        lo_ml = min(lo_ml, m)
        hi_ml = max(hi_ml, m)
        if i > 0 and step_ok[i - 1]:
            da = a - prev_a
            dm = m - prev_m
            path += math.sqrt(da * da + dm * dm)
            path_ap += abs(da)
            path_ml += abs(dm)
            cross += abs(a * prev_m - prev_a * m)
            n_steps += 1
        prev_a = a
        prev_m = m
    out[MEAN_AP] = m_ap
    out[MEAN_ML] = m_ml
    out[SUM_ABS_AP] = abs_ap
    out[SUM_ABS_ML] = abs_ml
    out[SUM_RD] = rd
    out[SUM_AP2] = ap2
    out[SUM_ML2] = ml2
    out[SUM_APML] = apml
    out[MIN_AP] = lo_ap
    out[MAX_AP] = hi_ap
    out[MIN_ML] = lo_ml
    out[MAX_ML] = hi_ml
    out[PATH] = path
    out[PATH_AP] = path_ap
    out[PATH_ML] = path_ml
    out[SUM_CROSS] = cross
    out[N_STEPS] = n_steps


DETREND_NONE = 0
DETREND_CONSTANT = 1
DETREND_LINEAR = 2


@jit
def welch_segments_kernel(
    x: np.ndarray, step: int, detrend: int, window: np.ndarray, out: np.ndarray
) -> None:
    """Fill out[s, :] with segment s of x (start s*step, length window.size), detrended
    (none / constant: minus the mean / linear: minus the least-squares line) and windowed.

    Line fit with a centred time axis t_j = j - (L-1)/2: slope = sum(t x)/sum(t^2), offset =
    mean(x); the same line as an ordinary least-squares fit.
    """
    seg_n = window.shape[0]
    centre = (seg_n - 1) / 2.0
    tt = 0.0
    for j in range(seg_n):
        tt += (j - centre) * (j - centre)
    for s in range(out.shape[0]):
        start = s * step
        mean = 0.0
        slope = 0.0
        if detrend != DETREND_NONE:
            acc = 0.0
            for j in range(seg_n):
                acc += x[start + j]
            mean = acc / seg_n
        if detrend == DETREND_LINEAR:
            acc = 0.0
            for j in range(seg_n):
                acc += (j - centre) * x[start + j]
            slope = acc / tt
        for j in range(seg_n):
            out[s, j] = (x[start + j] - mean - slope * (j - centre)) * window[j]
