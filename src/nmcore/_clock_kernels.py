"""Numba kernel of the clock model: the lower-envelope line fit (Moon, Skelly & Towsley 1999).

Called once per closed bin (every `bin_s`, about twice a second), never per sample.

Points are (u, v) with u = device seconds since the fit's anchor and v = host seconds minus
the anchor minus u (so v is the transport delay plus the drift term, milliseconds in size,
which keeps the hull's cross products well conditioned). They sit in a ring buffer of
capacity `cap`, `n` of them from `start`, sorted by u.

The fit is the linear programme of Moon et al.: among lines v = c + d*u lying on or below
every point, maximise the sum of the line's values at the points, i.e. maximise
c + d*mean(u). The optimum is the lower convex hull's edge above mean(u); with the slope
limited to [d_lo, d_hi] (a concave objective in d) the optimum is the clamped slope with the
highest c that still keeps the line below every point.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from nmcore._numba import jit

__all__ = [
    "affine_map",
    "bracket_range",
    "envelope_fit",
    "event_grid",
    "group_minima",
    "local_floor",
    "minima_slope",
    "shrink_slope",
]


@jit
def envelope_fit(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    start: int,
    n: int,
    d_lo: float,
    d_hi: float,
    hull: npt.NDArray[np.int64],
    out: npt.NDArray[np.float64],
) -> int:
    """Fit v = c + d*u under the points; write out[0] = c, out[1] = d, out[2] = mean(u).

    `hull` is a work array (length >= n) that receives the ring indices of the lower hull.
    Returns the number of hull vertices (0 when n == 0, and then `out` is left untouched).
    """
    cap = u.shape[0]
    if n <= 0:
        return 0
    # Andrew's monotone chain, lower half only: keep strictly counter-clockwise turns.
    m = 0
    u_sum = 0.0
    for k in range(n):
        i = (start + k) % cap
        u_sum += u[i]
        while m >= 2:
            a = hull[m - 2]
            b = hull[m - 1]
            cross = (u[b] - u[a]) * (v[i] - v[a]) - (v[b] - v[a]) * (u[i] - u[a])
            if cross > 0.0:
                break
            m -= 1
        hull[m] = i
        m += 1
    u_bar = u_sum / n
    d = 0.0
    for k in range(m - 1):
        a = hull[k]
        b = hull[k + 1]
        if u[a] <= u_bar <= u[b]:
            du = u[b] - u[a]
            if du > 0.0:
                d = (v[b] - v[a]) / du
            break
    d = min(max(d, d_lo), d_hi)
    # Highest line of slope d below every point (attained at the hull edge when unclamped).
    c = np.inf
    for k in range(n):
        i = (start + k) % cap
        c = min(c, v[i] - d * u[i])
    out[0] = c
    out[1] = d
    out[2] = u_bar
    return m


@jit
def minima_slope(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    start: int,
    n: int,
    work: npt.NDArray[np.float64],
) -> float:
    """Slope of a least-squares line through the bin minima, after dropping high outliers.

    Bin minima are order statistics of a stationary delay distribution, so a line through
    all of them has a far steadier slope than the two hull vertices that fix the envelope's
    slope on a short span. Minima more than 3 robust SDs above a first fit (a stalled bin)
    are dropped, then the line is refitted. `work` (length >= n) receives residuals.
    """
    cap = u.shape[0]
    if n < 2:
        return 0.0
    u0 = u[start % cap]
    keep_all = np.inf
    d = 0.0
    for _ in range(2):
        su = 0.0
        sv = 0.0
        m = 0
        for k in range(n):
            i = (start + k) % cap
            if work[k] > keep_all:
                continue
            su += u[i] - u0
            sv += v[i]
            m += 1
        if m < 2:
            return d
        mu = su / m
        mv = sv / m
        suu = 0.0
        suv = 0.0
        for k in range(n):
            i = (start + k) % cap
            if work[k] > keep_all:
                continue
            du = u[i] - u0 - mu
            suu += du * du
            suv += du * (v[i] - mv)
        if suu <= 0.0:
            return d
        d = suv / suu
        for k in range(n):
            i = (start + k) % cap
            work[k] = v[i] - mv - d * (u[i] - u0 - mu)
        med = np.median(work[:n])
        mad = np.median(np.abs(work[:n] - med))
        keep_all = med + 3.0 * 1.4826 * mad
    return d


@jit
def group_minima(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    start: int,
    n: int,
    d: float,
    group_s: float,
    gu: npt.NDArray[np.float64],
    gv: npt.NDArray[np.float64],
) -> int:
    """The lowest point (least v - d*u) of each span of `group_s` in u, in order, written to
    gu/gv from index 0; returns their number. Points sorted by u; groups are floor(u /
    group_s), so a point's group never depends on which other points are in the ring."""
    cap = u.shape[0]
    m = 0
    g_cur = np.nan
    best = np.inf
    for k in range(n):
        i = (start + k) % cap
        g = np.floor(u[i] / group_s)
        key = v[i] - d * u[i]
        if g != g_cur:
            g_cur = g
            gu[m] = u[i]
            gv[m] = v[i]
            best = key
            m += 1
        elif key < best:
            best = key
            gu[m - 1] = u[i]
            gv[m - 1] = v[i]
    return m


@jit
def shrink_slope(
    u: npt.NDArray[np.float64],
    start: int,
    n: int,
    work: npt.NDArray[np.float64],
    d: float,
    prior_sd: float,
) -> float:
    """The slope `d` of `minima_slope` shrunk toward 0 by its own standard error.

    d * prior_sd**2 / (prior_sd**2 + se**2): the posterior mean under a N(0, prior_sd**2)
    prior on the drift, with se from the residuals `minima_slope` left in `work` (the same
    high-outlier cut). Why: with dense packets se is a few ppm and nothing changes; with
    sparse long frames (an H10: one frame per 0.18-0.56 s, most 0.5 s bins holding only a
    phase-locked frame 25-30 ms above the floor) the minima are a sawtooth and the plain
    slope runs to the drift limit (measured: +-300 ppm fitted for -100 after 10 s).
    """
    cap = u.shape[0]
    if n < 3:
        return d
    med = np.median(work[:n])
    mad = np.median(np.abs(work[:n] - med))
    keep_all = med + 3.0 * 1.4826 * mad
    su = 0.0
    m = 0
    u0 = u[start % cap]
    for k in range(n):
        if work[k] <= keep_all:
            su += u[(start + k) % cap] - u0
            m += 1
    if m < 3:
        return d
    mu = su / m
    suu = 0.0
    srr = 0.0
    for k in range(n):
        if work[k] <= keep_all:
            du = u[(start + k) % cap] - u0 - mu
            suu += du * du
            srr += work[k] * work[k]
    if suu <= 0.0:
        return 0.0
    se2 = srr / (m - 2) / suu
    p2 = prior_sd * prior_sd
    return d * p2 / (p2 + se2)


@jit
def local_floor(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    start: int,
    n: int,
    d: float,
    u_lo: float,
    u_hi: float,
) -> float:
    """min(v - d*u) over the points with u_lo <= u < u_hi (inf when there is none): the
    floor just before a suspected step, compared over seconds rather than the whole window
    so that a slope error costs little."""
    cap = u.shape[0]
    best = np.inf
    for k in range(n):
        i = (start + k) % cap
        if u_lo <= u[i] < u_hi:
            best = min(best, v[i] - d * u[i])
    return best


@jit
def _objective(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    wu: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    start: int,
    n: int,
    d: float,
    u_now: float,
    mode: int,
) -> float:
    """At slope d, with up = min(v - d*u) and lo = max(w - d*wu) (NaN lower bounds skipped):
    mode 0 the room up - lo; mode 1 the highest line's value at u_now, up + d*u_now; mode 2
    minus the lowest line's value there, -(lo + d*u_now). All three are concave in d."""
    cap = u.shape[0]
    up = np.inf
    lo = -np.inf
    for k in range(n):
        i = (start + k) % cap
        a = v[i] - d * u[i]
        if a < up:
            up = a
        b = w[i] - d * wu[i]
        if b > lo:  # False for NaN
            lo = b
    if mode == 0:
        return up - lo
    if mode == 1:
        return up + d * u_now
    return -(lo + d * u_now)


@jit
def _golden_max(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    wu: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    start: int,
    n: int,
    a: float,
    b: float,
    u_now: float,
    mode: int,
) -> float:
    """Golden-section search for the maximiser of a concave `_objective` on [a, b]."""
    g = 0.6180339887498949  # (sqrt(5) - 1) / 2
    x1 = b - g * (b - a)
    x2 = a + g * (b - a)
    f1 = _objective(u, v, wu, w, start, n, x1, u_now, mode)
    f2 = _objective(u, v, wu, w, start, n, x2, u_now, mode)
    # 64 steps shrink the interval by 0.618**64 ~ 4e-14: below 1e-16 for a 600 ppm range.
    for _ in range(64):
        if f1 < f2:
            a = x1
            x1 = x2
            f1 = f2
            x2 = a + g * (b - a)
            f2 = _objective(u, v, wu, w, start, n, x2, u_now, mode)
        else:
            b = x2
            x2 = x1
            f2 = f1
            x1 = b - g * (b - a)
            f1 = _objective(u, v, wu, w, start, n, x1, u_now, mode)
    return 0.5 * (a + b)


@jit
def _room_edge(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    wu: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    start: int,
    n: int,
    inside: float,
    outside: float,
) -> float:
    """Bisection for the edge of {d : room(d) >= 0} between a slope inside it and one out."""
    if _objective(u, v, wu, w, start, n, outside, 0.0, 0) >= 0.0:
        return outside
    for _ in range(64):
        mid = 0.5 * (inside + outside)
        if _objective(u, v, wu, w, start, n, mid, 0.0, 0) >= 0.0:
            inside = mid
        else:
            outside = mid
    return inside


@jit
def bracket_range(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    wu: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    start: int,
    n: int,
    d_lo: float,
    d_hi: float,
    u_now: float,
    out: npt.NDArray[np.float64],
) -> bool:
    """Every line v = c + d*u, d in [d_lo, d_hi], that lies on or below the upper bounds
    (u, v) and on or above the lower bounds (wu, w; NaN: none in that slot): the range of
    their values at u_now and of their slopes.

    out[0], out[1]: lowest and highest value at u_now; out[2], out[3]: lowest and highest
    slope; out[4]: the slope with the most room between the two sides. The set of such
    (c, d) is convex, so each extreme is a one-dimensional concave search: the room
    min(v - d*u) - max(w - d*wu) is concave in d, its non-negative part is an interval of
    slopes, and over it the highest line's value at u_now is concave and the lowest's
    convex. Returns False (out untouched) without a lower bound or when no line fits.
    """
    cap = u.shape[0]
    any_lower = False
    for k in range(n):
        x = w[(start + k) % cap]
        if x == x:
            any_lower = True
            break
    if n <= 0 or not any_lower:
        return False
    d_best = _golden_max(u, v, wu, w, start, n, d_lo, d_hi, 0.0, 0)
    if _objective(u, v, wu, w, start, n, d_best, 0.0, 0) < 0.0:
        return False
    d1 = _room_edge(u, v, wu, w, start, n, d_best, d_lo)
    d2 = _room_edge(u, v, wu, w, start, n, d_best, d_hi)
    d_top = _golden_max(u, v, wu, w, start, n, d1, d2, u_now, 1)
    d_bot = _golden_max(u, v, wu, w, start, n, d1, d2, u_now, 2)
    out[0] = -_objective(u, v, wu, w, start, n, d_bot, u_now, 2)
    out[1] = _objective(u, v, wu, w, start, n, d_top, u_now, 1)
    out[2] = d1
    out[3] = d2
    out[4] = d_best
    return True


@jit
def affine_map(
    x: npt.NDArray[np.float64],
    x0: float,
    slope: float,
    base: float,
    out: npt.NDArray[np.float64],
) -> None:
    """out[i] = base + slope * (x[i] - x0): device seconds to host seconds for one block.

    Subtracting the anchor first keeps the product small, so the result is exact to float64
    rounding of the host time itself.
    """
    for i in range(x.shape[0]):
        out[i] = base + slope * (x[i] - x0)


@jit
def grid_map(
    first_x: float,
    step: float,
    x0: float,
    slope: float,
    base: float,
    out: npt.NDArray[np.float64],
) -> None:
    """out[k] = base + slope * ((k * step + first_x) - x0): `affine_map` of a block's device
    times x[k] = k * step + first_x (the same operations in the same order, so the same
    bits) without building x."""
    for k in range(out.shape[0]):
        out[k] = base + slope * ((k * step + first_x) - x0)


@jit
def event_grid(
    a: npt.NDArray[np.float64],
    start: int,
    n: int,
    step_s: float,
    k_lo: int,
    k_hi: int,
    frac_min: float,
    slide_max: float,
    work: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
) -> bool:
    """The delivery grid of a link from its batch arrival times (host seconds, sorted).

    For each interval I = k * step_s, k from k_hi down to k_lo, the residues a mod I are
    tested for one cluster: the best window of width I / 4 (circular) must hold at least
    `frac_min` of them. The largest such I wins: a divisor of the true interval clusters
    as well but would make lower bounds that are too high, a multiple spreads over several
    residues (a multiple that clusters by chance, a link using only every second event,
    gives looser but still true bounds). out[0] = I, out[1] = the lowest residue of the
    cluster (the event phase plus the fastest host path), both relative to a[start].
    The radio's clock drifts against the host's: the cluster's lower edge slides, by at
    most `slide_max` seconds per second; out[0] is then the interval in host seconds and
    out[1] the edge at a[start] (the lowest line under the residues, Moon et al. again).
    `work` (length >= n) is scratch. False (out untouched) when no interval clusters.
    """
    cap = a.shape[0]
    if n < 8 or k_hi < k_lo:
        return False
    a0 = a[start % cap]
    need = frac_min * n
    for k in range(k_hi, k_lo - 1, -1):
        iv = k * step_s
        for j in range(n):
            r = (a[(start + j) % cap] - a0) % iv
            work[j] = r
        res = np.sort(work[:n])
        width = 0.25 * iv
        best = 0
        best_i = 0
        hi = 0
        for i in range(n):
            # residues i..hi-1 (wrapping once) within [res[i], res[i] + width]
            if hi < i + 1:
                hi = i + 1
            while hi < i + n:
                x = res[hi % n] + (iv if hi >= n else 0.0)
                if x - res[i] > width:
                    break
                hi += 1
            if hi - i > best:
                best = hi - i
                best_i = i
        if best >= need:
            # The events' clock (the radio's) drifts against the host's: fit the slow
            # slide of the cluster's lower edge (lowest line under the residues).
            # Only the cluster's members: an arrival a host stall pushed to just before
            # the next event would otherwise pull the edge early, and the bounds with it.
            p = res[best_i]
            tu = np.empty(n)
            tv = np.empty(n)
            m = 0
            for j in range(n):
                i = (start + j) % cap
                r = (a[i] - a0 - p) % iv
                if r > iv - 1e-9:  # the edge itself, rounded to just below a whole interval
                    r -= iv
                if r <= width:
                    tu[m] = a[i] - a0
                    tv[m] = r
                    m += 1
            hull = np.empty(m, dtype=np.int64)
            fit = np.empty(3)
            envelope_fit(tu, tv, 0, m, -slide_max, slide_max, hull, fit)
            slide = fit[1]
            out[0] = iv * (1.0 + slide)
            out[1] = p + fit[0]
            return True
    return False


# -- the per-packet observation fast path ----------------------------------------------------
#
# `ClockModel` keeps the scalars its per-packet path touches in one float64 state array
# (integers and flags as exact floats), laid out by these slots; the rest of its state stays
# in Python. The first group changes with every packet, the second is set once (tolerances
# and the model's constants, kept here so a cached kernel never holds stale ones).
S_N = 0  # accepted observations since the fit began
S_X0 = 1
S_Y0 = 2
S_BASE = 3
S_SLOPE = 4
S_D = 5
S_FITTED = 6
S_U_LAST = 7
S_RUN_KIND = 8
S_LIVE_END = 9
S_LIVE_KEY = 10
S_LIVE_U = 11
S_LIVE_V = 12
S_LW_KEY = 13
S_LW_U = 14
S_LW_W = 15
S_FLOOR_U = 16
S_FLOOR_GAP = 17
S_FLOOR_HIGH = 18
S_LAST_ARRIVAL = 19
S_ENV_SHIFT = 20
S_JIT_I = 21
S_EV_FIRST = 22
S_EV_PREV = 23
S_EV_XMIN = 24
S_EV_XMAX = 25
S_MULTI = 26
S_GRID_LOW = 27
S_GRID_IV = 28
S_GRID_P = 29
S_GA_START = 30
S_GA_N = 31
S_GL_END = 32
S_GL_UKEY = 33
S_GL_UU = 34
S_GL_UV = 35
S_GL_LKEY = 36
S_GL_LU = 37
S_GL_LW = 38
S_GR_START = 39
S_GR_N = 40
S_BATCH_TOL = 41
S_STALL_TOL = 42
S_BACK_TOL = 43
S_JUMP_TOL = 44
S_WINDOW = 45
S_BIN = 46
S_MULTI_GAIN = 47
S_MULTI_MIN = 48
S_GRID_MARGIN = 49
S_LEN = 50

# `observe_block` results besides the index of an observation it left to Python
OBSERVED = -1  # every observation done, `out` mapped
NO_FIT = -2  # every observation done, but the model has no data to map with


@jit
def _grid_bound(s: npt.NDArray[np.float64], ga: npt.NDArray[np.float64], arrival: float) -> float:
    """`ClockModel._grid_bound` (with `_grid_push`) on the state array."""
    cap = ga.shape[0]
    ga_start = int(s[S_GA_START])
    ga_n = int(s[S_GA_N])
    if ga_n == cap:
        ga_start = (ga_start + 1) % cap
        ga_n -= 1
    ga[(ga_start + ga_n) % cap] = arrival
    s[S_GA_START] = ga_start
    s[S_GA_N] = ga_n + 1
    iv = s[S_GRID_IV]
    if iv != iv or s[S_MULTI] >= s[S_MULTI_MIN]:
        return np.nan
    p = s[S_GRID_P]
    k = math.floor((arrival - p) / iv)
    event = p + k * iv
    if arrival - event > 0.25 * iv:
        return np.nan
    return float(event - iv - s[S_GRID_MARGIN])


@jit
def _grid_add(
    s: npt.NDArray[np.float64], gr: npt.NDArray[np.float64], u: float, up_y: float, low_y: float
) -> None:
    """`ClockModel._grid_add` on the state array;
    gr rows: the grid bins' upper u, upper v, lower u, lower w."""
    if up_y == np.inf and low_y != low_y:
        return
    bin_s = s[S_BIN]
    gl_end = s[S_GL_END]
    if u >= gl_end:
        if gl_end != -np.inf:
            cap = gr.shape[1]
            start = int(s[S_GR_START])
            n = int(s[S_GR_N])
            if n == cap - 1:
                start = (start + 1) % cap
                n -= 1
            j = (start + n) % cap
            gr[0, j] = s[S_GL_UU]
            gr[1, j] = s[S_GL_UV]
            gr[2, j] = s[S_GL_LU]
            gr[3, j] = s[S_GL_LW]
            n += 1
            window_s = s[S_WINDOW]
            while n > 1:
                a = gr[0, start]
                b = gr[2, start]
                if (b if b > a else a) >= u - window_s:
                    break
                start = (start + 1) % cap
                n -= 1
            s[S_GR_START] = start
            s[S_GR_N] = n
        s[S_GL_UKEY] = np.inf
        s[S_GL_UU] = 0.0
        s[S_GL_UV] = np.inf
        s[S_GL_LKEY] = -np.inf
        s[S_GL_LU] = 0.0
        s[S_GL_LW] = np.nan
        s[S_GL_END] = (math.floor(u / bin_s) + 1.0) * bin_s
    elif u < gl_end - bin_s:
        return
    d = s[S_D]
    y0 = s[S_Y0]
    v = up_y - y0 - u
    if v - d * u < s[S_GL_UKEY]:
        s[S_GL_UKEY] = v - d * u
        s[S_GL_UU] = u
        s[S_GL_UV] = v
    if low_y == low_y:
        w = low_y - y0 - u
        if w - d * u > s[S_GL_LKEY]:
            s[S_GL_LKEY] = w - d * u
            s[S_GL_LU] = u
            s[S_GL_LW] = w


@jit
def observe_block(
    s: npt.NDArray[np.float64],
    gr: npt.NDArray[np.float64],
    ga: npt.NDArray[np.float64],
    jitter: npt.NDArray[np.float64],
    first_x: float,
    step: float,
    k_start: int,
    k_step: int,
    k_last: int,
    arrival: float,
    j0: int,
    out: npt.NDArray[np.float64],
) -> int:
    """A block's packet observations, then its host times, in one call.

    The packets end at device times x_j = k_j * step + first_x, k_j running over
    range(k_start, k_last, k_step) and then k_last; all arrived at `arrival`. From
    observation `j0` on, each is `ClockModel.observe(x_j, arrival)` (the same operations
    in the same order) as long as it is the steady case: the model has a fit, no suspected
    discontinuity is open, the packet is neither a stall nor out of order, and it falls in
    the live bin. The first one that is not is left untouched and its index returned: the
    caller runs it through the Python model (which owns fits, bins and anomalies) and calls
    again from the next. When all are done, `out` gets `grid_map(first_x, step, ...)` under
    the fit and OBSERVED is returned (NO_FIT, `out` untouched, if the model has no data).
    """
    n_mid = (k_last - k_start + k_step - 1) // k_step if k_last > k_start else 0
    m = n_mid + 1
    stall_tol = s[S_STALL_TOL]
    back_tol = s[S_BACK_TOL]
    jump_tol = s[S_JUMP_TOL]
    bin_s = s[S_BIN]
    for j in range(j0, m):
        k = k_start + j * k_step if j < n_mid else k_last
        x = k * step + first_x
        if s[S_N] == 0.0 or s[S_RUN_KIND] != 0.0:
            return j
        u = x - s[S_X0]
        r = arrival - (s[S_BASE] + s[S_SLOPE] * u)
        if (
            r > stall_tol
            or u < s[S_U_LAST] - back_tol
            or (r < -jump_tol and s[S_FITTED] != 0.0)
            or u >= s[S_LIVE_END]
        ):
            return j
        # delivery batches (ClockModel._observe)
        if arrival > s[S_EV_FIRST] + s[S_BATCH_TOL]:
            gap = x - s[S_EV_XMAX]
            if 0.0 < gap < np.inf:
                many = 1.0 if s[S_EV_XMAX] - s[S_EV_XMIN] >= 0.5 * gap else 0.0
                s[S_MULTI] += (many - s[S_MULTI]) * s[S_MULTI_GAIN]
            s[S_EV_PREV] = s[S_EV_FIRST]
            s[S_EV_FIRST] = arrival
            s[S_EV_XMIN] = x
            s[S_EV_XMAX] = x
            s[S_GRID_LOW] = _grid_bound(s, ga, arrival)
        else:
            if x < s[S_EV_XMIN]:
                s[S_EV_XMIN] = x
            if x > s[S_EV_XMAX]:
                s[S_EV_XMAX] = x
        lower_y = s[S_EV_PREV] if s[S_EV_PREV] != -np.inf else np.nan
        grid_y = s[S_GRID_LOW]
        # ClockModel._accept, the live bin's case
        s[S_N] += 1.0
        floor_u = s[S_FLOOR_U]
        if not u <= floor_u:
            gap = u - floor_u
            held = s[S_FLOOR_GAP]
            if gap >= 0.0:  # _peak_hold
                f = 1.0 - gap / s[S_WINDOW]
                held *= f if f > 0.0 else 0.0
                if s[S_FLOOR_HIGH] != 0.0 and not held > gap:
                    held = gap
            s[S_FLOOR_GAP] = held
            s[S_FLOOR_HIGH] = 0.0
            s[S_FLOOR_U] = u
        s[S_LAST_ARRIVAL] = arrival
        if u > s[S_U_LAST]:
            s[S_U_LAST] = u
        live_end = s[S_LIVE_END]
        y0 = s[S_Y0]
        key = r + s[S_BASE]
        if key < s[S_LIVE_KEY] and u >= live_end - bin_s:
            s[S_LIVE_KEY] = key
            s[S_LIVE_U] = u
            s[S_LIVE_V] = arrival - y0 - u
        if lower_y == lower_y and live_end - bin_s <= u < live_end:  # _lower_point
            w = lower_y - y0 - u
            lkey = w - s[S_D] * u
            if lkey > s[S_LW_KEY]:
                s[S_LW_KEY] = lkey
                s[S_LW_U] = u
                s[S_LW_W] = w
        _grid_add(s, gr, u, arrival, grid_y)
        if r < 0.0:
            s[S_BASE] += r
            r = 0.0
        i = int(s[S_JIT_I])
        jitter[i] = r - s[S_ENV_SHIFT]
        s[S_JIT_I] = (i + 1) % jitter.shape[0]
    if s[S_N] == 0.0:
        return NO_FIT
    grid_map(first_x, step, s[S_X0], s[S_SLOPE], s[S_BASE], out)
    return OBSERVED
